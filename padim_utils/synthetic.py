"""A small synthetic anomaly-detection dataset in the MVTec AD folder layout.

The course (and CI) must run without downloading MVTec AD, so this module draws
two categories procedurally, with numpy + scipy only, and writes them as PNGs in
exactly the MVTec layout that :class:`padim_utils.data.MVTecDataset` reads::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png     (0 / 255)
    <root>/<category>/README.txt                             (says it is synthetic)
    <root>/<category>/.synthetic.json                        (generation parameters)

Categories
----------
``carpet_syn`` (texture)
    A basket weave of beige yarn: over/under cells whose top thread is shaded
    like a cylinder and dips where it goes under, per-thread brightness,
    fibre streaks along each thread, mid-scale colour blotches and a slight
    warp of the weave. Every image has its own weave phase, a small rotation
    (+-3 deg), cell size (+-5 %) and "dye lot" (hue +-12 deg sd, saturation
    x0.75-1.3), so no pixel position holds a fixed value or colour.
    Defects: ``hole`` (darker, weave-less irregular blob with a lighter frayed
    rim), ``thread`` (a stray curved yarn lying across the weave, near the
    carpet's own tone), ``stain`` (a low-contrast tinted blob, texture kept,
    soft edge with a slightly denser drying ring), ``color`` (a region whose
    hue is rotated by 20-45 deg at constant luminance).

``bottle_syn`` (object)
    A dark glass bottle seen from above on a light background, like MVTec's
    ``bottle``: concentric rings (dark opening, bright lip, neck, shoulder
    highlight, outer rim) with per-image jitter of ring radii and tones, a
    directional light whose angle changes per image, orange reflections,
    moulding streaks along the angle, a soft halo, and a pose jitter of the
    centre (+-1.5 % of the side) and radius (+-3 %).
    Defects: ``broken`` (a chunk of the rim or lip missing, replaced by the
    background or the dark inside, with a bright fracture edge), ``contamination``
    (a translucent, mottled residue on the glass), ``scratch`` (one to three thin
    curved light lines on the glass).

Defect regions cover roughly 0.2 %-5 % of the image (log-uniform area; the thin
``scratch``/``thread`` lines are at the small end) and 30 % of defective images
have two regions.

Why raw pixels are a weak detector here
---------------------------------------
Every image, good or not, gets a global brightness gain (+-12 %), a per-channel
colour gain (2 % sd), a smooth illumination ramp (up to +-5 %) and sensor noise
(sd ~2.5 grey levels); the textures also move (random phase/rotation) and the
object moves and is lit from a random side. So the per-pixel mean/variance of
the good images is wide, and most defects change intensities by about as much
as that normal variation (stains, contamination, colour shifts, threads:
roughly 5-15 % changes). What gives them away is structure - a line crossing
the weave, a patch with no weave, a broken ring, a mottled film, a
hue boundary - which is what pretrained CNN features (edges, textures,
colour-opponent units) respond to. Holes and broken parts are the "easy" types.

A rough check while writing this module (default settings, 224 crop, a
PaDiM-style per-position Gaussian, image / pixel AUROC): raw 4x4-pooled RGB
pixels 0.67 / 0.75 on carpet_syn and 0.81 / 0.89 on bottle_syn; randomly
initialised efficientnet_lite0 features 0.42 / 0.56 and 0.77 / 0.89;
ImageNet-pretrained efficientnet_lite0 (80 random channels) 0.97 / 0.97 and
0.99 / 0.99. The hardest type for pretrained features is ``stain``.

Exact masks
-----------
Each sample is rendered twice from the same random state: the clean image and
the defective one (see :func:`generate_sample`, which returns both). A defect
is alpha-blended into the scene *before* the global lighting, colour gain and
sensor noise, which are then applied identically (pixel-wise) to both, so:

* the mask is the defect's support: the pixels whose blend weight is at least
  ``ALPHA_THRESHOLD`` (0.15; soft edges below that are cut, so stains have soft
  but *masked* edges);
* outside the mask the defective image is bit-identical to the clean image;
* inside the mask every pixel differs from the clean image in at least one
  channel: a pixel whose blended change rounds to zero gets a +-1 grey-level
  nudge (invisible, but it makes the rule exact).

Hence ``mask == (image != clean).any(axis=-1)`` holds exactly for every sample.

Reproducibility: each image has its own random generator seeded by
``(seed, category, split, defect type, index)``, so the output is the same bytes
for the same parameters (on the same numpy version) and does not depend on how
many images of another kind were drawn. Idempotence: a category folder whose
``.synthetic.json`` matches the requested parameters is left alone; otherwise it
is regenerated in a hidden temporary folder and swapped in by renaming. A folder
with the category's name but no ``.synthetic.json`` (real data?) is never
overwritten: that raises :class:`PadimError`.

Defaults (what the course uses): 60 train, 20 test good and 10 test images per
defect type at 256 x 256, i.e. 230 images, which take a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from padim_utils.errors import PadimError

__all__ = [
    "CATEGORIES",
    "DEFAULT_CATEGORIES",
    "ALPHA_THRESHOLD",
    "GENERATOR_VERSION",
    "Sample",
    "defect_types",
    "generate_sample",
    "make_synthetic_mvtec",
]

GENERATOR_VERSION = 1
ALPHA_THRESHOLD = 0.15
MARKER = ".synthetic.json"
DEFAULT_CATEGORIES = ("carpet_syn", "bottle_syn")
MIN_IMAGE_SIZE = 32

# area of one defect region, as a fraction of the image (log-uniform)
AREA_RANGE = (0.002, 0.05)
P_TWO_REGIONS = 0.3


@dataclass
class Sample:
    """One rendered image: ``clean`` and ``image`` are uint8 (H, W, 3), ``mask`` bool (H, W).

    For good images ``image`` equals ``clean`` and ``mask`` is all False.
    """

    clean: np.ndarray
    image: np.ndarray
    mask: np.ndarray


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


def _quantize(img: np.ndarray) -> np.ndarray:
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
class _Scene:
    """Clean scene (before lighting/noise) plus what the defects need to know."""

    base: np.ndarray  # (n, n, 3) float, albedo-ish, before global lighting
    n: int
    x: np.ndarray
    y: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Post:
    """Pixel-wise finishing applied identically to the clean and the defective scene."""

    gain: np.ndarray  # (3,)
    illum: np.ndarray  # (n, n, 1)
    noise: np.ndarray  # (n, n, 3)

    def __call__(self, base: np.ndarray) -> np.ndarray:
        return base * self.gain * self.illum + self.noise


def _make_post(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> _Post:
    gain = rng.uniform(0.88, 1.12) * rng.normal(1.0, 0.02, size=3)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((x - n / 2) * np.cos(phi) + (y - n / 2) * np.sin(phi)) / (n / 2)
    illum = 1.0 + rng.uniform(0.0, 0.05) * ramp
    noise = rng.normal(0.0, 0.01, size=(n, n, 3))
    return _Post(gain=gain, illum=illum[..., None], noise=noise)


def _blend(base: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``target`` into ``base`` where ``alpha >= ALPHA_THRESHOLD``; return (new base, support)."""
    alpha = np.clip(alpha, 0.0, 1.0)
    support = alpha >= ALPHA_THRESHOLD
    a = np.where(support, alpha, 0.0)[..., None]
    return base * (1.0 - a) + target * a, support


