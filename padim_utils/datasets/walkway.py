"""A scene in the official STC layout where more normal training frames can make PaDiM blinder.

    root = make_walkway_stc("data/walkway")        # scene "01", a few seconds
    STCDataset(root, "01", "train", frames_per_video=8)

What it draws (scene ``01``, exact masks):

* a **static, finely textured** background: a wall, a lawn and a paved path across the frame;
* **dark figures** walking along the middle part of the path (never its two ends), in the
  training videos and in the test clips alike: they are normal;
* in the middle of each test clip, a **bright red cart** crossing the whole path, end to end:
  the anomaly (no training frame holds a red pixel).

Training videos are MPEG-4 AVI (:func:`padim_utils.datasets.video.write_video`), test frames JPEG files at
``jpeg_quality``: the two codecs of the real STC. Two things then happen to PaDiM, and chapter 07
shows both:

1. at a background position every training frame is the same picture up to the video codec's
   noise, so the fitted Gaussian there is extremely narrow, and a test JPEG of the very same
   background, whose compression errors differ, lands far outside it;
2. every training frame with a walker on the path widens the path's Gaussians, so a cart on the
   path looks less unusual the more such frames the model has seen.

Test clips: ``n_clips`` clips of ``frames_per_clip`` frames; the cart is in view for the middle
half of each clip (labels 1), alternately from the left and from the right.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from ..errors import PadimError
from .base import check_split
from .generated import check_count, write_synthetic_folder
from .stc_synthetic import STCClip, check_frame_size
from .video import VIDEO_EXT, write_video

__all__ = ["make_walkway_stc", "render_walkway_clip", "WALKWAY_VERSION", "SCENE", "HORIZON"]

WALKWAY_VERSION = 1
SCENE = "01"
CART_RGB = (225, 30, 35)
WALK_ZONE = (0.25, 0.75)  # walkers stay between these fractions of the path's length
HORIZON, PATH_TOP, PATH_BOTTOM = 0.3, 0.55, 0.8  # fractions of the frame's height: wall / lawn / path / lawn


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict[str, float]]:
    """(H, W, 3) float: wall, lawn, path, with a fine texture (stone, grass) of a few grey levels' std."""
    img = np.empty((h, w, 3))
    horizon, top, bottom = int(h * HORIZON), int(h * PATH_TOP), int(h * PATH_BOTTOM)
    img[:] = (105, 125, 85)  # lawn
    img[:horizon] = (150, 142, 132)  # wall
    img[top:bottom] = (170, 165, 155)  # paving
    texture = gaussian_filter(rng.standard_normal((h, w)), 0.8)
    img += 20.0 * (texture / texture.std())[..., None]
    return img, {"top": top, "bottom": bottom}


def _figure(yy: np.ndarray, xx: np.ndarray, x: float, feet: float, height: float, step: int) -> np.ndarray:
    """Where a walking figure is: head, body and two legs, (H, W) bool."""
    bw = height * 0.28
    body = (abs(xx - x) < bw / 2) & (yy >= feet - height * 0.8) & (yy < feet - height * 0.38)
    head = ((xx - x) / (height * 0.1)) ** 2 + ((yy - (feet - height * 0.9)) / (height * 0.11)) ** 2 <= 1
    spread = bw * (0.3 if step % 2 else 0.1)
    legs = ((abs(xx - x + spread) < bw * 0.13) | (abs(xx - x - spread) < bw * 0.13)) & (
        yy >= feet - height * 0.38) & (yy < feet)
    return body | head | legs


