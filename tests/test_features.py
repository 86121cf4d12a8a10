"""The feature cache gives exactly the fit and the maps of the full pipeline, without the backbone."""

import dataclasses
import json
import re

import pytest
import torch

from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.experiments.features import FeatureCache
from padim_utils.model import Padim


@pytest.fixture(scope="module")
def cfg():
    return preset("quick").replace(d=10, batch_size=3)


@pytest.fixture(scope="module")
def sets(quick_root, quick_category, cfg):
    kw = dict(geometry=cfg.geometry)
    return (MVTecDataset(quick_root, quick_category, "train", **kw),
            MVTecDataset(quick_root, quick_category, "test", **kw))


@pytest.fixture(scope="module")
def caches(sets, cfg):
    return tuple(FeatureCache.compute(s, cfg, progress=False) for s in sets)


def test_cache_holds_every_layer_and_item(caches, sets):
    train_c, test_c = caches
    train, test = sets
    assert len(train_c) == len(train) and len(test_c) == len(test)
    assert train_c.channels == [24, 40, 112] and train_c.grid == (16, 16)  # Lite0 blocks 1, 2, 4 at 64 px
    assert [tuple(f.shape[-2:]) for f in train_c.layers] == [(16, 16), (8, 8), (4, 4)]
    assert test_c.labels.tolist() == test.labels and test_c.paths == test.paths
    assert test_c.defect_types == test.defect_types
    assert torch.equal(test_c.masks[3], test[3]["mask"])
    assert train_c.embeddings().shape == (len(train), 176, 16, 16)


@pytest.mark.parametrize("reduction", ["random", "pca", "none"])
def test_fit_and_predict_from_cache_equal_the_pipeline(caches, sets, cfg, reduction):
    c = cfg.replace(reduction=reduction)
    direct = Padim(c).fit(sets[0], progress=False)
    cached = Padim(c).fit(caches[0], progress=False)
    torch.testing.assert_close(cached.mean, direct.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.precision, direct.precision, rtol=1e-4, atol=1e-4)
    a = direct.predict_dataset(sets[1], progress=False)
    b = cached.predict_dataset(caches[1], progress=False)
    torch.testing.assert_close(b["maps"], a["maps"], rtol=1e-4, atol=1e-4)
    assert torch.equal(b["labels"], a["labels"]) and torch.equal(b["masks"], a["masks"])


def _without_meta(src, dst, *keys, tensors=None, **changed):
    """A copy of a cache file without the metadata `keys`, with `changed` metadata and `tensors` replaced."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in keys}
    save_file({**load_file(str(src)), **(tensors or {})}, str(dst), metadata={**meta, **changed})
    return dst


def test_save_load_round_trip(caches, tmp_path):
    path = caches[1].save(tmp_path / "c.safetensors")
    back = FeatureCache.load(path)
    assert all(torch.equal(x, y) for x, y in zip(back.layers, caches[1].layers))
    assert back.paths == caches[1].paths and torch.equal(back.masks, caches[1].masks)
    assert (back.backbone, back.layer_names, back.out_size) == (caches[1].backbone, caches[1].layer_names, 64)
    sub = back.subset(slice(2, 5))
    assert len(sub) == 3 and sub.paths == caches[1].paths[2:5]
    assert caches[1].interpolation == back.interpolation == sub.interpolation == "bilinear"  # the quick preset's
    bicubic = dataclasses.replace(caches[1], interpolation="bicubic")
    assert FeatureCache.load(bicubic.save(tmp_path / "b.safetensors")).interpolation == "bicubic"
    old = _without_meta(path, tmp_path / "old.safetensors", "interpolation", "geometry", "checksum")
    assert FeatureCache.load(old).interpolation == "bilinear"  # caches from before the field: bilinear
    assert (back.image_size, back.crop, FeatureCache.load(old).image_size) == (64, None, None)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(PadimError, match="not a readable feature cache"):
        FeatureCache.load(tmp_path / "bad.safetensors")


def test_a_cache_refuses_another_backbone_or_size(caches, cfg):
    with pytest.raises(PadimError, match="holds efficientnet_lite0"):
        Padim(cfg.replace(layers=("blocks.1", "blocks.2"))).fit(caches[0], progress=False)
    with pytest.raises(PadimError, match="computed on 64px"):
        Padim(cfg.replace(image_size=96)).fit(caches[0], progress=False)
    with pytest.raises(PadimError, match="computed on images resized bilinear but the config says "
                                         "interpolation='bicubic'"):
        Padim(cfg.replace(interpolation="bicubic")).fit(caches[0], progress=False)


def test_a_cache_refuses_another_resize_or_crop(quick_root, quick_category, cfg, tmp_path):
    # 128 px cropped to 64: the same 64 px images by size and interpolation, other pixels
    other = cfg.replace(image_size=128, crop=64)
    data = MVTecDataset(quick_root, quick_category, "train", geometry=other.geometry)
    cache = FeatureCache.compute(data, other, progress=False)
    back = FeatureCache.load(cache.save(tmp_path / "c.safetensors"))
    assert (back.image_size, back.crop) == (128, 64)
    for c in (cache, back, back.subset(slice(0, 4))):
        with pytest.raises(PadimError, match=re.escape("the feature cache was computed on images of Geometry(image_size="
                                                       "128, crop=64, interpolation='bilinear') but the config's "
                                                       "geometry is Geometry(image_size=64, crop=None")):
            Padim(cfg).fit(c, progress=False)
    Padim(other).fit(back, progress=False)  # its own geometry fits


def test_a_damaged_cache_file_is_refused(caches, tmp_path):
    path = caches[0].save(tmp_path / "c.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one byte of the last tensor, in place: safetensors reads it without complaint
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(raw))
    zeroed = caches[0].layers[0].contiguous().clone()
    zeroed[0] = 0
    renamed = _without_meta(path, tmp_path / "renamed.safetensors", paths=json.dumps(["x.png"] * len(caches[0])))
    for bad in (damaged, _without_meta(path, tmp_path / "zeroed.safetensors", tensors={"layer0": zeroed}), renamed):
        with pytest.raises(PadimError, match="checksum differs from its content: the file is damaged") as info:
            FeatureCache.load(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert torch.equal(FeatureCache.load(path).layers[0], caches[0].layers[0])


def test_evaluate_cached_equals_the_benchmark_metrics(caches, sets, cfg):
    from padim_utils.metrics import evaluate
    from padim_utils.experiments.benchmark import evaluate_cached

    out = evaluate_cached(cfg, *caches)
    model = Padim(cfg).fit(sets[0], progress=False)
    res = model.predict_dataset(sets[1], progress=False)
    ref = evaluate(res["labels"], res["scores"], res["masks"], res["maps"])
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert out[key] == pytest.approx(ref[key], abs=1e-4)
    assert out["d"] == 10 and out["result"]["maps"].shape == res["maps"].shape
