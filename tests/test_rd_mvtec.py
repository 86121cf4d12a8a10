"""Tests for padim_utils.datasets.rd_mvtec: the random rotation + crop keeps masks aligned and is reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.datasets.rd_mvtec import MAX_ANGLE, RdMVTecDataset, rd_params, rd_transform


def _polygon_mask(size: int = 256) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([(40, 60), (200, 30), (180, 210), (90, 150)], fill=1)
    ImageDraw.Draw(img).rectangle((20, 200, 60, 240), fill=1)
    return np.asarray(img).astype(bool)


@pytest.fixture(scope="module")
def drawn_root(tmp_path_factory) -> Path:
    """An MVTec category whose defect image is white exactly where its mask is set."""
    root = tmp_path_factory.mktemp("rd")
    cat = root / "shape"
    mask = _polygon_mask()
    rng = np.random.default_rng(0)
    for i in range(3):
        (cat / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(cat / "train" / "good" / f"{i}.png")
    for d in ("test/good", "test/blob", "ground_truth/blob"):
        (cat / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(cat / "test" / "good" / "000.png")
    for i in range(4):
        Image.fromarray(np.repeat(mask[..., None] * np.uint8(255), 3, -1)).save(cat / "test" / "blob" / f"{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(cat / "ground_truth" / "blob" / f"{i:03d}_mask.png")
    return root


def test_image_and_mask_stay_aligned(drawn_root):
    ds = RdMVTecDataset(drawn_root, "shape", "test", seed=3)
    assert ds.out_size == 224 and len(ds) == 5
    angles = []
    assert ds.labels == [1, 1, 1, 1, 0]
    assert not ds[4]["mask"].any() and not ds[4]["image"].any()
    for i in range(4):
        item = ds[i]
        mask = item["mask"].numpy().astype(bool)
        assert mask.sum() > 5000
        white = item["image"].numpy().mean(0) > 127  # (224, 224)
        # bicubic (image) and nearest (mask) may only disagree on the mask's border
        border = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
        assert not (white ^ mask)[~border].any()
        assert (white ^ mask).sum() < 0.1 * border.sum()
        angles.append(ds.params(i)[0])
        # the same geometry with nearest for both: image and mask overlap exactly
        img, m = rd_transform(Image.fromarray(np.repeat(_polygon_mask()[..., None] * np.uint8(255), 3, -1)),
                              Image.fromarray(_polygon_mask().astype(np.uint8)), *ds.params(i), 224,
                              image_resample=Image.NEAREST)
        np.testing.assert_array_equal(np.asarray(img)[..., 0] > 0, np.asarray(m) > 0)
        np.testing.assert_array_equal(np.asarray(m), item["mask"].numpy())
    assert len(set(angles)) == 4  # every image has its own rotation


@pytest.mark.parametrize("angle, top, left", [(10.0, 0, 32), (-7.5, 16, 3), (0.0, 32, 0)])
def test_geometry_against_the_rotation_matrix(angle, top, left):
    """A small blob moves where a counter-clockwise rotation about the centre, then the crop, puts it."""
    m = np.zeros((256, 256), np.uint8)
    m[50:58, 170:178] = 1  # centre (x, y) = (174, 54)
    _, out = rd_transform(Image.new("RGB", (256, 256)), Image.fromarray(m), angle, top, left, 224)
    ys, xs = np.nonzero(np.asarray(out))
    t = np.deg2rad(angle)
    dx, dy = 174 - 128, 54 - 128
    x = 128 + dx * np.cos(t) + dy * np.sin(t) - left  # y axis points down: ccw on screen
    y = 128 - dx * np.sin(t) + dy * np.cos(t) - top
    assert abs(xs.mean() + 0.5 - x) < 1.0 and abs(ys.mean() + 0.5 - y) < 1.0
    assert len(xs) == pytest.approx(64, abs=8)


def test_parameters_are_reproducible_and_in_range():
    draws = [rd_params(0, i, category="bottle", split="test") for i in range(300)]
    assert draws == [rd_params(0, i, category="bottle", split="test") for i in range(300)]
    angles = np.array([d[0] for d in draws])
    offsets = np.array([d[1:] for d in draws])
    assert angles.min() >= -MAX_ANGLE and angles.max() <= MAX_ANGLE
    assert angles.min() < -9 and angles.max() > 9 and abs(angles.mean()) < 1.5
    assert offsets.min() == 0 and offsets.max() == 32
    other = [rd_params(1, i, category="bottle", split="test") for i in range(300)]
    assert sum(a != b for a, b in zip(draws, other)) == 300


def test_dataset_reproducible_and_seeds_differ(quick_root, quick_category):
    a = RdMVTecDataset(quick_root, quick_category, "test", image_size=64, crop=56, seed=0)
    b = RdMVTecDataset(quick_root, quick_category, "test", image_size=64, crop=56, seed=0)
    c = RdMVTecDataset(quick_root, quick_category, "test", image_size=64, crop=56, seed=1)
    base = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=56)
    assert a.paths == base.paths and a.labels == base.labels and a.defect_types == base.defect_types
    for i in (0, len(a) - 1):
        x, y, z = a[i], b[i], c[i]
        assert set(x) == set(base[i])
        assert x["image"].shape == (3, 56, 56) and x["mask"].shape == (56, 56) and x["image"].dtype == torch.uint8
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
        assert not torch.equal(x["image"], z["image"])
    assert torch.equal(a[-1]["image"], a[len(a) - 1]["image"])


@pytest.mark.parametrize("interpolation, pil_filter", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_resize_and_rotation_follow_the_interpolation(quick_root, quick_category, interpolation, pil_filter):
    ds = RdMVTecDataset(quick_root, quick_category, "test", image_size=48, crop=40, seed=2,
                        interpolation=interpolation)
    angle, top, left = ds.params(0)
    img = Image.open(ds.paths[0]).convert("RGB").resize((48, 48), pil_filter)  # the quick images are 64 px
    ref = img.rotate(angle, resample=pil_filter, fillcolor=(0, 0, 0)).crop((left, top, left + 40, top + 40))
    np.testing.assert_array_equal(ds[0]["image"].permute(1, 2, 0).numpy(), np.asarray(ref))


def test_bad_options(quick_root, quick_category):
    with pytest.raises(PadimError, match="needs a crop"):
        RdMVTecDataset(quick_root, quick_category, crop=None)
    with pytest.raises(PadimError, match="seed must be"):
        RdMVTecDataset(quick_root, quick_category, image_size=64, crop=56, seed=-1)