# ---------------------------- carpet_syn ---------------------------------- #
_CARPET_WARP = np.array([0.63, 0.56, 0.47])
_CARPET_WEFT = np.array([0.59, 0.53, 0.46])


def _render_carpet(rng: np.random.Generator, n: int) -> _Scene:
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
    return _Scene(base=base, n=n, x=x, y=y, extra={"p": p, "colour": warp_c * tint})


def _carpet_region(rng: np.random.Generator, scene: _Scene, kind: str) -> tuple[np.ndarray, np.ndarray]:
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


def _render_bottle(rng: np.random.Generator, n: int) -> _Scene:
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
    return _Scene(
        base=base,
        n=n,
        x=x,
        y=y,
        extra={"c": (cx, cy), "R": R, "r": r, "theta": theta, "oa": oa[..., 0], "bg": bg, "inside": inside},
    )


def _bottle_region(rng: np.random.Generator, scene: _Scene, kind: str) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- #
# registry and sample generation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Category:
    name: str
    kind: str  # "texture" or "object"
    defects: tuple[str, ...]
    render: Callable[[np.random.Generator, int], _Scene]
    region: Callable[[np.random.Generator, _Scene, str], tuple[np.ndarray, np.ndarray]]
    description: str


CATEGORIES: dict[str, _Category] = {
    "carpet_syn": _Category(
        "carpet_syn",
        "texture",
        ("color", "hole", "stain", "thread"),
        _render_carpet,
        _carpet_region,
        "woven beige carpet texture (basket weave with per-image phase, rotation and colour jitter)",
    ),
    "bottle_syn": _Category(
        "bottle_syn",
        "object",
        ("broken", "contamination", "scratch"),
        _render_bottle,
        _bottle_region,
        "dark glass bottle seen from above on a light background (pose and lighting jitter)",
    ),
}


