"""Tests for padim_utils.datasets.mvtec and .images: MVTec-layout loading, geometry, odd inputs, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from padim_utils.config import Geometry
from padim_utils.datasets.images import IMAGE_EXTENSIONS, collate, crop_offset, load_mask, load_rgb
from padim_utils.datasets.mvtec import ImageFolderDataset, MVTecDataset, data_home, list_categories
from padim_utils.datasets.registry import open_dataset
from padim_utils.errors import PadimError

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad"


# --------------------------------------------------------------------------- #
# fixtures: a tiny synthetic dataset and hand-made layouts
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def syn_root(tmp_path_factory) -> Path:
    from padim_utils.datasets.synthetic import make_synthetic_mvtec

    return make_synthetic_mvtec(
        tmp_path_factory.mktemp("data_syn"),
        image_size=64,
        n_train=5,
        n_test_good=3,
        n_test_defect_per_type=2,
        seed=1,
    )


def _save(arr: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _layout(root: Path, category: str = "widget", with_masks: bool = True) -> Path:
    """A minimal hand-made MVTec category: 2 train, 1 good + 2 'dent' test images."""
    cat = root / category
    for i in range(2):
        _save(_rgb(40, 40, i), cat / "train" / "good" / f"{i:03d}.png")
    _save(_rgb(40, 40, 10), cat / "test" / "good" / "000.png")
    for i in range(2):
        _save(_rgb(40, 40, 20 + i), cat / "test" / "dent" / f"{i:03d}.png")
        if with_masks:
            m = np.zeros((40, 40), np.uint8)
            m[10:20, 5 + i : 15 + i] = 255
            _save(m, cat / "ground_truth" / "dent" / f"{i:03d}_mask.png")
    return root


def _geometry_reference(img: Image.Image, image_size: int, crop: int | None, resample) -> np.ndarray:
    """Independent computation: PIL square resize, then numpy slicing."""
    arr = np.asarray(img.resize((image_size, image_size), resample))
    if crop is None:
        return arr
    off = int(round((image_size - crop) / 2.0))
    return arr[off : off + crop, off : off + crop]


# --------------------------------------------------------------------------- #
# loading the synthetic data
# --------------------------------------------------------------------------- #
def test_synthetic_layout_counts_shapes_and_labels(syn_root):
    cats = list_categories(syn_root)
    assert cats == ["bottle_syn", "carpet_syn"]
    from padim_utils.datasets.synthetic import defect_types

    for cat in cats:
        train = MVTecDataset(syn_root, cat, "train", image_size=64, crop=56)
        test = MVTecDataset(syn_root, cat, "test", image_size=64, crop=56)
        n_def = len(defect_types(cat))
        assert len(train) == 5 and len(test) == 3 + 2 * n_def
        assert train.out_size == 56 and (train.image_size, train.crop) == (64, 56)
        assert set(train.labels) == {0} and set(train.defect_types) == {"good"}
        assert test.labels.count(0) == 3 and test.labels.count(1) == 2 * n_def
        # deterministic order: defect type, then file name
        keys = [(d, Path(p).name) for d, p in zip(test.defect_types, test.paths)]
        assert keys == sorted(keys)
        for ds in (train, test):
            for i in range(len(ds)):
                item = ds[i]
                assert set(item) == {"image", "mask", "label", "defect_type", "path"}
                assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 56, 56)
                assert item["mask"].dtype == torch.uint8 and item["mask"].shape == (56, 56)
                assert isinstance(item["label"], int) and isinstance(item["defect_type"], str)
                assert set(item["mask"].unique().tolist()) <= {0, 1}
                if item["label"] == 1:
                    assert item["defect_type"] != "good" and item["mask"].sum() > 0
                else:
                    assert item["defect_type"] == "good" and item["mask"].sum() == 0
                assert item["path"] == ds.paths[i]


def test_no_crop_gives_image_size(syn_root):
    ds = MVTecDataset(syn_root, "carpet_syn", "test", image_size=48, crop=None)
    item = ds[len(ds) - 1]
    assert ds.out_size == 48
    assert item["image"].shape == (3, 48, 48) and item["mask"].shape == (48, 48)


def test_collate_and_dataloader(syn_root):
    ds = MVTecDataset(syn_root, "bottle_syn", "test", image_size=64, crop=56)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 56, 56) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (4, 56, 56)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == ds.labels[:4]
    assert batch["defect_type"] == ds.defect_types[:4] and batch["path"] == ds.paths[:4]
    with pytest.raises(ValueError):
        collate([])


# --------------------------------------------------------------------------- #
# geometry
# --------------------------------------------------------------------------- #
def test_center_crop_offset_is_exact(tmp_path):
    # R encodes the column, G the row: the crop's first pixel tells the offset
    yy, xx = np.mgrid[0:256, 0:256]
    arr = np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)
    _save(arr, tmp_path / "c" / "train" / "good" / "a.png")
    item = MVTecDataset(tmp_path, "c", "train", image_size=256, crop=224)[0]
    img = item["image"].numpy()
    assert crop_offset(256, 224) == 16
    assert (img[0] == np.arange(16, 240)[None, :]).all()  # columns 16..239
    assert (img[1] == np.arange(16, 240)[:, None]).all()  # rows 16..239
    assert (img[2] == 7).all()


@pytest.mark.parametrize("interpolation, pil_filter", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
@pytest.mark.parametrize(
    "size,image_size,crop",
    [((300, 200), 256, 224), ((123, 97), 255, 224), ((64, 64), 64, None), ((50, 80), 100, 99), ((256, 256), 256, 256)],
)
def test_geometry_matches_independent_reference(tmp_path, size, image_size, crop, interpolation, pil_filter):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255) // max(w - 1, 1), (yy * 255) // max(h - 1, 1), ((xx // 5 + yy // 5) % 2) * 255], -1)
    src = _save(arr.astype(np.uint8), tmp_path / "img.png")
    ref = _geometry_reference(Image.open(src).convert("RGB"), image_size, crop, pil_filter)
    ds = ImageFolderDataset(src, image_size=image_size, crop=crop, interpolation=interpolation)
    got = ds[0]["image"].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, ref)
    # and the same as torchvision's Resize((s, s)) + CenterCrop(c) on PIL images
    import torchvision.transforms.functional as TF

    mode = TF.InterpolationMode.BICUBIC if interpolation == "bicubic" else TF.InterpolationMode.BILINEAR
    tv = TF.resize(Image.open(src).convert("RGB"), [image_size, image_size], mode)
    if crop is not None:
        tv = TF.center_crop(tv, [crop, crop])
    np.testing.assert_array_equal(got, np.asarray(tv))


def test_bicubic_and_bilinear_images_differ_and_bicubic_is_the_default(tmp_path):
    src = _save(_rgb(97, 123, seed=3), tmp_path / "c" / "train" / "good" / "a.png")
    images = {i: MVTecDataset(tmp_path, "c", "train", image_size=64, crop=56, interpolation=i)[0]["image"]
              for i in ("bicubic", "bilinear")}
    assert (images["bicubic"].int() - images["bilinear"].int()).abs().max() > 10
    default = MVTecDataset(tmp_path, "c", "train", image_size=64, crop=56)
    assert default.interpolation == "bicubic" and torch.equal(default[0]["image"], images["bicubic"])
    assert ImageFolderDataset(src).interpolation == "bicubic"


def test_mask_nearest_resize_keeps_binary_values(tmp_path):
    root = tmp_path
    _save(_rgb(300, 300), root / "m" / "test" / "bad" / "x.png")
    rng = np.random.default_rng(3)
    mask = (rng.random((300, 300)) < 0.3).astype(np.uint8) * rng.choice([1, 128, 255], size=(300, 300)).astype(
        np.uint8
    )
    _save(mask, root / "m" / "ground_truth" / "bad" / "x_mask.png")
    item = MVTecDataset(root, "m", "test", image_size=256, crop=224)[0]
    got = item["mask"].numpy()
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    binary = Image.fromarray((mask > 0).astype(np.uint8))
    np.testing.assert_array_equal(got, _geometry_reference(binary, 256, 224, Image.NEAREST))
    assert item["label"] == 1 and item["defect_type"] == "bad"


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "I;16"])
def test_mask_modes_binarised(tmp_path, mode):
    arr = np.zeros((20, 20), np.uint8)
    arr[5:10, 5:10] = 200
    p = tmp_path / f"m_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(arr.astype(np.uint16) * 100).save(p)
    elif mode == "1":
        Image.fromarray(arr).convert("1", dither=Image.Dither.NONE).save(p)
    else:
        Image.fromarray(arr).convert(mode).save(p)
    m = np.asarray(load_mask(p))
    np.testing.assert_array_equal(m, (arr > 0).astype(np.uint8))


# --------------------------------------------------------------------------- #
# odd image modes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "mode,ext", [("L", "png"), ("RGBA", "png"), ("LA", "png"), ("P", "png"), ("1", "png"), ("CMYK", "jpg"),
                 ("RGB", "bmp"), ("RGB", "tif")]
)
def test_odd_modes_load_as_rgb_uint8(tmp_path, mode, ext):
    base = _rgb(33, 47, seed=5)
    p = tmp_path / f"img.{ext}"
    Image.fromarray(base).convert(mode).save(p)
    item = ImageFolderDataset(p, image_size=33, crop=None, interpolation="bilinear")[0]
    img = item["image"]
    assert img.dtype == torch.uint8 and img.shape == (3, 33, 33)
    if mode == "L":
        grey = np.asarray(Image.fromarray(base).convert("L"))
        for c in range(3):
            np.testing.assert_array_equal(img[c].numpy()[:, :33], np.asarray(Image.fromarray(grey).resize((33, 33),
                                                                                                         Image.BILINEAR)))
    if mode == "RGBA":  # alpha dropped, colours kept
        np.testing.assert_array_equal(
            img.permute(1, 2, 0).numpy(), np.asarray(Image.fromarray(base).resize((33, 33), Image.BILINEAR))
        )


def test_sixteen_bit_grey_scaled_to_eight_bit(tmp_path):
    vals = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(vals).save(p)
    assert Image.open(p).mode.startswith("I")
    img = load_rgb(p)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img)[..., 0], [[0, 100], [255, 7]])
    np.testing.assert_array_equal(np.asarray(img)[..., 0], np.asarray(img)[..., 2])
    # 32-bit "I" holding 16-bit values behaves the same
    img32 = Image.fromarray(vals.astype(np.int32))
    p32 = tmp_path / "g32.tif"
    img32.save(p32)
    np.testing.assert_array_equal(np.asarray(load_rgb(p32))[..., 1], [[0, 100], [255, 7]])


# --------------------------------------------------------------------------- #
# malformed folders and files
# --------------------------------------------------------------------------- #
def test_unknown_split(tmp_path):
    _layout(tmp_path)
    with pytest.raises(PadimError, match=r"unknown split 'val'.*'train' or 'test'"):
        MVTecDataset(tmp_path, "widget", "val")


def test_missing_root(tmp_path):
    with pytest.raises(PadimError, match="root folder not found") as e:
        MVTecDataset(tmp_path / "nope", "widget")
    assert str(tmp_path / "nope") in str(e.value)


def test_missing_category_lists_available(tmp_path):
    _layout(tmp_path, "widget")
    _layout(tmp_path, "gadget")
    (tmp_path / "not_a_category").mkdir()
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(PadimError) as e:
        MVTecDataset(tmp_path, "bottle", "train")
    msg = str(e.value)
    assert "'bottle'" in msg and str(tmp_path) in msg
    assert "available categories: gadget, widget" in msg
    assert "\n" not in msg
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(PadimError, match="available categories: none"):
        MVTecDataset(empty, "bottle")


def test_missing_train_good_and_test(tmp_path):
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(PadimError, match="missing folder .*train.good"):
        MVTecDataset(tmp_path, "c", "train")
    with pytest.raises(PadimError, match=r"missing folder .*c.test"):
        MVTecDataset(tmp_path, "c", "test")


def test_empty_splits(tmp_path):
    (tmp_path / "c" / "train" / "good").mkdir(parents=True)
    (tmp_path / "c" / "train" / "good" / "notes.txt").write_text("not an image")
    (tmp_path / "c" / "test" / "good").mkdir(parents=True)
    with pytest.raises(PadimError, match=r"no images in .*train.good"):
        MVTecDataset(tmp_path, "c", "train")
    with pytest.raises(PadimError, match=r"no images in .*c.test"):
        MVTecDataset(tmp_path, "c", "test")


def test_missing_mask_names_image_and_expected_mask(tmp_path):
    _layout(tmp_path, with_masks=True)
    (tmp_path / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(PadimError) as e:
        MVTecDataset(tmp_path, "widget", "test")
    msg = str(e.value)
    assert str(tmp_path / "widget" / "test" / "dent" / "001.png") in msg
    assert str(tmp_path / "widget" / "ground_truth" / "dent" / "001_mask.png") in msg
    assert "\n" not in msg
    # the train split does not need masks
    assert len(MVTecDataset(tmp_path, "widget", "train")) == 2


def test_mask_size_mismatch(tmp_path):
    _layout(tmp_path)
    _save(np.full((20, 20), 255, np.uint8), tmp_path / "widget" / "ground_truth" / "dent" / "000_mask.png")
    ds = MVTecDataset(tmp_path, "widget", "test")
    with pytest.raises(PadimError, match=r"000_mask.png is 20x20 but its image .*000.png is 40x40"):
        ds[ds.defect_types.index("dent")]


@pytest.mark.parametrize("content", [b"", b"this is not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image_raises_naming_file(tmp_path, content):
    _layout(tmp_path)
    bad = tmp_path / "widget" / "train" / "good" / "001.png"
    bad.write_bytes(content)
    ds = MVTecDataset(tmp_path, "widget", "train")  # layout is fine; decoding fails
    ds[0]
    with pytest.raises(PadimError) as e:
        ds[1]
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_truncated_png_raises(tmp_path):
    p = _save(_rgb(64, 64), tmp_path / "t.png")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(PadimError, match="t.png"):
        ImageFolderDataset(p)[0]


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 0}, "image_size"), ({"image_size": 32.0}, "image_size"), ({"crop": 300}, "crop"),
    ({"crop": 0}, "crop"), ({"image_size": True}, "image_size"),
    ({"interpolation": "nearest"}, "^interpolation must be one of bicubic, bilinear, got 'nearest'$"),
])
def test_bad_geometry_options(tmp_path, kwargs, match):
    _layout(tmp_path)
    with pytest.raises(PadimError, match=match):
        MVTecDataset(tmp_path, "widget", "train", **kwargs)


def test_geometry_keyword_is_the_same_as_the_three_keywords(tmp_path):
    """`geometry=cfg.geometry` builds what `image_size=, crop=, interpolation=` build; both at once must agree."""
    _layout(tmp_path)
    geometry = Geometry(64, 48, "bilinear")
    by_keywords = MVTecDataset(tmp_path, "widget", "test", image_size=64, crop=48, interpolation="bilinear")
    by_geometry = MVTecDataset(tmp_path, "widget", "test", geometry=geometry)
    assert by_geometry.geometry == by_keywords.geometry == geometry and repr(by_geometry) == repr(by_keywords)
    assert (by_geometry.image_size, by_geometry.crop, by_geometry.interpolation, by_geometry.out_size) == (64, 48,
                                                                                                         "bilinear", 48)
    for a, b in zip(by_geometry, by_keywords):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert MVTecDataset(tmp_path, "widget", "test", crop=48, geometry=geometry).geometry == geometry  # agrees
    with pytest.raises(PadimError, match="give the geometry either as geometry= or as .* but crop=None"):
        MVTecDataset(tmp_path, "widget", "test", crop=None, geometry=geometry)
    with pytest.raises(PadimError, match="geometry must be a padim_utils.config.Geometry, got dict"):
        ImageFolderDataset(tmp_path, geometry={"image_size": 64})
    assert open_dataset("mvtec", tmp_path, "widget", "test", geometry=geometry).geometry == geometry
    stc_like = Geometry(64, None)  # open_dataset's own crop=224 default does not clash with the geometry's
    assert open_dataset("folder", None, "", "train", normal_dir=tmp_path / "widget" / "train" / "good",
                        geometry=stc_like).out_size == 64


def test_hidden_files_and_extensions(tmp_path):
    good = tmp_path / "c" / "train" / "good"
    _save(_rgb(8, 8), good / "b.PNG")
    _save(_rgb(8, 8), good / "a.jpeg")
    _save(_rgb(8, 8), good / ".hidden.png")
    (good / "Thumbs.db").write_bytes(b"x")
    (good / "sub.png").mkdir()  # a folder named like an image is not an image
    ds = MVTecDataset(tmp_path, "c", "train", image_size=32, crop=None)
    assert [Path(p).name for p in ds.paths] == ["a.jpeg", "b.PNG"]


# --------------------------------------------------------------------------- #
# ImageFolderDataset, data_home
# --------------------------------------------------------------------------- #
def test_image_folder_dataset_dir_and_file(tmp_path):
    d = tmp_path / "mine"
    _save(_rgb(30, 50, 1), d / "z.JPG")
    _save(_rgb(30, 50, 2), d / "a.png")
    _save(_rgb(30, 50, 3), d / "m.tiff")
    _save(_rgb(30, 50, 4), d / "nested" / "n.png")
    (d / "readme.txt").write_text("hi")
    ds = ImageFolderDataset(d, image_size=40, crop=32)
    assert [Path(p).name for p in ds.paths] == ["a.png", "m.tiff", "z.JPG"]
    assert ds.labels == [-1, -1, -1] and len(ds) == 3 and ds.out_size == 32
    item = ds[2]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (32, 32) and item["mask"].sum() == 0
    assert item["label"] == -1 and item["path"] == str(d / "z.JPG")
    assert len(ImageFolderDataset(d, recursive=True)) == 4
    one = ImageFolderDataset(d / "m.tiff", image_size=32, crop=None)
    assert len(one) == 1 and one[0]["image"].shape == (3, 32, 32)
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["label"].tolist() == [-1, -1]


def test_image_folder_dataset_errors(tmp_path):
    with pytest.raises(PadimError, match="input path not found"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PadimError, match=r"no images in .*empty"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PadimError, match=r"not an image file: .*notes.txt"):
        ImageFolderDataset(tmp_path / "notes.txt")
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


def test_image_folder_applies_exif_orientation(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    p = tmp_path / "phone.jpg"
    img.save(p, exif=exif.tobytes())
    item = ImageFolderDataset(p, image_size=32, crop=None)[0]
    assert item["image"].shape == (3, 32, 32)
    assert load_rgb(p, exif_transpose=True).size == (10, 20)


def test_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PADIM_DATA", str(tmp_path / "elsewhere"))
    assert data_home() == tmp_path / "elsewhere"
    monkeypatch.delenv("PADIM_DATA")
    monkeypatch.chdir(tmp_path)
    assert data_home() == tmp_path / "data"
    assert data_home().is_absolute()


# --------------------------------------------------------------------------- #
# the real MVTec AD bottle category (when the shared copy exists)
# --------------------------------------------------------------------------- #
def test_real_mvtec_bottle():
    if not (REAL_ROOT / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD bottle not found at {REAL_ROOT / 'bottle'} (../shared/data/mvtec_ad)")
    test = MVTecDataset(REAL_ROOT, "bottle", "test")
    train = MVTecDataset(REAL_ROOT, "bottle", "train")
    assert len(test) == 83 and len(train) == 209
    assert sorted(set(test.defect_types)) == ["broken_large", "broken_small", "contamination", "good"]
    assert test.labels.count(0) == 20 and test.labels.count(1) == 63
    for label, mask_path in zip(test.labels, test.mask_paths):
        assert (mask_path is not None) == (label == 1)
        if mask_path is not None:
            assert Path(mask_path).is_file()
    for i in range(len(test)):
        item = test[i]
        assert item["image"].shape == (3, 224, 224)
        assert (item["mask"].sum() > 0) == (item["label"] == 1)
    assert train[0]["image"].shape == (3, 224, 224)
