"""The persistent batch loader (worker processes kept across passes) and the decoded-image cache."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from padim_utils.datasets import imagecache
from padim_utils.config import preset
from padim_utils.datasets.images import load_rgb, resample_filter, resize_crop, resize_crop_images
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.datasets.loader import BatchLoader
from padim_utils.model import Padim


class _Pids(Dataset):
    """Items that say which process made them."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise PadimError(f"cannot read image {i}.png: broken")
        return {"index": i, "pid": os.getpid()}


def _pids(loader, dataset):
    batches = list(loader(dataset))
    assert [int(i) for b in batches for i in b["index"]] == list(range(len(dataset)))  # all, in order
    return {int(p) for b in batches for p in b["pid"]}


def test_workers_outlive_a_pass_and_serve_other_datasets():
    loader = BatchLoader(batch_size=3, workers=2)
    try:
        first = _pids(loader, _Pids(10))
        assert os.getpid() not in first and 1 <= len(first) <= 2
        assert _pids(loader, _Pids(7)) | first == first  # another dataset: the same processes
        assert _pids(loader, _Pids(10)) | first == first
        assert len(loader(_Pids(10))) == 4
    finally:
        loader.close()


def test_a_worker_error_is_one_line_and_the_pool_goes_on():
    loader = BatchLoader(batch_size=2, workers=2)
    try:
        with pytest.raises(PadimError) as info:
            list(loader(_Pids(9, fail_at=5)))
        assert str(info.value) == "cannot read image 5.png: broken"  # no worker traceback around it
        assert _pids(loader, _Pids(6)) <= _pids(loader, _Pids(6))  # still serving, complete and in order
    finally:
        loader.close()


def test_an_abandoned_pass_leaves_the_next_one_whole():
    loader = BatchLoader(batch_size=2, workers=2)
    try:
        it = iter(loader(_Pids(20)))
        next(it)
        del it  # stopped after one batch, with more in flight
        _pids(loader, _Pids(11))
    finally:
        loader.close()


class _Unpicklable(_Pids):
    def __init__(self, n):
        super().__init__(n)
        self.fn = lambda x: x  # pickle refuses lambdas: the loader starts workers of its own


def test_a_dataset_that_cannot_be_pickled_still_loads():
    loader = BatchLoader(batch_size=4, workers=2)
    try:
        assert os.getpid() not in _pids(loader, _Unpicklable(9))
    finally:
        loader.close()


def test_close_removes_the_temporary_folder():
    loader = BatchLoader(batch_size=4, workers=1)
    list(loader(_Pids(5)))
    folder = loader._dir
    assert folder.is_dir()
    loader.close()
    assert not folder.exists()


def test_fit_and_predict_with_workers_equal_in_process_decoding(quick_root, quick_category):
    cfg = preset("quick").replace(device="cpu")
    kw = dict(geometry=cfg.geometry)
    train = MVTecDataset(quick_root, quick_category, "train", **kw)
    test = MVTecDataset(quick_root, quick_category, "test", **kw)
    plain = Padim(cfg).fit(train, progress=False)
    pooled = Padim(cfg, workers=2)  # what a GPU gets, here on the CPU
    assert plain.workers == 0 and pooled.workers == 2
    pooled.fit(train, progress=False)
    a, b = plain.predict_dataset(test, progress=False), pooled.predict_dataset(test, progress=False)
    assert torch.equal(plain.precision, pooled.precision)
    assert torch.equal(a["maps"], b["maps"]) and a["paths"] == b["paths"] and torch.equal(a["masks"], b["masks"])