def _category(name: str) -> _Category:
    try:
        return CATEGORIES[name]
    except KeyError:
        raise PadimError(
            f"unknown synthetic category {name!r}; available: {', '.join(sorted(CATEGORIES))}"
        ) from None


def defect_types(category: str) -> tuple[str, ...]:
    """Defect types drawn for a synthetic category (sorted)."""
    return _category(category).defects


def _rng(seed: int, category: str, split: str, defect_type: str, index: int, stream: int) -> np.random.Generator:
    key = [
        int(seed),
        zlib.crc32(category.encode()),
        zlib.crc32(split.encode()),
        zlib.crc32(defect_type.encode()),
        int(index),
        stream,
    ]
    return np.random.default_rng(key)


def generate_sample(
    category: str,
    split: str = "test",
    defect_type: str = "good",
    index: int = 0,
    image_size: int = 256,
    seed: int = 0,
) -> Sample:
    """Render one image exactly as :func:`make_synthetic_mvtec` writes it, plus its clean twin.

    ``split`` is ``"train"`` or ``"test"``; ``defect_type`` is ``"good"`` or one of
    :func:`defect_types`. Returns a :class:`Sample` (clean, image, mask) with
    ``mask == (image != clean).any(-1)`` exactly (see the module docstring).
    """
    spec = _category(category)
    if split not in ("train", "test"):
        raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
    if defect_type != "good" and defect_type not in spec.defects:
        raise PadimError(
            f"unknown defect type {defect_type!r} for {category}; available: good, {', '.join(spec.defects)}"
        )
    if split == "train" and defect_type != "good":
        raise PadimError("the train split only holds good images (defect_type='good')")
    n = _check_size(image_size)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise PadimError(f"index must be a non-negative integer, got {index!r}")

    rng_clean = _rng(seed, category, split, defect_type, index, 0)
    scene = spec.render(rng_clean, n)
    post = _make_post(rng_clean, n, scene.x, scene.y)
    clean = _quantize(post(scene.base))
    if defect_type == "good":
        return Sample(clean=clean, image=clean.copy(), mask=np.zeros((n, n), dtype=bool))

    rng_def = _rng(seed, category, split, defect_type, index, 1)
    min_px = max(6, int(0.001 * n * n))
    n_regions = 2 if rng_def.random() < P_TWO_REGIONS else 1
    for _attempt in range(20):
        current, mask = scene, np.zeros((n, n), dtype=bool)
        for _ in range(n_regions):
            new_base, support = spec.region(rng_def, current, defect_type)
            current = replace(current, base=new_base)
            mask |= support
        if mask.sum() >= min_px:
            break
    base = current.base
    image = _quantize(post(base))
    image = np.where(mask[..., None], image, clean)  # by construction already equal
    same = mask & (image == clean).all(-1)
    if same.any():  # rounding ate the change: nudge by one grey level
        c = clean[same].astype(np.int16)
        image[same] = np.where(c < 255, c + 1, c - 1).astype(np.uint8)
    return Sample(clean=clean, image=image, mask=mask)


# --------------------------------------------------------------------------- #
# writing the dataset
# --------------------------------------------------------------------------- #
def _check_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise PadimError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    return int(image_size)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PadimError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=1)


def _readme(spec: _Category, params: dict[str, Any]) -> str:
    return (
        f"{spec.name}: SYNTHETIC data, not MVTec AD.\n"
        f"\n"
        f"Drawn procedurally by padim_utils.synthetic (generator version {GENERATOR_VERSION}) so the\n"
        f"PaDiM course runs without downloads. It uses the MVTec AD folder layout.\n"
        f"\n"
        f"Content: {spec.description} ({spec.kind} category).\n"
        f"Defect types: {', '.join(spec.defects)}.\n"
        f"Images: {params['n_train']} train/good, {params['n_test_good']} test/good, "
        f"{params['n_test_defect_per_type']} per defect type; {params['image_size']}x{params['image_size']} RGB PNG; "
        f"seed {params['seed']}.\n"
        f"Masks (ground_truth/<defect>/<stem>_mask.png, 0/255): exactly the pixels that differ from the\n"
        f"clean rendering of the same image (defect blend weight >= {ALPHA_THRESHOLD}; pixels outside the\n"
        f"mask are bit-identical to the clean image, pixels inside differ by at least one grey level).\n"
        f"Parameters are stored in {MARKER}; rerunning with the same parameters keeps these files.\n"
    )


