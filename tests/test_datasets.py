"""Tests for padim_utils.datasets.registry: MVTec groups, BTAD, VisA and folder loaders, the factory, run_benchmark on each."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.datasets.registry import (
    BTAD_PRODUCTS,
    DATASET_NAMES,
    MVTEC_CATEGORIES,
    MVTEC_OBJECTS,
    MVTEC_TEXTURES,
    VISA_CATEGORIES,
    BTADDataset,
    FolderDataset,
    VisADataset,
    dataset_categories,
    default_root,
    mvtec_categories,
    open_dataset,
)
from padim_utils.errors import PadimError
from padim_utils.experiments.benchmark import markdown_row, run_benchmark
from padim_utils.datasets.rd_mvtec import RdMVTecDataset
from padim_utils.datasets.stc import STCDataset
from padim_utils.datasets.stc_synthetic import make_synthetic_stc


def _save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _rgb(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _box_mask(i: int, h: int = 48, w: int = 40, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[5 + i: 20 + i, 8: 30] = value
    return m


def _nearest(arr: np.ndarray, size: int) -> np.ndarray:
    """Independent nearest-neighbour square resize (pixel centres), numpy indexing only."""
    h, w = arr.shape[:2]
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    return arr[rows][:, cols]


def _one_line(fn, *parts):
    with pytest.raises(PadimError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text
    for p in parts:
        assert p in text, text
    return text


# --------------------------------------------------------------------------- #
# MVTec AD categories
# --------------------------------------------------------------------------- #
def test_mvtec_groups_follow_the_paper():
    assert mvtec_categories("textures") == MVTEC_TEXTURES == ("carpet", "grid", "leather", "tile", "wood")
    assert set(mvtec_categories("objects")) == set(MVTEC_OBJECTS) == {
        "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper"}
    assert mvtec_categories() == MVTEC_CATEGORIES and len(set(MVTEC_CATEGORIES)) == 15
    assert not set(MVTEC_TEXTURES) & set(MVTEC_OBJECTS)
    with pytest.raises(PadimError, match="unknown MVTec AD group 'cars'"):
        mvtec_categories("cars")
    assert len(VISA_CATEGORIES) == 12 and BTAD_PRODUCTS == ("01", "02", "03")


# --------------------------------------------------------------------------- #
# BTAD
# --------------------------------------------------------------------------- #
def _btad(root: Path) -> Path:
    """Product 01: .bmp images, .png masks; product 03: .bmp images and masks (as the real products)."""
    for product, mask_ext in (("01", ".png"), ("03", ".bmp")):
        d = root / product
        for i in range(3):
            _save(_rgb(i), d / "train" / "ok" / f"{i:04d}.bmp")
        _save(_rgb(10), d / "test" / "ok" / "0000.bmp")
        for i in range(2):
            _save(_rgb(20 + i), d / "test" / "ko" / f"{i:04d}.bmp")
            _save(_box_mask(i), d / "ground_truth" / "ko" / f"{i:04d}{mask_ext}")
    return root


@pytest.mark.parametrize("product", ["01", "03"])
def test_btad_items(tmp_path, product):
    root = _btad(tmp_path / "btad")
    assert dataset_categories("btad", root) == ["01", "03"]
    train = BTADDataset(root, product, "train", image_size=32, crop=None)
    test = BTADDataset(root, product, "test", image_size=32, crop=None)
    assert len(train) == 3 and not any(train.labels) and set(train.defect_types) == {"good"}
    assert test.labels == [0, 1, 1] and test.defect_types == ["good", "ko", "ko"]
    for i in (1, 2):
        item = test[i]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
        np.testing.assert_array_equal(item["mask"].numpy(), _nearest(_box_mask(i - 1) > 0, 32))
        assert item["label"] == 1 and item["path"].endswith(f"{i - 1:04d}.bmp")
    assert not test[0]["mask"].any()


def test_btad_errors(tmp_path):
    root = _btad(tmp_path / "btad")
    (root / "01" / "ground_truth" / "ko" / "0001.png").unlink()
    _one_line(lambda: BTADDataset(root, "01", "test"), "missing mask for defect image", "0001.bmp")
    _one_line(lambda: BTADDataset(root, "02", "test"), "category '02' not found", "01, 03")
    shutil.rmtree(root / "03" / "train" / "ok")
    _one_line(lambda: BTADDataset(root, "03", "train"), "missing folder", "train/ok")
    (root / "03" / "train" / "ok").mkdir()
    _one_line(lambda: BTADDataset(root, "03", "train"), "no images in", "train/ok")
    (root / "03" / "test" / "ok" / "0000.bmp").write_bytes(b"BM broken")
    ds = BTADDataset(root, "03", "test")
    _one_line(lambda: ds[0], "cannot read image", "0000.bmp")


# --------------------------------------------------------------------------- #
# VisA
# --------------------------------------------------------------------------- #
def _visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        for i in range(4):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            _save(_rgb(i), root / rel)
            rows.append(f"{obj},{'train' if i < 3 else 'test'},normal,{rel},")
        for i in range(2):
            rel, mrel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG", f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            _save(_rgb(30 + i), root / rel)
            m = _box_mask(i, value=1)
            m[40:44, 2:6] = 2  # a second anomaly instance, another value: VisA masks are 0 / non-zero
            _save(m, root / mrel)
            rows.append(f"{obj},test,anomaly,{rel},{mrel}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_items(tmp_path):
    root = _visa(tmp_path / "visa")
    assert dataset_categories("visa", root) == ["candle", "pcb1"]
    train = VisADataset(root, "pcb1", "train", image_size=64, crop=48)
    test = VisADataset(root, "pcb1", "test", image_size=64, crop=48)
    assert [Path(p).name for p in train.paths] == ["0000.JPG", "0001.JPG", "0002.JPG"]
    assert all("pcb1" in p for p in train.paths + test.paths)
    assert test.labels == [0, 1, 1] and test.defect_types == ["good", "anomaly", "anomaly"]
    for i in (1, 2):
        full = _box_mask(i - 1, value=1)
        full[40:44, 2:6] = 2
        expected = _nearest(full > 0, 64)[8:56, 8:56]  # centre crop 64 -> 48
        np.testing.assert_array_equal(test[i]["mask"].numpy(), expected)
        assert set(np.unique(test[i]["mask"].numpy())) == {0, 1}
    assert test.out_size == 48 and test[0]["image"].shape == (3, 48, 48)


def test_visa_errors(tmp_path):
    root = _visa(tmp_path / "visa")
    csv_path = root / "split_csv" / "1cls.csv"
    _one_line(lambda: VisADataset(root, "cashew"), "object 'cashew' not in", "candle, pcb1")
    (root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    _one_line(lambda: VisADataset(root, "candle", "test"), "missing mask for defect image", "001.JPG")
    (root / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    _one_line(lambda: VisADataset(root, "pcb1", "train"), "not found", "0001.JPG", "line 9")
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:1] + [l for l in lines[1:] if not l.startswith("pcb1,train")]) + "\n")
    _one_line(lambda: VisADataset(root, "pcb1", "train"), "no train rows for object 'pcb1'")
    csv_path.write_text("object,split,image\ncandle,train,x.JPG\n")
    _one_line(lambda: VisADataset(root, "candle"), "must have the columns object,split,label,image,mask")
    csv_path.unlink()
    _one_line(lambda: VisADataset(root, "candle"), "VisA split file not found", "split_csv/1cls.csv")


def test_visa_split_file_saved_with_a_byte_order_mark(tmp_path):
    """Excel saves CSV as UTF-8 with a BOM: the first column is still "object"."""
    root = _visa(tmp_path / "visa")
    csv_path = root / "split_csv" / "1cls.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # before: "has \ufeffobject,split,..."
    assert [Path(p).name for p in VisADataset(root, "pcb1", "train").paths] == ["0000.JPG", "0001.JPG", "0002.JPG"]
    assert dataset_categories("visa", root) == ["candle", "pcb1"]


def test_visa_train_and_test_must_not_overlap(tmp_path):
    root = _visa(tmp_path / "visa")
    csv_path = root / "split_csv" / "1cls.csv"
    lines = csv_path.read_text().splitlines()
    test_rows = [l for l in lines if l.startswith("pcb1,test")]
    leaked = [l.replace(",test,", ",train,") for l in test_rows]  # every pcb1 test image listed again for training
    csv_path.write_text("\n".join(lines + leaked) + "\n")
    for split in ("train", "test"):  # before: accepted, the model then tested on images it was fitted on
        _one_line(lambda: VisADataset(root, "pcb1", split), str(csv_path), "3 image(s) of 'pcb1' both as train and "
                  "as test", "pcb1/Data/Images/Normal/0003.JPG", "lines 14 and 11")
    assert len(VisADataset(root, "candle", "train")) == 3  # another object's rows are not concerned


def test_btad_mask_of_the_wrong_size_before_the_fit(tmp_path, monkeypatch):
    from padim_utils.model import Padim

    root = _btad(tmp_path / "btad")
    mask = root / "01" / "ground_truth" / "ko" / "0001.png"
    _save(_box_mask(1, h=24, w=20), mask)
    monkeypatch.setattr(Padim, "fit", lambda *a, **k: pytest.fail("the fit started before the mistake was reported"))
    _one_line(lambda: run_benchmark(preset("quick").replace(image_size=32), root, "01", progress=False,
                                    dataset="btad"), str(mask), "20x24", "40x48")


def test_folder_corrupt_test_image_before_the_fit(tmp_path, monkeypatch):
    from padim_utils.model import Padim

    root = _folders(tmp_path)
    broken = root / "test" / "scratch" / "s0.png"
    broken.write_bytes(broken.read_bytes()[:200])  # cut short
    monkeypatch.setattr(Padim, "fit", lambda *a, **k: pytest.fail("the fit started before the mistake was reported"))
    _one_line(lambda: run_benchmark(preset("quick").replace(image_size=32), None, "mine", progress=False,
                                    dataset="folder", normal_dir=root / "normal", test_dir=root / "test",
                                    mask_dir=root / "masks"), "cannot read image", str(broken))


# --------------------------------------------------------------------------- #
# your own folders
# --------------------------------------------------------------------------- #
def _folders(root: Path) -> Path:
    for i in range(3):
        _save(_rgb(i), root / "normal" / f"n{i}.png")
    _save(_rgb(10), root / "test" / "good" / "g0.jpg")
    _save(_rgb(20), root / "test" / "scratch" / "s0.png")
    _save(_rgb(21), root / "test" / "dent" / "d0.png")
    _save(_box_mask(0), root / "masks" / "scratch" / "s0_mask.png")
    _save(_box_mask(1), root / "masks" / "dent" / "d0.bmp")  # no _mask suffix, another format: found too
    return root


def test_folder_dataset(tmp_path):
    root = _folders(tmp_path)
    train = FolderDataset(root / "normal", image_size=32, crop=None)
    assert [Path(p).name for p in train.paths] == ["n0.png", "n1.png", "n2.png"] and not any(train.labels)
    test = FolderDataset(root / "normal", root / "test", root / "masks", split="test", image_size=32, crop=None)
    assert test.has_masks and test.defect_types == ["dent", "good", "scratch"] and test.labels == [1, 0, 1]
    np.testing.assert_array_equal(test[0]["mask"].numpy(), _nearest(_box_mask(1) > 0, 32))
    np.testing.assert_array_equal(test[2]["mask"].numpy(), _nearest(_box_mask(0) > 0, 32))
    bare = FolderDataset(None, root / "test", split="test", image_size=32, crop=None)
    assert not bare.has_masks and bare.labels == [1, 0, 1] and not bare[0]["mask"].any()


def test_folder_errors(tmp_path):
    root = _folders(tmp_path)
    (root / "masks" / "dent" / "d0.bmp").unlink()
    _one_line(lambda: FolderDataset(None, root / "test", root / "masks", split="test"),
              "missing mask for defect image", "d0.png", "give no mask_dir if your data has no pixel masks")
    _one_line(lambda: FolderDataset(None, root / "test", split="train"), "normal_dir is required")
    _one_line(lambda: FolderDataset(root / "nowhere"), "normal_dir not found")
    _one_line(lambda: FolderDataset(root / "normal", split="test"), "test_dir is required")
    _one_line(lambda: FolderDataset(None, root / "normal", split="test"), "has no sub-folders", "good")
    _one_line(lambda: FolderDataset(root / "masks" / "scratch", root / "test", root / "no_masks"),
              "mask_dir not found")


def test_folder_masks_are_looked_up_per_defect_folder(tmp_path):
    """Two defects with images of the same name: each takes its own defect's mask, never the other's."""
    root = tmp_path / "own"
    for i in range(3):
        _save(_rgb(i), root / "normal" / f"n{i}.png")
    _save(_rgb(10), root / "test" / "good" / "g0.png")
    _save(_rgb(20), root / "test" / "scratch" / "000.png")
    _save(_rgb(21), root / "test" / "dent" / "000.png")
    _save(_box_mask(0), root / "masks" / "000.png")  # scratch's mask, written flat into mask_dir
    # Before, dent/000.png silently took this mask (mask_dir/000.png) and scratch too: one of them is wrong
    _one_line(lambda: FolderDataset(None, root / "test", root / "masks", split="test"),
              "no mask folder for defect 'dent'", str(root / "masks" / "dent"), "dent, scratch",
              "give no mask_dir if your data has no pixel masks")
    _save(_box_mask(0), root / "masks" / "scratch" / "000.png")
    _one_line(lambda: FolderDataset(None, root / "test", root / "masks", split="test"),
              "no mask folder for defect 'dent'")  # scratch has its folder now; dent still none
    _save(_box_mask(9), root / "masks" / "dent" / "000_mask.png")
    test = FolderDataset(None, root / "test", root / "masks", split="test", image_size=32, crop=None)
    assert test.defect_types == ["dent", "good", "scratch"]
    assert Path(test.mask_paths[0]) == root / "masks" / "dent" / "000_mask.png"
    assert Path(test.mask_paths[2]) == root / "masks" / "scratch" / "000.png"
    np.testing.assert_array_equal(test[0]["mask"].numpy(), _nearest(_box_mask(9) > 0, 32))
    # with a single defect folder, masks directly in mask_dir are unambiguous: accepted
    shutil.rmtree(root / "test" / "dent")
    single = FolderDataset(None, root / "test", root / "masks", split="test", image_size=32, crop=None)
    assert Path(single.mask_paths[1]) == root / "masks" / "scratch" / "000.png"
    shutil.rmtree(root / "masks" / "scratch")
    single = FolderDataset(None, root / "test", root / "masks", split="test", image_size=32, crop=None)
    assert Path(single.mask_paths[1]) == root / "masks" / "000.png"


def test_folder_only_good_images_names_the_test_dir(tmp_path, capsys):
    root = _folders(tmp_path)
    shutil.rmtree(root / "test" / "scratch")
    shutil.rmtree(root / "test" / "dent")
    text = _one_line(lambda: run_benchmark(preset("quick"), None, "mine", progress=False, dataset="folder",
                                           normal_dir=root / "normal", test_dir=root / "test"),
                     f"test_dir {root / 'test'}", "holds only normal images")
    assert "None" not in text


# --------------------------------------------------------------------------- #
# the factory
# --------------------------------------------------------------------------- #
def test_open_dataset_picks_the_loader(tmp_path, quick_root, quick_category, monkeypatch):
    stc = make_synthetic_stc(tmp_path / "stc", scenes=("05",), n_train_videos=1, n_test_clips=1,
                             frames_per_video=8, image_size=(64, 64))
    btad, visa, own = _btad(tmp_path / "btad"), _visa(tmp_path / "visa"), _folders(tmp_path / "own")
    cases = [
        (("mvtec", quick_root, quick_category), {}, MVTecDataset),
        (("rd-mvtec", quick_root, quick_category), {"seed": 2}, RdMVTecDataset),
        (("stc", stc, "05"), {"frames_per_video": 3}, STCDataset),
        (("btad", btad, "01"), {}, BTADDataset),
        (("visa", visa, "candle"), {}, VisADataset),
        (("folder", None, "mine"), {"normal_dir": own / "normal", "test_dir": own / "test"}, FolderDataset),
    ]
    assert [c[0][0] for c in cases] == list(DATASET_NAMES)
    for (name, root, cat), opts, cls in cases:
        ds = open_dataset(name, root, cat, "train", image_size=48, crop=40, **opts)
        assert type(ds) is cls and ds.out_size == 40 and ds[0]["image"].shape == (3, 40, 40)
        bilinear = open_dataset(name, root, cat, "train", image_size=48, crop=40, interpolation="bilinear", **opts)
        assert (ds.interpolation, bilinear.interpolation) == ("bicubic", "bilinear")
        assert not torch.equal(ds[0]["image"], bilinear[0]["image"]), name  # the images are resized that way
    assert open_dataset("rd-mvtec", quick_root, quick_category, crop=40, image_size=48, seed=2).seed == 2
    assert len(open_dataset("stc", stc, "05", frames_per_video=3, image_size=48, crop=None)) == 3
    _one_line(lambda: open_dataset("mvtec", quick_root, quick_category, seed=1), "seed", "dataset mvtec")
    _one_line(lambda: open_dataset("kitti", quick_root, quick_category), "unknown dataset 'kitti'", "rd-mvtec")
    monkeypatch.setenv("PADIM_DATA", str(tmp_path))
    assert default_root("btad") == tmp_path / "btad" and default_root("rd-mvtec") == tmp_path / "mvtec_ad"
    assert type(open_dataset("btad", None, "03", "test")) is BTADDataset


# --------------------------------------------------------------------------- #
# run_benchmark on every kind of dataset
# --------------------------------------------------------------------------- #
def test_benchmark_on_folders_matches_mvtec(quick_root, quick_category, capsys):
    cfg = preset("quick")
    cat = quick_root / quick_category
    ref = run_benchmark(cfg, quick_root, quick_category, progress=False)
    own = run_benchmark(cfg, None, quick_category, progress=False, dataset="folder",
                        normal_dir=cat / "train" / "good", test_dir=cat / "test", mask_dir=cat / "ground_truth")
    for key in ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro"):
        assert own[key] == pytest.approx(ref[key], abs=1e-9), key
    assert own["dataset"] == "folder" and ref["dataset"] == "mvtec"
    capsys.readouterr()
    bare = run_benchmark(cfg, None, quick_category, progress=False, dataset="folder",
                         normal_dir=cat / "train" / "good", test_dir=cat / "test")
    assert "pixel AUROC and AU-PRO skipped" in capsys.readouterr().out
    assert bare["pixel_auroc"] is None and bare["pixel_aupro"] is None
    assert bare["image_auroc"] == pytest.approx(ref["image_auroc"], abs=1e-9)
    assert "| n/a | n/a |" in markdown_row(bare)


def test_benchmark_on_rd_mvtec_stc_and_btad(tmp_path, quick_root, quick_category):
    cfg = preset("quick").replace(crop=56)
    rd = run_benchmark(cfg, quick_root, quick_category, progress=False, dataset="rd-mvtec", seed=1)
    assert rd["dataset"] == "rd-mvtec" and 0.0 <= rd["pixel_auroc"] <= 1.0 and rd["n_test"] > 0
    stc = make_synthetic_stc(tmp_path / "stc", scenes=("01",))
    record = run_benchmark(preset("quick"), stc, "01", progress=False, dataset="stc")
    # run_stc on the same data measured 0.84 frame AUROC, 0.96 pixel AUROC (tests/test_stc.py)
    assert record["frame_auroc"] == record["image_auroc"] > 0.7 and record["pixel_auroc"] > 0.75
    btad = _btad(tmp_path / "btad")
    record = run_benchmark(preset("quick").replace(image_size=32), btad, "01", progress=False, dataset="btad")
    assert record["n_train"] == 3 and record["n_test"] == 3
    _one_line(lambda: run_benchmark(preset("quick"), None, "x", progress=False, dataset="folder",
                                    normal_dir=quick_root / quick_category / "train" / "good",
                                    test_dir=quick_root / quick_category / "train"), "only normal images")
