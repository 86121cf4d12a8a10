"""Procedural scenes and defects for the embedded synthetic dataset (see `padim_utils.datasets.synthetic`).

Two scene renderers (a woven carpet texture and a bottle seen from above) and,
for each, a defect-region sampler returning the defect's target appearance and
its blend weight. Everything is numpy on float images in [0, 1], (H, W, 3).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

ALPHA_THRESHOLD = 0.15  # blend weight from which a pixel belongs to the defect mask
# area of one defect region, as a fraction of the image (log-uniform)
AREA_RANGE = (0.002, 0.05)

# --------------------------------------------------------------------------- #
# small numeric helpers
# --------------------------------------------------------------------------- #
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    return x + 0.5, y + 0.5


@functools.lru_cache(maxsize=64)
def _gauss_filter(n: int, sigma_y: float, sigma_x: float) -> np.ndarray:
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    return np.exp(-2.0 * np.pi**2 * ((sigma_y * fy) ** 2 + (sigma_x * fx) ** 2))


def _noise(rng: np.random.Generator, n: int, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    """Gaussian-filtered white noise (periodic, via FFT), normalised to unit std."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    white = rng.standard_normal((n, n))
    filt = _gauss_filter(n, float(sigma_y), float(sigma_x))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(n, n))
    std = out.std()
    return out / std if std > 0 else out


def _noise1d(rng: np.random.Generator, k: int, sigma: float) -> np.ndarray:
    white = rng.standard_normal(k)
    f = np.fft.rfftfreq(k)
    out = np.fft.irfft(np.fft.rfft(white) * np.exp(-2.0 * np.pi**2 * (sigma * f) ** 2), n=k)
    return out / (out.std() or 1.0)