def _write_category(folder: Path, spec: _Category, params: dict[str, Any]) -> None:
    n, seed = params["image_size"], params["seed"]
    width = max(3, len(str(max(params["n_train"], params["n_test_good"], params["n_test_defect_per_type"]) - 1)))
    (folder / "train" / "good").mkdir(parents=True)
    (folder / "test" / "good").mkdir(parents=True)
    for i in range(params["n_train"]):
        s = generate_sample(spec.name, "train", "good", i, n, seed)
        _save_png(s.image, folder / "train" / "good" / f"{i:0{width}d}.png")
    for i in range(params["n_test_good"]):
        s = generate_sample(spec.name, "test", "good", i, n, seed)
        _save_png(s.image, folder / "test" / "good" / f"{i:0{width}d}.png")
    for defect in spec.defects:
        (folder / "test" / defect).mkdir(parents=True)
        (folder / "ground_truth" / defect).mkdir(parents=True)
        for i in range(params["n_test_defect_per_type"]):
            s = generate_sample(spec.name, "test", defect, i, n, seed)
            _save_png(s.image, folder / "test" / defect / f"{i:0{width}d}.png")
            _save_png(s.mask.astype(np.uint8) * 255, folder / "ground_truth" / defect / f"{i:0{width}d}_mask.png")
    (folder / "README.txt").write_text(_readme(spec, params), encoding="utf-8")
    # the marker goes last: a folder with a marker is complete
    (folder / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_synthetic_mvtec(
    root: str | os.PathLike,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect_per_type: int = 10,
    image_size: int = 256,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write synthetic categories in the MVTec AD layout under ``root``; return ``root``.

    A category folder whose ``.synthetic.json`` matches the parameters is kept as
    it is (unless ``force``); otherwise it is (re)generated in a temporary folder
    and renamed into place. A folder without ``.synthetic.json`` is never touched:
    PadimError. Available categories: :data:`CATEGORIES`.
    """
    if isinstance(categories, str):
        categories = (categories,)
    specs = [_category(c) for c in categories]
    if not specs:
        raise PadimError("categories is empty: name at least one of " + ", ".join(sorted(CATEGORIES)))
    params_common = {
        "generator_version": GENERATOR_VERSION,
        "n_train": _check_count("n_train", n_train, 1),
        "n_test_good": _check_count("n_test_good", n_test_good, 1),
        "n_test_defect_per_type": _check_count("n_test_defect_per_type", n_test_defect_per_type, 1),
        "image_size": _check_size(image_size),
        "seed": _check_count("seed", seed, 0),
    }
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PadimError(f"synthetic data root is not a folder: {root}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"cannot create synthetic data root {root}: {exc.strerror or exc}") from None

    for spec in specs:
        params = dict(params_common, category=spec.name, defect_types=list(spec.defects))
        target = root / spec.name
        if target.exists():
            marker = _read_marker(target)
            if marker is None:
                raise PadimError(
                    f"refusing to overwrite {target}: it exists but has no {MARKER} (not synthetic data?)"
                )
            if marker == params and not force:
                continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root))
        try:
            _write_category(tmp, spec, params)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
            _swap_in(tmp, target, params, force)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _swap_in(tmp: Path, target: Path, params: dict[str, Any], force: bool) -> None:
    """Rename the finished ``tmp`` folder to ``target``, replacing an older version."""
    for _ in range(5):
        try:
            os.rename(tmp, target)  # fails if target exists and is not empty
            return
        except OSError:
            if not target.exists():
                continue  # it vanished meanwhile (concurrent run): try again
        if not force and _read_marker(target) == params:
            return  # a concurrent run already wrote the same data: keep it
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.rename(target, old / target.name)
        except OSError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    raise PadimError(f"could not move the generated data into {target}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m padim_utils.synthetic [ROOT]``: write the synthetic categories."""
    parser = argparse.ArgumentParser(prog="python -m padim_utils.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="output folder (default: $PADIM_DATA/synthetic or ./data/synthetic)")
    parser.add_argument("--categories", nargs="+", default=list(DEFAULT_CATEGORIES), help="which categories")
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test-good", type=int, default=20)
    parser.add_argument("--n-test-defect-per-type", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if args.root is None:
        from padim_utils.data import data_home

        args.root = data_home() / "synthetic"
    try:
        out = make_synthetic_mvtec(
            args.root,
            args.categories,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_defect_per_type=args.n_test_defect_per_type,
            image_size=args.image_size,
            seed=args.seed,
            force=args.force,
        )
    except PadimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