def render_walkway_clip(split: str = "train", clip: int = 0, n_frames: int = 48,
                        image_size: tuple[int, int] = (240, 424), seed: int = 0) -> STCClip:
    """One clip before compression: frames (T, H, W, 3) uint8, the cart's masks (T, H, W) and labels (T,).

    Training clips hold walkers only; test clip ``clip`` holds walkers and, for its middle half,
    the red cart (from the left for even ``clip``, from the right for odd).
    """
    check_split(split)
    h, w = image_size
    background, geo = _background(np.random.default_rng([seed, 0]), h, w)
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, clip])
    yy, xx = np.mgrid[0:h, 0:w]
    lo, hi = WALK_ZONE[0] * w, WALK_ZONE[1] * w
    span = geo["bottom"] - geo["top"]
    walkers = [{"x": rng.uniform(lo, hi), "v": rng.choice([-1, 1]) * rng.uniform(0.004, 0.008) * w,
                "feet": rng.uniform(geo["top"] + 0.6 * span, geo["bottom"] - 1),
                "rgb": rng.uniform(15, 60, 3)} for _ in range(int(rng.integers(3, 6)))]
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    masks = np.zeros((n_frames, h, w), bool)
    start, stop = n_frames // 4, n_frames - n_frames // 4
    cart_w, cart_h = 0.14 * w, 0.45 * span
    for t in range(n_frames):
        img = background.copy()
        for p in walkers:
            x = lo + abs((p["x"] - lo + p["v"] * t) % (2 * (hi - lo)) - (hi - lo))  # back and forth in the zone
            img[_figure(yy, xx, x, p["feet"], span * 1.2, t // 3)] = p["rgb"]
        if split == "test" and start <= t < stop:
            f = (t - start + 0.5) / (stop - start)  # 0 -> 1 across the path
            cx = (f if clip % 2 == 0 else 1 - f) * (w + cart_w) - cart_w / 2
            cart = (abs(xx - cx) < cart_w / 2) & (yy >= geo["bottom"] - 2 - cart_h) & (yy < geo["bottom"] - 2)
            img[cart] = CART_RGB
            masks[t] = cart
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return STCClip(frames=frames, clean=frames, masks=masks, labels=masks.any((1, 2)),
                   anomaly=None if split == "train" else "cart")


def _write(folder: Path, params: dict[str, Any]) -> None:
    size, seed = tuple(params["image_size"]), params["seed"]
    videos = folder / "training" / "videos"
    testing = folder / "testing"
    for d in (videos, testing / "frames", testing / "test_frame_mask", testing / "test_pixel_mask"):
        d.mkdir(parents=True)
    for v in range(params["n_videos"]):
        clip = render_walkway_clip("train", v, params["frames_per_video"], size, seed)
        write_video(videos / f"{SCENE}_{v + 1:03d}{VIDEO_EXT}", clip.frames)
    for c in range(params["n_clips"]):
        clip = render_walkway_clip("test", c, params["frames_per_clip"], size, seed)
        name = f"{SCENE}_{c + 1:04d}"
        (testing / "frames" / name).mkdir()
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(testing / "frames" / name / f"{t:03d}.jpg", quality=params["jpeg_quality"])
        np.save(testing / "test_frame_mask" / f"{name}.npy", clip.labels.astype(np.uint8))
        np.save(testing / "test_pixel_mask" / f"{name}.npy", clip.masks.astype(np.uint8))
    (folder / "README.txt").write_text(
        "SYNTHETIC data in the ShanghaiTech Campus layout, not STC: the walkway scene of padim_utils.datasets.walkway\n"
        "(a static textured background, dark figures walking a path, a red cart crossing it in the test clips).\n",
        encoding="utf-8")


def make_walkway_stc(root: str | os.PathLike, n_videos: int = 4, frames_per_video: int = 48, n_clips: int = 2,
                     frames_per_clip: int = 60, image_size: tuple[int, int] = (240, 424), jpeg_quality: int = 75,
                     seed: int = 0, force: bool = False) -> Path:
    """Write the walkway scene (STC layout, scene ``01``) into ``root``; return it.

    Written and replaced as :func:`padim_utils.datasets.stc_synthetic.make_synthetic_stc` writes its data: through a
    hidden temporary folder, kept when its parameters match, never over a folder it did not write.
    """
    h, w = check_frame_size(image_size)
    params = {"generator": "walkway", "walkway_version": WALKWAY_VERSION, "n_videos": check_count("n_videos", n_videos, 1),
              "frames_per_video": check_count("frames_per_video", frames_per_video, 2),
              "n_clips": check_count("n_clips", n_clips, 1),
              "frames_per_clip": check_count("frames_per_clip", frames_per_clip, 4), "image_size": [h, w],
              "jpeg_quality": check_count("jpeg_quality", jpeg_quality, 1), "seed": check_count("seed", seed, 0)}
    if params["jpeg_quality"] > 100:
        raise PadimError(f"jpeg_quality must be at most 100, got {jpeg_quality}")
    return write_synthetic_folder(Path(root), params, _write, force)
