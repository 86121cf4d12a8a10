"""Tests for padim_utils.datasets.synthetic: layout, determinism, idempotence, exact masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from padim_utils.datasets.mvtec import MVTecDataset, list_categories
from padim_utils.errors import PadimError
from padim_utils.datasets.synthetic import (
    CATEGORIES,
    DEFAULT_CATEGORIES,
    MARKER,
    defect_types,
    generate_sample,
    main,
    make_synthetic_mvtec,
)

SMALL = dict(image_size=64, n_train=3, n_test_good=2, n_test_defect_per_type=2, seed=0)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return make_synthetic_mvtec(tmp_path_factory.mktemp("syn_small"), **SMALL)


# --------------------------------------------------------------------------- #
# layout
# --------------------------------------------------------------------------- #
def test_layout_and_files(small_root):
    assert set(list_categories(small_root)) == set(DEFAULT_CATEGORIES)
    assert {c for c in DEFAULT_CATEGORIES} <= set(CATEGORIES)
    kinds = {CATEGORIES[c].kind for c in DEFAULT_CATEGORIES}
    assert kinds == {"texture", "object"}
    for cat in DEFAULT_CATEGORIES:
        d = small_root / cat
        assert sorted(p.name for p in (d / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert sorted(p.name for p in (d / "test" / "good").iterdir()) == ["000.png", "001.png"]
        types = defect_types(cat)
        assert 3 <= len(types) <= 4
        assert sorted(p.name for p in (d / "test").iterdir()) == sorted(("good",) + types)
        for t in types:
            assert sorted(p.name for p in (d / "test" / t).iterdir()) == ["000.png", "001.png"]
            masks = sorted(p.name for p in (d / "ground_truth" / t).iterdir())
            assert masks == ["000_mask.png", "001_mask.png"]
            for m in masks:
                arr = _png(d / "ground_truth" / t / m)
                assert arr.dtype == np.uint8 and arr.shape == (64, 64)
                assert set(np.unique(arr)) <= {0, 255} and arr.max() == 255
        img = Image.open(d / "train" / "good" / "000.png")
        assert img.mode == "RGB" and img.size == (64, 64)
        readme = (d / "README.txt").read_text()
        assert "SYNTHETIC" in readme and cat in readme
        marker = json.loads((d / MARKER).read_text())
        assert marker["image_size"] == 64 and marker["n_train"] == 3 and marker["category"] == cat
        assert marker["defect_types"] == list(types)
    # no temporary folders left behind
    assert sorted(p.name for p in small_root.iterdir()) == sorted(DEFAULT_CATEGORIES)


def test_accepted_by_mvtec_dataset(small_root):
    for cat in DEFAULT_CATEGORIES:
        train = MVTecDataset(small_root, cat, "train", image_size=64, crop=None)
        test = MVTecDataset(small_root, cat, "test", image_size=64, crop=None)
        assert len(train) == 3 and len(test) == 2 + 2 * len(defect_types(cat))
        for i in range(len(test)):
            item = test[i]
            assert (item["mask"].sum() > 0) == (item["label"] == 1)
            if item["label"] == 1:
                # the loader's mask is the generator's mask (no resize here)
                stem = Path(item["path"]).stem
                gt = _png(small_root / cat / "ground_truth" / item["defect_type"] / f"{stem}_mask.png")
                np.testing.assert_array_equal(item["mask"].numpy(), gt > 0)


def test_quick_path_matches_course_fixture(tmp_path):
    root = make_synthetic_mvtec(tmp_path, image_size=64, n_train=8, n_test_good=2, n_test_defect_per_type=1)
    for cat in DEFAULT_CATEGORIES:
        assert len(MVTecDataset(root, cat, "train", image_size=64, crop=56)) == 8


# --------------------------------------------------------------------------- #
# determinism and idempotence
# --------------------------------------------------------------------------- #
def test_two_runs_give_identical_bytes(tmp_path, small_root):
    other = make_synthetic_mvtec(tmp_path / "again", **SMALL)
    a, b = _tree(small_root), _tree(other)
    assert a.keys() == b.keys() and len(a) > 20
    assert all(a[k] == b[k] for k in a)
    # a different seed gives different images
    third = make_synthetic_mvtec(tmp_path / "seed1", categories=["carpet_syn"], **{**SMALL, "seed": 1})
    assert _tree(third)["carpet_syn/train/good/000.png"] != a["carpet_syn/train/good/000.png"]


def test_second_call_does_not_rewrite(tmp_path):
    params = dict(SMALL, categories=["bottle_syn"])
    root = make_synthetic_mvtec(tmp_path, **params)
    files = [p for p in (root / "bottle_syn").rglob("*") if p.is_file()]
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    dir_ino = (root / "bottle_syn").stat().st_ino
    assert make_synthetic_mvtec(tmp_path, **params) == root
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == before
    assert (root / "bottle_syn").stat().st_ino == dir_ino

    # different parameters: regenerated in place (atomically, via a renamed folder)
    make_synthetic_mvtec(tmp_path, **dict(params, n_train=4))
    assert (root / "bottle_syn").stat().st_ino != dir_ino
    assert len(list((root / "bottle_syn" / "train" / "good").iterdir())) == 4
    assert json.loads((root / "bottle_syn" / MARKER).read_text())["n_train"] == 4
    assert sorted(p.name for p in root.iterdir()) == ["bottle_syn"]  # no temp/old folders left

    # force=True regenerates even when up to date
    ino = (root / "bottle_syn").stat().st_ino
    make_synthetic_mvtec(tmp_path, **dict(params, n_train=4), force=True)
    assert (root / "bottle_syn").stat().st_ino != ino


def test_incomplete_folder_is_regenerated(tmp_path):
    params = dict(SMALL, categories=["carpet_syn"])
    root = make_synthetic_mvtec(tmp_path, **params)
    (root / "carpet_syn" / MARKER).write_text("{not json")
    with pytest.raises(PadimError, match="refusing to overwrite"):
        make_synthetic_mvtec(tmp_path, **params)
    (root / "carpet_syn" / MARKER).write_text(json.dumps({"old": True}))
    make_synthetic_mvtec(tmp_path, **params)
    assert json.loads((root / "carpet_syn" / MARKER).read_text())["category"] == "carpet_syn"


def test_never_overwrites_real_data(tmp_path):
    real = tmp_path / "carpet_syn" / "train" / "good"
    real.mkdir(parents=True)
    (real / "mine.png").write_bytes(b"precious")
    with pytest.raises(PadimError, match=r"refusing to overwrite .*carpet_syn.*\.synthetic\.json"):
        make_synthetic_mvtec(tmp_path, categories=["carpet_syn"], **{k: v for k, v in SMALL.items()})
    assert (real / "mine.png").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"categories": ["nope"]}, r"unknown synthetic category 'nope'; available: bottle_syn, carpet_syn"),
        ({"categories": []}, "categories is empty"),
        ({"image_size": 16}, "image_size"),
        ({"n_train": 0}, "n_train"),
        ({"n_test_defect_per_type": -1}, "n_test_defect_per_type"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(PadimError, match=match):
        make_synthetic_mvtec(tmp_path, **{**SMALL, **kwargs})


def test_root_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PadimError, match="not a folder"):
        make_synthetic_mvtec(f, **SMALL)


# --------------------------------------------------------------------------- #
# exact masks, realistic defects
# --------------------------------------------------------------------------- #
def test_files_match_generate_sample_and_clean_twin(small_root):
    for cat in DEFAULT_CATEGORIES:
        for t in defect_types(cat):
            s = generate_sample(cat, "test", t, 1, image_size=64, seed=0)
            img = _png(small_root / cat / "test" / t / "001.png")
            gt = _png(small_root / cat / "ground_truth" / t / "001_mask.png") > 0
            np.testing.assert_array_equal(img, s.image)
            np.testing.assert_array_equal(gt, s.mask)
            changed = (img != s.clean).any(-1)
            np.testing.assert_array_equal(changed, gt)  # mask == exactly the changed pixels
        good = generate_sample(cat, "train", "good", 2, image_size=64, seed=0)
        np.testing.assert_array_equal(_png(small_root / cat / "train" / "good" / "002.png"), good.image)
        np.testing.assert_array_equal(good.image, good.clean)
        assert not good.mask.any()


@pytest.fixture(scope="module")
def full_size_samples():
    """A few 256 px samples of every defect type (the course's setting)."""
    out = {}
    for cat in DEFAULT_CATEGORIES:
        for t in defect_types(cat):
            out[cat, t] = [generate_sample(cat, "test", t, i, image_size=256, seed=0) for i in range(6)]
    return out


def test_masks_exact_and_region_sizes_at_256(full_size_samples):
    n_regions = []
    for (cat, t), samples in full_size_samples.items():
        for s in samples:
            assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8 and s.mask.dtype == bool
            np.testing.assert_array_equal(s.mask, (s.image != s.clean).any(-1), err_msg=f"{cat}/{t}")
            frac = s.mask.mean()
            assert 0.0008 <= frac <= 0.12, f"{cat}/{t}: region covers {frac:.4f} of the image"
            n_regions.append(ndimage.label(ndimage.binary_dilation(s.mask, iterations=3))[1])
        fracs = [s.mask.mean() for s in samples]
        assert max(fracs) > min(fracs)  # sizes vary
    assert min(n_regions) >= 1 and max(n_regions) >= 2  # some images have two regions


def test_defects_are_subtle_relative_to_normal_variation(full_size_samples):
    """Most defect types change pixel values by less than the spread of good images."""
    goods = np.stack([generate_sample("carpet_syn", "train", "good", i, 256).image for i in range(8)]).astype(float)
    per_pixel_sd = goods.std(0).mean()
    for t in ("stain", "color", "thread"):
        diffs = [np.abs(s.image.astype(float) - s.clean)[s.mask].mean() for s in full_size_samples["carpet_syn", t]]
        assert np.median(diffs) < 1.5 * per_pixel_sd, (t, np.median(diffs), per_pixel_sd)
    # good images differ from each other (pose/phase/colour jitter)
    assert (goods[0] != goods[1]).mean() > 0.9
    objs = np.stack([generate_sample("bottle_syn", "train", "good", i, 256).image for i in range(2)])
    assert (objs[0] != objs[1]).mean() > 0.5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from([(c, t) for c in DEFAULT_CATEGORIES for t in CATEGORIES[c].defects]),
    index=st.integers(0, 10_000),
    seed=st.integers(0, 2**31),
)
def test_mask_exactness_property(pair, index, seed):
    cat, t = pair
    s = generate_sample(cat, "test", t, index, image_size=64, seed=seed)
    assert s.mask.sum() >= 6
    np.testing.assert_array_equal(s.mask, (s.image != s.clean).any(-1))
    again = generate_sample(cat, "test", t, index, image_size=64, seed=seed)
    np.testing.assert_array_equal(again.image, s.image)


def test_generate_sample_errors():
    with pytest.raises(PadimError, match="unknown defect type 'dust' for carpet_syn; available: good, "):
        generate_sample("carpet_syn", "test", "dust")
    with pytest.raises(PadimError, match="train split only holds good"):
        generate_sample("carpet_syn", "train", "hole")
    with pytest.raises(PadimError, match="unknown split"):
        generate_sample("carpet_syn", "val", "good")
    with pytest.raises(PadimError, match="index"):
        generate_sample("carpet_syn", "test", "good", -1)


def test_cli_main(tmp_path, capsys):
    rc = main([str(tmp_path / "out"), "--categories", "bottle_syn", "--image-size", "48", "--n-train", "2",
               "--n-test-good", "1", "--n-test-defect-per-type", "1"])
    assert rc == 0 and str(tmp_path / "out") in capsys.readouterr().out
    assert len(MVTecDataset(tmp_path / "out", "bottle_syn", "test", image_size=48, crop=None)) == 4
    assert main([str(tmp_path / "out2"), "--categories", "nope"]) == 2
    assert "unknown synthetic category" in capsys.readouterr().err