def _periodic_lookup(table: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Sample a periodic 1-D table at angles ``theta`` (radians)."""
    k = table.shape[0]
    pos = (theta / (2 * np.pi)) % 1.0 * k
    i0 = np.floor(pos).astype(np.int64) % k
    t = pos - np.floor(pos)
    return table[i0] * (1 - t) + table[(i0 + 1) % k] * t


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def quantize(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (rounded, clipped).

    >>> quantize(np.array([-0.1, 0.5, 1.2]))
    array([  0, 128, 255], dtype=uint8)
    """
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blob_field(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    a: float,
    b: float,
    angle: float,
    rng: np.random.Generator,
    roughness: float = 0.15,
) -> np.ndarray:
    """Approximate signed distance (px, negative inside) to an irregular ellipse."""
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    theta = np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k in range(2, 6):
        wobble += rng.uniform(0, roughness / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rr = np.sqrt(u * u + v * v) / np.maximum(wobble, 0.3)
    return (rr - 1.0) * np.sqrt(a * b)


def _blob_axes(rng: np.random.Generator, area: float, max_aspect: float = 2.2) -> tuple[float, float]:
    q = rng.uniform(1.0, max_aspect)
    a = np.sqrt(area * q / np.pi)
    return float(a), float(area / (np.pi * a))


def _curve_points(
    rng: np.random.Generator, start: tuple[float, float], heading: float, length: float
) -> np.ndarray:
    """Densely sampled smooth random curve (spacing 0.3 px)."""
    step = 0.3
    k = max(int(length / step), 2)
    t = np.arange(k) * step
    bend = rng.uniform(-1.5, 1.5) / max(length, 1.0)  # total turn up to ~1.5 rad
    wav_amp = rng.uniform(0.0, 0.35)
    wav_f = rng.uniform(0.5, 2.0) * 2 * np.pi / max(length, 1.0)
    head = heading + bend * t + wav_amp * np.sin(wav_f * t + rng.uniform(0, 2 * np.pi))
    px = start[0] + np.cumsum(np.cos(head) * step)
    py = start[1] + np.cumsum(np.sin(head) * step)
    return np.stack([px, py], axis=1)


def _curve_distance(n: int, pts: np.ndarray, reach: float) -> np.ndarray:
    """Distance (px) of every pixel centre to the curve; ``inf`` farther than ``reach``."""
    dist = np.full((n, n), np.inf)
    x0 = int(max(np.floor(pts[:, 0].min() - reach), 0))
    x1 = int(min(np.ceil(pts[:, 0].max() + reach) + 1, n))
    y0 = int(max(np.floor(pts[:, 1].min() - reach), 0))
    y1 = int(min(np.ceil(pts[:, 1].max() + reach) + 1, n))
    if x1 <= x0 or y1 <= y0:
        return dist
    yy, xx = np.mgrid[y0:y1, x0:x1]
    q = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    d, _ = cKDTree(pts).query(q, distance_upper_bound=reach + 1.0)
    dist[y0:y1, x0:x1] = d.reshape(y1 - y0, x1 - x0)
    return dist


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)


def _hue_rotate(rgb: np.ndarray, angle: float, chroma_gain: float) -> np.ndarray:
    """Rotate hue in YIQ space at constant luma Y (and scale chroma)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c * chroma_gain, -s * chroma_gain], [0, s * chroma_gain, c * chroma_gain]])
    m = _YIQ_INV @ rot @ _YIQ
    return rgb @ m.T


# --------------------------------------------------------------------------- #
# scenes
# --------------------------------------------------------------------------- #
@dataclass
class Scene:
    """Clean scene (before lighting/noise) plus what the defects need to know."""

    base: np.ndarray  # (n, n, 3) float, albedo-ish, before global lighting
    n: int
    x: np.ndarray
    y: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Post:
    """Pixel-wise finishing applied identically to the clean and the defective scene."""

    gain: np.ndarray  # (3,)
    illum: np.ndarray  # (n, n, 1)
    noise: np.ndarray  # (n, n, 3)

    def __call__(self, base: np.ndarray) -> np.ndarray:
        return base * self.gain * self.illum + self.noise


def make_post(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> Post:
    """One image's lighting: a global and per-channel gain, an illumination ramp, sensor noise."""
    gain = rng.uniform(0.88, 1.12) * rng.normal(1.0, 0.02, size=3)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((x - n / 2) * np.cos(phi) + (y - n / 2) * np.sin(phi)) / (n / 2)
    illum = 1.0 + rng.uniform(0.0, 0.05) * ramp
    noise = rng.normal(0.0, 0.01, size=(n, n, 3))
    return Post(gain=gain, illum=illum[..., None], noise=noise)


def _blend(base: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``target`` into ``base`` where ``alpha >= ALPHA_THRESHOLD``; return (new base, support)."""
    alpha = np.clip(alpha, 0.0, 1.0)
    support = alpha >= ALPHA_THRESHOLD
    a = np.where(support, alpha, 0.0)[..., None]
    return base * (1.0 - a) + target * a, support


# ---------------------------- carpet_syn ---------------------------------- #
_CARPET_WARP = np.array([0.63, 0.56, 0.47])
_CARPET_WEFT = np.array([0.59, 0.53, 0.46])


def render_carpet(rng: np.random.Generator, n: int) -> Scene:
    """A clean ``n x n`` carpet_syn scene (basket weave, per-image phase, rotation and dye lot)."""
    x, y = _grid(n)
    p = max(5.0, n / 28.0) * rng.uniform(0.95, 1.05)  # weave cell, px
    th = np.deg2rad(rng.uniform(-3.0, 3.0))
    ox, oy = rng.uniform(0, 2 * p, size=2)
    warp_u = 0.12 * _noise(rng, n, n / 6)
    warp_v = 0.12 * _noise(rng, n, n / 6)
    u = (x * np.cos(th) + y * np.sin(th) + ox) / p + warp_u
    v = (-x * np.sin(th) + y * np.cos(th) + oy) / p + warp_v
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    ii, jj = i.astype(np.int64), j.astype(np.int64)
    top_h = (ii + jj) % 2 == 0
    row_gain = 1.0 + 0.06 * rng.standard_normal(512)
    col_gain = 1.0 + 0.06 * rng.standard_normal(512)
    prof_h = np.sin(np.pi * fv) ** 0.6 * (0.72 + 0.28 * np.sin(np.pi * fu)) * row_gain[jj % 512]
    prof_v = np.sin(np.pi * fu) ** 0.6 * (0.72 + 0.28 * np.sin(np.pi * fv)) * col_gain[ii % 512]
    val = 0.3 + 0.7 * np.where(top_h, prof_h, prof_v)
    fib_len = max(1.5, 0.6 * p)
    fib_h = _noise(rng, n, 0.5, fib_len)  # streaks along x (horizontal threads)
    fib_v = _noise(rng, n, fib_len, 0.5)
    val = val * (1.0 + 0.07 * np.where(top_h, fib_h, fib_v))
    blotch = 1.0 + 0.04 * _noise(rng, n, n / 10)
    # per-image dye lot: small hue rotation and saturation change of both yarns
    hue, sat = np.deg2rad(rng.normal(0.0, 12.0)), rng.uniform(0.75, 1.3)
    warp_c, weft_c = _hue_rotate(np.stack([_CARPET_WARP, _CARPET_WEFT]), hue, sat)
    tint = rng.normal(1.0, 0.015, size=3)
    colour = np.where(top_h[..., None], warp_c, weft_c) * tint
    base = val[..., None] * colour * blotch[..., None]
    return Scene(base=base, n=n, x=x, y=y, extra={"p": p, "colour": warp_c * tint})


def carpet_region(rng: np.random.Generator, scene: Scene, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One defect region of type ``kind`` blended into a carpet scene: (new base, support mask)."""
    n, x, y, base = scene.n, scene.x, scene.y, scene.base
    margin = 0.08 * n
    cx, cy = rng.uniform(margin, n - margin, size=2)
    if kind == "thread":
        width = max(0.8, rng.uniform(1.0, 1.8) * n / 256)
        length = rng.uniform(0.15, 0.45) * n
        pts = _curve_points(rng, (cx, cy), rng.uniform(0, 2 * np.pi), length)
        d = _curve_distance(n, pts, width + 2.0)
        alpha = np.clip(width + 0.5 - d, 0.0, 1.0)
        across = np.sqrt(np.clip(1.0 - (d / (width + 0.5)) ** 2, 0.0, 1.0))
        yarn = scene.extra["colour"] * rng.uniform(0.9, 1.15) * rng.normal(1.0, 0.04, size=3)
        shade = (0.65 + 0.35 * across) * (1.0 + 0.06 * _noise(rng, n, 0.7))
        return _blend(base, shade[..., None] * yarn, alpha)

    area = _log_uniform(rng, *AREA_RANGE) * n * n
    if kind == "hole":
        a, b = _blob_axes(rng, area * 0.8, 1.8)
        d = _blob_field(x, y, cx, cy, a, b, rng.uniform(0, np.pi), rng, roughness=0.25)
        rim_w = max(1.5, 0.18 * np.sqrt(a * b))
        mean = base.reshape(-1, 3).mean(0)
        depth = _smoothstep(-d / max(1.0, 0.6 * np.sqrt(a * b)))
        under = mean * (0.72 - 0.22 * depth)[..., None] * (1.0 + 0.08 * _noise(rng, n, 1.2))[..., None]
        fray = base * (1.12 + 0.1 * _noise(rng, n, 0.6))[..., None]
        fuzz = 0.5 + 0.5 * _noise(rng, n, 0.8)
        rim_alpha = np.where(d >= 0, (1.0 - d / rim_w) + 0.3 * fuzz, 0.0)
        target = np.where((d < 0)[..., None], under, fray)
        alpha = np.where(d < 0, 1.0, np.clip(rim_alpha, 0.0, 1.0))
        return _blend(base, target, alpha)
    if kind == "stain":
        a, b = _blob_axes(rng, area)
        d = _blob_field(x, y, cx, cy, a, b, rng.uniform(0, np.pi), rng, roughness=0.3)
        soft = max(1.5, rng.uniform(2.0, 5.0) * n / 256)
        opacity = rng.uniform(0.55, 0.9)
        mottle = 1.0 + 0.25 * _noise(rng, n, max(1.0, 3.0 * n / 256))
        ring = 0.6 * np.exp(-(((d + soft) / soft) ** 2))  # drying ring: denser near the edge
        alpha = opacity * (_smoothstep(0.5 - d / soft) * mottle + ring)
        tints = [(0.86, 0.78, 0.62), (0.8, 0.86, 0.74), (0.8, 0.8, 0.84), (0.92, 0.74, 0.7)]
        tint = np.array(tints[rng.integers(len(tints))]) * rng.uniform(0.97, 1.05)
        return _blend(base, base * tint, alpha)
    if kind == "color":
        a, b = _blob_axes(rng, area)
        d = _blob_field(x, y, cx, cy, a, b, rng.uniform(0, np.pi), rng, roughness=0.2)
        alpha = _smoothstep(0.5 - d / 1.5)
        angle = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(20.0, 45.0))
        target = np.clip(_hue_rotate(base, angle, rng.uniform(1.0, 1.3)), 0.0, 1.0)
        return _blend(base, target, alpha)
    raise AssertionError(kind)


# ---------------------------- bottle_syn ---------------------------------- #
# radial luminance profile of the bottle (r / R -> value), jittered per image
_BOTTLE_R = np.array([0.00, 0.30, 0.46, 0.50, 0.54, 0.60, 0.66, 0.72, 0.79, 0.86, 0.92, 0.97, 1.00])
_BOTTLE_V = np.array([0.16, 0.11, 0.12, 0.34, 0.20, 0.33, 0.22, 0.30, 0.42, 0.26, 0.36, 0.30, 0.48])
_BOTTLE_TINT = np.array([0.80, 0.82, 1.00])
_BOTTLE_BG = np.array([0.86, 0.86, 0.88])
_ORANGE = np.array([1.0, 0.55, 0.25])


def render_bottle(rng: np.random.Generator, n: int) -> Scene:
    """A clean ``n x n`` bottle_syn scene (a dark glass bottle from above, pose and lighting jitter)."""
    x, y = _grid(n)
    cx, cy = n / 2 + rng.normal(0.0, 0.015 * n, size=2)
    R = 0.42 * n * rng.uniform(0.97, 1.03)
    dx, dy = x - cx, y - cy
    dist = np.sqrt(dx * dx + dy * dy)
    r = dist / R
    theta = np.arctan2(dy, dx)

    knots_r = _BOTTLE_R.copy()
    knots_r[1:-1] += rng.uniform(-0.008, 0.008, size=len(knots_r) - 2)
    knots_v = _BOTTLE_V * rng.uniform(0.9, 1.1, size=len(_BOTTLE_V))
    lum = np.interp(r, knots_r, knots_v)
    phi = rng.uniform(0, 2 * np.pi)
    band = _smoothstep((r - 0.5) / 0.1) * _smoothstep((1.0 - r) / 0.08)
    light = 1.0 + 0.25 * np.cos(theta - phi) * band
    streak_table = _noise1d(rng, 720, 2.0)
    streaks = 1.0 + 0.07 * _periodic_lookup(streak_table, theta) * band
    glass = 1.0 + 0.035 * _noise(rng, n, 0.8)
    lum = lum * light * streaks * glass
    # orange reflections in the neck/shoulder rings, strongest towards the light
    orange_ring = np.exp(-(((r - rng.uniform(0.57, 0.63)) / 0.035) ** 2)) + 0.6 * np.exp(
        -(((r - rng.uniform(0.76, 0.8)) / 0.025) ** 2)
    )
    orange_amt = 0.45 * orange_ring * (0.5 + 0.5 * np.cos(theta - phi - rng.uniform(-0.6, 0.6)))
    orange_amt = orange_amt * (0.7 + 0.3 * _periodic_lookup(_noise1d(rng, 360, 4.0), theta))
    obj = lum[..., None] * _BOTTLE_TINT * (1 - orange_amt[..., None]) + (
        orange_amt[..., None] * _ORANGE * lum[..., None] * 1.6
    )

    halo = 0.28 * np.exp(-np.maximum(dist - R, 0.0) / (0.035 * n))
    bg = _BOTTLE_BG * (1.0 + 0.02 * _noise(rng, n, n / 8))[..., None] * (1.0 - halo)[..., None]
    oa = np.clip(R - dist + 0.5, 0.0, 1.0)[..., None]
    base = oa * obj + (1 - oa) * bg
    inside = np.interp(0.2, knots_r, knots_v) * _BOTTLE_TINT
    return Scene(
        base=base,
        n=n,
        x=x,
        y=y,
        extra={"c": (cx, cy), "R": R, "r": r, "theta": theta, "oa": oa[..., 0], "bg": bg, "inside": inside},
    )


def bottle_region(rng: np.random.Generator, scene: Scene, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One defect region of type ``kind`` blended into a bottle scene: (new base, support mask)."""
    n, x, y, base = scene.n, scene.x, scene.y, scene.base
    (cx, cy), R, r, oa = scene.extra["c"], scene.extra["R"], scene.extra["r"], scene.extra["oa"]
    psi = rng.uniform(0, 2 * np.pi)

    if kind == "scratch":
        rad = rng.uniform(0.55, 0.92) * R
        sx, sy = cx + rad * np.cos(psi), cy + rad * np.sin(psi)
        heading = psi + np.pi / 2 + rng.normal(0.0, 0.6)  # mostly tangential
        length = rng.uniform(0.12, 0.35) * n
        width = max(0.6, rng.uniform(0.7, 1.3) * n / 256)
        alpha = np.zeros((n, n))
        n_lines = 1 + int(rng.integers(3)) if rng.random() < 0.4 else 1
        shift = rng.uniform(2.0, 4.0) * max(1.0, n / 256)
        for k in range(n_lines):
            off = k * shift
            start = (sx + off * np.cos(heading + np.pi / 2), sy + off * np.sin(heading + np.pi / 2))
            pts = _curve_points(rng, start, heading, length * rng.uniform(0.6, 1.0))
            d = _curve_distance(n, pts, width + 2.0)
            along = 0.6 + 0.4 * np.abs(_noise(rng, n, 6.0))
            alpha = np.maximum(alpha, np.clip(width + 0.5 - d, 0.0, 1.0) * np.clip(along, 0, 1))
        alpha = alpha * (oa > 0.99)
        target = base + rng.uniform(0.12, 0.25)
        return _blend(base, target, alpha)

    area = _log_uniform(rng, *AREA_RANGE) * n * n
    if kind == "broken":
        on_lip = rng.random() < 0.3
        rad = rng.uniform(0.46, 0.52) * R if on_lip else rng.uniform(0.9, 1.0) * R
        bx, by = cx + rad * np.cos(psi), cy + rad * np.sin(psi)
        a, b = _blob_axes(rng, area, 2.4)
        d = _blob_field(x, y, bx, by, a, b, psi + np.pi / 2, rng, roughness=0.35)
        if on_lip:
            region = (d < 0) & (r > 0.44) & (r < 0.62)
            fill = np.broadcast_to(scene.extra["inside"] * (1.0 + 0.05 * _noise(rng, n, 1.5))[..., None], base.shape)
        else:
            region = (d < 0) & (oa > 0)
            fill = scene.extra["bg"]
        edge_w = max(1.0, 1.5 * n / 256)
        edge = (d >= 0) & (d < edge_w) & (oa > 0.99)
        if on_lip:
            edge &= (r > 0.44) & (r < 0.62)
        fracture = np.clip(base * 1.5 + 0.12, 0.0, 1.0)
        target = np.where(region[..., None], fill, fracture)
        alpha = np.where(region, 1.0, np.where(edge, 0.8, 0.0))
        return _blend(base, target, alpha)
    if kind == "contamination":
        rad = rng.uniform(0.1, 0.88) * R
        bx, by = cx + rad * np.cos(psi), cy + rad * np.sin(psi)
        a, b = _blob_axes(rng, area * 0.7, 2.0)
        d = _blob_field(x, y, bx, by, a, b, rng.uniform(0, np.pi), rng, roughness=0.35)
        soft = max(1.2, rng.uniform(1.5, 3.5) * n / 256)
        opacity = rng.uniform(0.25, 0.5)
        mottle = np.clip(0.55 + 0.45 * _noise(rng, n, max(0.8, 1.5 * n / 256)), 0.25, 1.3)
        alpha = opacity * _smoothstep(0.5 - d / soft) * mottle * (oa > 0.99)
        residue = np.array([0.62, 0.56, 0.48]) * rng.uniform(0.85, 1.15)
        return _blend(base, np.broadcast_to(residue, base.shape), alpha)
    raise AssertionError(kind)
