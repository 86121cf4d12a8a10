"""Padim end to end on the embedded data: the fit against numpy, save/load, errors."""

import copy
import json
import re

import numpy as np
import pytest
import torch

from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.model import Padim


@pytest.fixture(scope="module")
def cfg():
    return preset("quick").replace(d=12, batch_size=3)


@pytest.fixture(scope="module")
def train(quick_root, quick_category, cfg):
    return MVTecDataset(quick_root, quick_category, "train", geometry=cfg.geometry)


@pytest.fixture(scope="module")
def test_set(quick_root, quick_category, cfg):
    return MVTecDataset(quick_root, quick_category, "test", geometry=cfg.geometry)


@pytest.fixture(scope="module")
def fitted(cfg, train):
    return Padim(cfg.replace(dtype="float64")).fit(train, progress=False)


def test_fit_equals_numpy_one_shot_gaussians(fitted, train, cfg):
    images = torch.stack([train[i]["image"] for i in range(len(train))])
    emb = fitted.embed(images).double().numpy()  # (N, d, h, w)
    n, d, h, w = emb.shape
    flat = emb.reshape(n, d, h * w)
    for p in [0, h * w // 2, h * w - 1]:
        cov = np.cov(flat[:, :, p], rowvar=False) + cfg.eps * np.eye(d)
        np.testing.assert_allclose(fitted.mean[p].numpy(), flat[:, :, p].mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fitted.precision[p].numpy(), np.linalg.inv(cov), rtol=1e-6, atol=1e-8)


def test_predict_shapes_and_score_is_max(fitted, test_set):
    images = torch.stack([test_set[i]["image"] for i in range(4)])
    maps, scores = fitted.predict(images)
    assert maps.shape == (4, 64, 64) and scores.shape == (4,)
    torch.testing.assert_close(scores, maps.flatten(1).amax(1).float())


def test_save_load_round_trip_gives_identical_maps(fitted, test_set, tmp_path):
    images = torch.stack([test_set[i]["image"] for i in range(5)])
    path = fitted.save(tmp_path / "m.safetensors")
    assert not list(tmp_path.glob("*.tmp"))
    loaded = Padim.load(path)
    assert loaded.config == fitted.config and loaded.grid == fitted.grid
    assert torch.equal(loaded.reducer.index, fitted.reducer.index)
    a, b = fitted.predict(images), loaded.predict(images)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pca_reduction_fits_and_predicts(cfg, train, test_set):
    model = Padim(cfg.replace(reduction="pca", d=8)).fit(train, progress=False)
    assert model.reducer.projection.shape == (176, 8)
    out = model.predict_dataset(test_set, progress=False)
    assert out["maps"].shape[0] == len(test_set) and torch.isfinite(out["maps"]).all()


def test_no_reduction_keeps_all_channels(cfg, train):
    model = Padim(cfg.replace(reduction="none")).fit(train, progress=False)
    assert model.d == 176 and model.precision.shape[-1] == 176


def test_predict_before_fit_is_a_clear_error(cfg):
    with pytest.raises(PadimError, match="not fitted"):
        Padim(cfg).predict(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


GEOMETRY_64 = "Geometry(image_size=64, crop=None, interpolation='bilinear')"


@pytest.mark.parametrize("shape", [(96, 96), (63, 63), (61, 61), (64, 61), (61, 64)])
def test_images_of_another_size_are_refused(fitted, shape):
    # 63 and 61 px images give the model's 16 x 16 grid and scores off by up to 250 %; 64 x 61 came back 61 x 61
    h, w = shape
    with pytest.raises(PadimError, match=re.escape(f"images of {h}x{w} px (height x width) reach a model for "
                                                   f"64x64 px images ({GEOMETRY_64})")) as info:
        fitted.predict(torch.zeros(2, 3, h, w, dtype=torch.uint8))
    assert "\n" not in str(info.value)


def test_resize_on_device_takes_any_size_as_the_fit_did(fitted, test_set):
    from padim_utils.datasets.images import resize_crop_images

    images = torch.stack([test_set[i]["image"] for i in range(3)])
    big = torch.nn.functional.interpolate(images.float(), size=(80, 72), mode="nearest").to(torch.uint8)
    resizing = copy.copy(fitted)
    resizing.resize_on_device = True
    maps, scores = resizing.predict(big)
    expected = fitted.predict(resize_crop_images(big, 64, None, "bilinear"))
    assert maps.shape == (3, 64, 64)
    assert torch.equal(maps, expected[0]) and torch.equal(scores, expected[1])


@pytest.mark.parametrize("kw, differs", [
    (dict(image_size=128, crop=64, interpolation="bilinear"), "Geometry(image_size=128, crop=64, interpolation='bilinear')"),
    (dict(image_size=64, crop=None, interpolation="bicubic"), "Geometry(image_size=64, crop=None, interpolation='bicubic')"),
    (dict(image_size=72, crop=64, interpolation="bilinear"), "Geometry(image_size=72, crop=64, interpolation='bilinear')"),
])
def test_a_dataset_of_another_geometry_is_refused(fitted, quick_root, quick_category, cfg, kw, differs):
    from torch.utils.data import ConcatDataset, Subset

    other = MVTecDataset(quick_root, quick_category, "test", **kw)
    right = MVTecDataset(quick_root, quick_category, "test", geometry=cfg.geometry)
    expected = re.escape(f"the dataset's geometry {differs} differs from the model config's {GEOMETRY_64}")
    for data in (other, Subset(other, [0, 1, 2]), ConcatDataset([right, other])):
        with pytest.raises(PadimError, match=expected) as info:
            fitted.predict_dataset(data, progress=False)
        assert "\n" not in str(info.value)
    train = MVTecDataset(quick_root, quick_category, "train", **kw)
    with pytest.raises(PadimError, match=expected):  # the fit too: the saved config would not be the data's
        Padim(cfg).fit(train, progress=False)


def test_a_crop_to_the_whole_image_is_the_same_geometry(fitted, quick_root, quick_category, cfg):
    same = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=64, interpolation="bilinear")
    plain = MVTecDataset(quick_root, quick_category, "test", geometry=cfg.geometry)
    a, b = fitted.predict_dataset(same, progress=False), fitted.predict_dataset(plain, progress=False)
    assert torch.equal(a["scores"], b["scores"])


def test_a_dataset_without_a_geometry_is_checked_by_its_images(cfg, train):
    class Plain(torch.utils.data.Dataset):  # a user's own dataset: items of another size, no geometry
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": train[i]["image"][:, :60, :60].contiguous()}

    with pytest.raises(PadimError, match=re.escape("images of 60x60 px (height x width) reach a model for 64x64")):
        Padim(cfg).fit(Plain(), progress=False)


def test_the_fitted_grid_is_the_configs(fitted, cfg):
    assert fitted.grid == fitted.config_grid == (16, 16)  # 64 px / stride 4
    for size, grid in ((96, (24, 24)), (100, (25, 25)), (250, (63, 63))):  # a partial patch counts
        model = Padim(cfg.replace(image_size=size))
        assert model.config_grid == grid
        emb = model.embed(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        assert tuple(emb.shape[-2:]) == grid


def test_maps_follow_the_configs_interpolation(fitted, test_set):
    import copy

    from padim_utils.scoring import anomaly_maps, mahalanobis

    images = torch.stack([test_set[i]["image"] for i in range(2)])
    bicubic = copy.copy(fitted)
    bicubic.config = fitted.config.replace(interpolation="bicubic")
    dist = mahalanobis(fitted.embed(images), fitted.mean, fitted.precision)  # (2, h, w)
    for model in (fitted, bicubic):
        maps, _ = model.predict(images)
        expected = anomaly_maps(dist, images.shape[-1], model.config.sigma, model.config.interpolation)
        torch.testing.assert_close(maps, expected)
    assert not torch.allclose(fitted.predict(images)[0], bicubic.predict(images)[0])


def test_float_images_are_refused(fitted):
    with pytest.raises(PadimError, match="uint8"):
        fitted.predict(torch.zeros(1, 3, 64, 64))


def test_model_file_from_another_format_version(fitted, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = fitted.save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["format_version"], meta["padim_utils_version"] = "0", "0.0.1"
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(PadimError, match="written by padim_utils 0.0.1 in model format 0"):
        Padim.load(path)


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(PadimError, match="not a readable padim model file"):
        Padim.load(bad)
    with pytest.raises(PadimError, match="model file not found"):
        Padim.load(tmp_path / "missing.safetensors")


def test_config_saved_as_json(fitted, tmp_path):
    from safetensors import safe_open

    with safe_open(str(fitted.save(tmp_path / "m.safetensors")), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["d"] == 12


@pytest.mark.slow  # torch.compile compiles the backbone first: ~20-30 s on a 2-core CPU
def test_compiled_backbone_gives_the_eager_model(cfg, train, test_set):
    eager = Padim(cfg).fit(train, progress=False)
    compiled = Padim(cfg, compile=True).fit(train, progress=False)  # batch_size 3: the last batch is padded
    assert len(train) % cfg.batch_size != 0, "a short last batch exercises the padding"
    torch.testing.assert_close(compiled.mean, eager.mean, rtol=1e-4, atol=1e-5)
    a = eager.predict_dataset(test_set, progress=False)
    b = compiled.predict_dataset(test_set, progress=False)
    torch.testing.assert_close(b["maps"], a["maps"], rtol=1e-3, atol=1e-3 * float(a["maps"].max()))
    assert b["maps"].shape == a["maps"].shape


# ---------------------------------------------------------------------------- memory, before the backbone
@pytest.mark.parametrize("image_size, dtype", [(64, "float32"), (70, "float64")])  # 70: a grid rounded up
def test_the_memory_estimate_is_what_the_fit_holds(quick_root, quick_category, image_size, dtype, monkeypatch):
    import padim_utils.model
    from padim_utils.gaussian import GaussianStats

    cfg = preset("quick").replace(d=8, image_size=image_size, dtype=dtype)
    train = MVTecDataset(quick_root, quick_category, "train", geometry=cfg.geometry)
    model = Padim(cfg, device="cpu")
    need = model.check_memory()
    batches = []
    real = model.forward_layers
    monkeypatch.setattr(model, "forward_layers", lambda images: batches.append(1) or real(images))
    monkeypatch.setattr(padim_utils.model, "available_memory_bytes", lambda device: need - 1)
    with pytest.raises(PadimError, match=f"needs about {need / 1e9:.1f} GB of memory .* but cpu has "):
        model.fit(train, progress=False)
    assert batches == [] and model.precision is None  # refused before the backbone ran
    monkeypatch.setattr(padim_utils.model, "available_memory_bytes", lambda device: need)
    model.fit(train, progress=False)
    positions = model.grid[0] * model.grid[1]
    assert need == GaussianStats(positions, 8).nbytes + model.precision.nbytes  # what the fit held at its peak


def test_cgroup_memory_limits_are_read_as_the_kernel_writes_them(tmp_path):
    from padim_utils.measure import _cgroup_available

    (tmp_path / "memory.max").write_text("1073741824\n")  # cgroup v2: a 1 GiB limit
    (tmp_path / "memory.current").write_text("600000000\n")
    (tmp_path / "memory.stat").write_text("anon 400000000\nfile 200000000\ninactive_file 150000000\n")
    assert _cgroup_available(tmp_path) == 1073741824 - (600000000 - 150000000)  # page cache can be dropped
    (tmp_path / "memory.max").write_text("max\n")
    assert _cgroup_available(tmp_path) is None  # no limit
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5000\n")
    assert _cgroup_available(v1) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text("8000\n")
    assert _cgroup_available(v1) == 3000
