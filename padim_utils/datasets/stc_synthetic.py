"""Synthetic data in the ShanghaiTech Campus layout: a small set with exact pixel masks, so tests and the
course run without the real STC data.

A static campus-like scene per scene id (buildings, lawn, a paved path), pedestrians walking along the
path; test clips where a vehicle, a cyclist or a person on the lawn appears for a while. Frames are
drawn with hard edges (no antialiasing), so a mask is exactly where the anomaly was drawn.
:func:`make_synthetic_stc` writes the clips as the real data is stored (training videos as MPEG-4 AVI,
test clips as JPEG frames with .npy frame and pixel masks, see :mod:`padim_utils.datasets.stc`);
:func:`render_stc_clip` gives one clip before compression. The same parameters give the same bytes
(:data:`GENERATOR_VERSION` names what is drawn).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..config import MIN_IMAGE_SIZE
from ..errors import PadimError
from ..progress import progress_bar
from .base import check_split
from .generated import MARKER, check_count, write_synthetic_folder
from .video import VIDEO_EXT, write_video

__all__ = ["GENERATOR_VERSION", "ANOMALY_KINDS", "STCClip", "render_stc_clip", "make_synthetic_stc",
           "check_frame_size"]

GENERATOR_VERSION = 1
ANOMALY_KINDS = ("vehicle", "cyclist", "off_path")


@dataclass
class STCClip:
    """One rendered clip: ``frames`` and ``clean`` uint8 (T, H, W, 3), ``masks`` bool (T, H, W).

    ``clean`` is the same clip without the anomaly; ``masks`` is exactly where the
    anomaly was drawn, so ``masks == (frames != clean).any(-1)``; ``labels`` (T,)
    is ``masks.any((1, 2))``; ``anomaly`` names the anomaly kind (None for training).
    """

    frames: np.ndarray
    clean: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    anomaly: str | None


def _rng(seed: int, *key: Any) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [zlib.crc32(str(k).encode()) for k in key])


class _Canvas:
    """Hard-edged (aliasing, on purpose: masks are exact) shapes on an (H, W) grid."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w]

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx + 0.5 - cx) / max(rx, 0.5)) ** 2 + ((self.yy + 0.5 - cy) / max(ry, 0.5)) ** 2 <= 1.0


def _background(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, dict[str, float]]:
    """A static campus-like scene: buildings, lawn, a paved path; returns (H, W, 3) uint8 and the geometry."""
    h, w = cv.h, cv.w
    img = np.empty((h, w, 3), np.float64)
    horizon = h * rng.uniform(0.28, 0.36)
    path_top, path_bot = h * rng.uniform(0.5, 0.56), h * rng.uniform(0.72, 0.78)
    img[:] = rng.uniform([60, 120, 50], [90, 160, 80])  # lawn
    img[cv.yy < horizon] = rng.uniform([150, 140, 130], [200, 190, 180])  # building wall
    for _ in range(int(rng.integers(4, 8))):  # windows
        x0, y0 = rng.uniform(0, w - 12), rng.uniform(2, horizon - 8)
        img[cv.rect(x0, y0, x0 + rng.uniform(6, 14), y0 + rng.uniform(4, 8))] = rng.uniform(40, 90, 3)
    paved = cv.rect(0, path_top, w, path_bot)
    img[paved] = rng.uniform([150, 150, 150], [185, 180, 175])
    for _ in range(int(rng.integers(2, 4))):  # trees on the lawn behind the path
        cx = rng.uniform(0, w)
        img[cv.ellipse(cx, horizon + 0.6 * (path_top - horizon), w * 0.05, (path_top - horizon) * 0.35)] = (
            rng.uniform([20, 70, 20], [40, 100, 40]))
    shade = 1.0 + 0.06 * (cv.yy / h - 0.5)[..., None]  # a little light gradient
    img = np.clip(np.rint(img * shade), 0, 255).astype(np.uint8)
    return img, {"horizon": horizon, "path_top": path_top, "path_bot": path_bot}


def _person(cv: _Canvas, x: float, y_feet: float, height: float, step: int) -> list[tuple[np.ndarray, str]]:
    """A walking figure: (support, part) pairs, part in head / body / legs."""
    bw = height * 0.28
    body = cv.rect(x - bw / 2, y_feet - height * 0.78, x + bw / 2, y_feet - height * 0.38)
    head = cv.ellipse(x, y_feet - height * 0.88, height * 0.1, height * 0.11)
    spread = bw * (0.35 if step % 2 else 0.1)
    legs = (cv.rect(x - spread - bw * 0.15, y_feet - height * 0.38, x - spread + bw * 0.1, y_feet)
            | cv.rect(x + spread - bw * 0.1, y_feet - height * 0.38, x + spread + bw * 0.15, y_feet))
    return [(legs, "legs"), (body, "body"), (head, "head")]