# ---------------------------------------------------------------- resizing on the device
def _photo(width, height, seed=0):
    """A smooth picture with edges (resizing a noise image would test nothing typical)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([128 + 100 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    img[height // 3 : height // 2, width // 4 : width // 2] = rng.integers(0, 255, 3)  # a sharp block
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("crop", [None, 224])
@pytest.mark.parametrize("size,shrink", [((900, 900), True), ((700, 700), True), ((1024, 1024), True),
                                         ((200, 200), False), ((97, 120), False)])
def test_resize_on_the_device_equals_pil_within_one_grey_level(interpolation, crop, size, shrink):
    img = _photo(*size)
    want = np.asarray(resize_crop(img, 256, crop, resample_filter(interpolation))).astype(int)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8, CPU tensors
    got = resize_crop_images(x, 256, crop, interpolation)[0].permute(1, 2, 0).numpy().astype(int)
    diff = np.abs(got - want)
    if shrink:  # MVTec AD's case: 700-1024 px down to 256
        assert diff.max() <= 1 and diff.mean() < 0.15
    else:  # enlarging: PIL and torch round the cubic weights differently
        assert diff.max() <= 2 and diff.mean() < 0.3


def test_resize_on_device_fits_the_same_model(quick_root, quick_category):
    cfg = preset("quick").replace(device="cpu", image_size=48)  # the 64 px images get resized
    kw = dict(image_size=48, crop=None, interpolation=cfg.interpolation)
    train = MVTecDataset(quick_root, quick_category, "train", **kw)
    test = MVTecDataset(quick_root, quick_category, "test", **kw)
    on_load = Padim(cfg).fit(train, progress=False).predict_dataset(test, progress=False)
    model = Padim(cfg, resize_on_device=True)
    on_device = model.fit(train, progress=False).predict_dataset(test, progress=False)
    assert on_device["maps"].shape == on_load["maps"].shape == (len(test), 48, 48)
    assert train.resize_on_load  # the user's dataset is not changed
    # a grey level apart on 8 training images of tiny variance: maps 2 % apart (L2), the same detector
    assert float((on_device["maps"] - on_load["maps"]).norm() / on_load["maps"].norm()) < 0.05
    from padim_utils.metrics import pixel_auroc

    assert abs(pixel_auroc(on_device["masks"], on_device["maps"]) - pixel_auroc(on_load["masks"], on_load["maps"])) < 0.01


def test_images_of_several_sizes_cannot_be_batched_for_the_device(tmp_path):
    for i, size in enumerate([(70, 70), (80, 80)]):
        _photo(*size).save(tmp_path / f"{i}.png")
    from padim_utils.datasets.mvtec import ImageFolderDataset

    data = ImageFolderDataset(tmp_path, image_size=64, crop=None, interpolation="bilinear")
    model = Padim(preset("quick").replace(device="cpu"), resize_on_device=True)
    with pytest.raises(PadimError, match="differ in size"):
        list(model.loader(data))


# ---------------------------------------------------------------- the decoded-image cache
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADIM_CACHE", "")  # restored after the test, whatever set_cache_dir did
    imagecache.set_cache_dir(tmp_path / "cache")
    return tmp_path / "cache"


def _decodes(monkeypatch):
    """Count calls of the decoder behind every dataset."""
    from padim_utils.datasets import images as data

    calls = []
    real = data.load_rgb
    monkeypatch.setattr(data, "load_rgb", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def _copy_category(quick_root, quick_category, dst):
    shutil.copytree(quick_root / quick_category, dst / quick_category)
    return dst


def test_cache_serves_the_same_pixels_without_decoding(cache, quick_root, quick_category, tmp_path, monkeypatch):
    kw = dict(image_size=56, crop=48, interpolation="bicubic")
    imagecache.set_cache_dir(None)
    plain = [MVTecDataset(quick_root, quick_category, "test", **kw)[i] for i in range(5)]
    imagecache.set_cache_dir(cache)
    calls = _decodes(monkeypatch)
    first = [MVTecDataset(quick_root, quick_category, "test", **kw)[i] for i in range(5)]
    n_first = len(calls)
    assert n_first >= 5  # images (and masks, never cached) decoded once
    again = [MVTecDataset(quick_root, quick_category, "test", **kw)[i] for i in range(5)]
    assert [c for c in calls[n_first:] if "ground_truth" not in str(c)] == []  # no image decoded again
    for a, b, c in zip(plain, first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
        assert torch.equal(a["mask"], c["mask"])
    # the same content under another path is the same entry
    other = _copy_category(quick_root, quick_category, tmp_path / "copy")
    before = len(calls)
    MVTecDataset(other, quick_category, "test", **kw)[0]
    assert [c for c in calls[before:] if "ground_truth" not in str(c)] == []


def test_cache_is_keyed_by_content_not_by_name_size_or_time(cache, quick_root, quick_category, tmp_path):
    root = _copy_category(quick_root, quick_category, tmp_path / "data")
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    data = MVTecDataset(root, quick_category, "train", **kw)
    path = data.paths[0]
    old = data[0]["image"]
    stat = os.stat(path)
    img = np.array(load_rgb(path))
    img[:8, :8] = 255 - img[:8, :8]  # a defect painted in place: same name, same size on disk?
    Image.fromarray(img).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old modification time
    new = MVTecDataset(root, quick_category, "train", **kw)[0]["image"]
    assert not torch.equal(new, old)
    imagecache.set_cache_dir(None)
    assert torch.equal(new, MVTecDataset(root, quick_category, "train", **kw)[0]["image"])  # a fresh decode


def test_cache_entries_are_per_geometry(cache, quick_root, quick_category):
    a = MVTecDataset(quick_root, quick_category, "train", image_size=56, crop=None, interpolation="bilinear")[0]
    b = MVTecDataset(quick_root, quick_category, "train", image_size=56, crop=None, interpolation="bicubic")[0]
    c = MVTecDataset(quick_root, quick_category, "train", image_size=56, crop=48, interpolation="bicubic")[0]
    assert a["image"].shape == b["image"].shape == (3, 56, 56) and c["image"].shape == (3, 48, 48)
    assert not torch.equal(a["image"], b["image"])
    assert len(list(cache.rglob("*.u8"))) == 3


def test_a_damaged_entry_is_decoded_again(cache, quick_root, quick_category):
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    want = MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"]
    (entry,) = cache.rglob("*.u8")
    whole = entry.stat().st_size
    assert whole > 3 * 64 * 64
    entry.write_bytes(entry.read_bytes()[:-100])  # cut short, as by a full disk
    assert torch.equal(MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"], want)
    assert entry.stat().st_size == whole  # rewritten whole
    entry.write_bytes(b"garbage" * 2000)
    assert torch.equal(MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"], want)


@pytest.mark.parametrize("damage", ["pixels zeroed", "one pixel changed", "width in the header changed"])
def test_an_entry_overwritten_at_its_length_is_decoded_again(cache, quick_root, quick_category, damage):
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    want = MVTecDataset(quick_root, quick_category, "train", **kw)[0]
    (entry,) = cache.rglob("*.u8")
    raw = bytearray(entry.read_bytes())
    pixels = len(raw) - 3 * 64 * 64  # where the pixels start: the header is whatever precedes them
    if damage == "pixels zeroed":
        raw[pixels:] = bytes(3 * 64 * 64)  # an all-black image, the header intact
    elif damage == "one pixel changed":
        raw[-1] ^= 0x01
    else:
        raw[4] ^= 0x01  # the original width, read back for the mask size check
    entry.write_bytes(bytes(raw))
    got = MVTecDataset(quick_root, quick_category, "train", **kw)[0]
    assert torch.equal(got["image"], want["image"]) and got["image"].float().mean() > 10
    assert entry.read_bytes() != bytes(raw)  # and the entry rewritten


def test_another_entry_copied_over_one_is_decoded_again(cache, quick_root, quick_category):
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    data = MVTecDataset(quick_root, quick_category, "train", **kw)
    first = data[0]["image"]
    (a,) = cache.rglob("*.u8")
    second = data[1]["image"]
    (b,) = set(cache.rglob("*.u8")) - {a}
    assert not torch.equal(first, second)
    a.write_bytes(b.read_bytes())  # a whole, well-formed entry, of another image
    assert torch.equal(MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"], first)


def test_the_cache_decodes_the_bytes_it_keyed(cache, quick_root, quick_category, tmp_path, monkeypatch):
    """A file that changes between the read the key is computed from and the decoding."""
    from padim_utils.datasets import images as data

    root = _copy_category(quick_root, quick_category, tmp_path / "data")
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    path = Path(MVTecDataset(root, quick_category, "train", **kw).paths[0])
    first = path.read_bytes()
    other = np.array(load_rgb(path))
    other[:16] = 0  # the same file with its top quarter black
    real = data.load_rgb

    def rewritten_meanwhile(p, *a, **k):
        if Path(p) == path:
            Image.fromarray(other).save(path)  # another writer, between the cache's read and the decoding
        return real(p, *a, **k)

    monkeypatch.setattr(data, "load_rgb", rewritten_meanwhile)
    got = MVTecDataset(root, quick_category, "train", **kw)[0]["image"]
    monkeypatch.setattr(data, "load_rgb", real)
    path.write_bytes(first)  # the first content back: its entry must hold its pixels
    again = MVTecDataset(root, quick_category, "train", **kw)[0]["image"]
    imagecache.set_cache_dir(None)
    fresh = MVTecDataset(root, quick_category, "train", **kw)[0]["image"]
    assert torch.equal(got, fresh) and torch.equal(again, fresh)


def test_an_unwritable_cache_costs_speed_not_results(tmp_path, quick_root, quick_category, monkeypatch):
    monkeypatch.setenv("PADIM_CACHE", "")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    imagecache.set_cache_dir(blocker / "cache")  # cannot be created
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    got = MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"]
    imagecache.set_cache_dir(None)
    assert torch.equal(got, MVTecDataset(quick_root, quick_category, "train", **kw)[0]["image"])


def test_loader_workers_use_the_cache(cache, quick_root, quick_category):
    kw = dict(image_size=64, crop=None, interpolation="bilinear")
    data = MVTecDataset(quick_root, quick_category, "train", **kw)
    loader = BatchLoader(batch_size=4, workers=2)
    try:
        images = torch.cat([b["image"] for b in loader(data)])
    finally:
        loader.close()
    assert len(list(cache.rglob("*.u8"))) == len(data)  # written by the workers, which inherit PADIM_CACHE
    assert torch.equal(images, torch.stack([data[i]["image"] for i in range(len(data))]))


def test_cli_cache_option(quick_root, quick_category, tmp_path, capsys, monkeypatch):
    import json

    from padim_utils.cli import main

    monkeypatch.setenv("PADIM_CACHE", "")
    quick = ["--config", "quick", "--device", "cpu", "--stats-dtype", "float32"]
    out = tmp_path / "a.json"
    argv = ["benchmark", "--root", str(quick_root), "--category", quick_category, *quick, "--cache",
            str(tmp_path / "cache")]
    assert main([*argv, "--out", str(out)]) == 0
    n_images = len(MVTecDataset(quick_root, quick_category, "train", image_size=64, crop=None)) + \
        len(MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None))
    assert len(list((tmp_path / "cache").rglob("*.u8"))) == n_images
    assert json.loads(out.read_text())["config"]["stats_dtype"] == "float32"
    assert main([*argv, "--out", str(tmp_path / "b.json")]) == 0  # from the cache: the same numbers
    a, b = json.loads(out.read_text()), json.loads((tmp_path / "b.json").read_text())
    assert all(a[k] == b[k] for k in ("image_auroc", "pixel_auroc", "pixel_aupro"))
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["benchmark", "--root", str(quick_root), "--category", quick_category, *quick, "--cache",
                 str(tmp_path / "file"), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: --cache") and "not a folder" in err and "\n" not in err