def _draw(img: np.ndarray, parts: list[tuple[np.ndarray, str]], colours: dict[str, np.ndarray]) -> np.ndarray:
    support = np.zeros(img.shape[:2], bool)
    for where, part in parts:
        img[where] = colours[part]
        support |= where
    return support


def _walkers(rng: np.random.Generator, geo: dict[str, float], w: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(int(rng.integers(2, 5))):
        out.append({
            "x0": rng.uniform(0, w), "speed": rng.choice([-1, 1]) * rng.uniform(0.8, 1.6),
            "y": rng.uniform(geo["path_top"] + 0.25 * (geo["path_bot"] - geo["path_top"]), geo["path_bot"]),
            "colours": {"head": rng.uniform([170, 120, 90], [230, 180, 150]), "body": rng.uniform(20, 235, 3),
                        "legs": rng.uniform(20, 90, 3)},
        })
    return out


def _anomaly_parts(kind: str, cv: _Canvas, geo: dict[str, float], t: int, a: dict[str, Any]):
    """The anomaly's shapes at time ``t`` of its window."""
    x = a["x0"] + a["speed"] * t
    if kind == "vehicle":  # a small car driving along the path
        L, H = a["size"], a["size"] * 0.45
        y = a["y"]
        return [(cv.rect(x - L / 2, y - H, x + L / 2, y - H * 0.25), "body"),
                (cv.rect(x - L / 4, y - H * 1.45, x + L / 4, y - H), "roof"),
                (cv.ellipse(x - L / 3, y - H * 0.2, H * 0.22, H * 0.22), "wheel"),
                (cv.ellipse(x + L / 3, y - H * 0.2, H * 0.22, H * 0.22), "wheel")]
    if kind == "cyclist":  # a person on a bike, fast
        h = a["size"]
        parts = _person(cv, x, a["y"] - h * 0.25, h, 0)
        wheels = (cv.ellipse(x - h * 0.3, a["y"] - h * 0.12, h * 0.14, h * 0.14)
                  | cv.ellipse(x + h * 0.3, a["y"] - h * 0.12, h * 0.14, h * 0.14))
        return [(wheels, "wheel")] + parts
    if kind == "off_path":  # a person walking on the lawn in front of the path
        return _person(cv, x, a["y"], a["size"], t)
    raise AssertionError(kind)


def render_stc_clip(
    scene: str = "01",
    split: str = "train",
    clip: int = 0,
    n_frames: int = 24,
    image_size: tuple[int, int] = (120, 160),
    seed: int = 0,
) -> STCClip:
    """Render one clip exactly as :func:`make_synthetic_stc` encodes it (before video/JPEG compression).

    Training clips are normal. A test clip holds one anomaly (kind
    ``ANOMALY_KINDS[clip % 3]``) visible during a window in the middle of the clip;
    the frames before and after it are normal.
    """
    check_split(split)
    h, w = image_size
    cv = _Canvas(h, w)
    background, geo = _background(_rng(seed, "scene", scene), cv)
    rng = _rng(seed, split, scene, clip)
    walkers = _walkers(rng, geo, w)
    person_h = (geo["path_bot"] - geo["path_top"]) * 1.1
    kind = None if split == "train" else ANOMALY_KINDS[clip % len(ANOMALY_KINDS)]
    if kind is not None:
        start = int(rng.integers(n_frames // 5, n_frames // 3 + 1))
        stop = int(rng.integers(2 * n_frames // 3, n_frames - n_frames // 6 + 1))
        direction = rng.choice([-1, 1])
        if kind == "vehicle":
            a = {"size": w * 0.3, "speed": 2.0, "y": geo["path_bot"] - 1}
        elif kind == "cyclist":
            a = {"size": person_h, "speed": 4.0, "y": geo["path_bot"] - 1}
        else:
            a = {"size": person_h, "speed": 1.0, "y": rng.uniform(geo["path_bot"] + person_h * 0.4, h - 1)}
        a["speed"] *= direction
        travel = a["speed"] * (stop - start)
        a["x0"] = w / 2 - travel / 2 + rng.uniform(-0.1, 0.1) * w
        colours = {"body": rng.uniform([150, 0, 0], [255, 60, 60]), "roof": rng.uniform(30, 80, 3),
                   "wheel": np.array([15.0, 15.0, 15.0]), "head": np.array([200.0, 150.0, 120.0]),
                   "legs": np.array([40.0, 40.0, 120.0])}
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    clean = np.empty_like(frames)
    masks = np.zeros((n_frames, h, w), bool)
    for t in range(n_frames):
        img = background.astype(np.float64)
        for p in walkers:
            x = (p["x0"] + p["speed"] * t) % (w + 20) - 10
            _draw(img, _person(cv, x, p["y"], person_h, t // 3), p["colours"])
        clean[t] = np.rint(img).astype(np.uint8)
        frames[t] = clean[t]
        if kind is not None and start <= t < stop:
            drawn = np.rint(img).copy()
            support = _draw(drawn, _anomaly_parts(kind, cv, geo, t - start, a), colours)
            frame = np.where(support[..., None], drawn, clean[t]).astype(np.uint8)
            same = support & (frame == clean[t]).all(-1)  # anomaly colour equal to what it covers: nudge
            frame[same] = np.where(clean[t][same] < 255, clean[t][same] + 1, clean[t][same] - 1)
            frames[t], masks[t] = frame, support
    return STCClip(frames=frames, clean=clean, masks=masks, labels=masks.any((1, 2)), anomaly=kind)


def _write_stc(folder: Path, params: dict[str, Any]) -> None:
    size, seed, n = tuple(params["image_size"]), params["seed"], params["frames_per_video"]
    videos = folder / "training" / "videos"
    frames_dir = folder / "testing" / "frames"
    fmask, pmask = folder / "testing" / "test_frame_mask", folder / "testing" / "test_pixel_mask"
    for d in (videos, frames_dir, fmask, pmask):
        d.mkdir(parents=True)
    jobs = [(s, "train", c) for s in params["scenes"] for c in range(params["n_train_videos"])]
    jobs += [(s, "test", c) for s in params["scenes"] for c in range(params["n_test_clips"])]
    for scene, split, c in progress_bar(jobs, "synth STC", None, unit="clip"):
        clip = render_stc_clip(scene, split, c, n, size, seed)
        if split == "train":
            write_video(videos / f"{scene}_{c + 1:03d}{VIDEO_EXT}", clip.frames)
            continue
        name = f"{scene}_{c + 1:04d}"
        (frames_dir / name).mkdir()
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(frames_dir / name / f"{t:03d}.jpg", quality=95)
        np.save(fmask / f"{name}.npy", clip.labels.astype(np.uint8))
        np.save(pmask / f"{name}.npy", clip.masks.astype(np.uint8))
    (folder / "README.txt").write_text(
        "SYNTHETIC data in the ShanghaiTech Campus layout, not STC.\n\n"
        f"Drawn by padim_utils.datasets.stc_synthetic (generator version {GENERATOR_VERSION}): static campus-like\n"
        "scenes with people walking along a path (training videos, MPEG-4 AVI); test clips where a vehicle, a\n"
        "cyclist or a person on the lawn appears for a while. Pixel masks are exactly where the anomaly was drawn\n"
        "(before JPEG compression); frame labels are 1 where the mask is not empty.\n"
        f"Parameters are in {MARKER}.\n", encoding="utf-8")


def make_synthetic_stc(
    root: str | os.PathLike,
    scenes: Sequence[str] = ("01", "02"),
    n_train_videos: int = 2,
    frames_per_video: int = 24,
    n_test_clips: int = 3,
    image_size: tuple[int, int] = (120, 160),
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a small synthetic set in the STC layout into ``root`` (which becomes the STC root); return it.

    ``frames_per_video`` frames per training video and per test clip, frames of
    ``image_size`` (height, width; both even, at least 32). ``root`` is written in
    a hidden temporary folder beside it and renamed into place; a ``root`` whose
    ``.synthetic.json`` matches the parameters is kept (unless ``force``); a
    non-empty ``root`` without that marker (real data?) is never touched: PadimError.
    """
    if isinstance(scenes, str):
        scenes = (scenes,)
    scenes = [str(s) for s in scenes]
    if not scenes or any(not s or "_" in s or "/" in s for s in scenes):
        raise PadimError(f"scenes must be non-empty ids without '_' or '/', got {scenes!r}")
    h, w = check_frame_size(image_size)
    params = {
        "generator_version": GENERATOR_VERSION,
        "scenes": sorted(set(scenes)),
        "n_train_videos": check_count("n_train_videos", n_train_videos, 1),
        "frames_per_video": check_count("frames_per_video", frames_per_video, 6),
        "n_test_clips": check_count("n_test_clips", n_test_clips, 1),
        "image_size": [h, w],
        "seed": check_count("seed", seed, 0),
    }
    return write_synthetic_folder(Path(root), params, _write_stc, force)


def check_frame_size(image_size: Any) -> tuple[int, int]:
    """(height, width) of generated video frames: two even numbers (yuv420p) >= MIN_IMAGE_SIZE, else PadimError."""
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise PadimError(f"image_size must be (height, width), got {image_size!r}") from None
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE or h % 2 or w % 2:
        raise PadimError(f"image_size must be two even numbers >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    return h, w
