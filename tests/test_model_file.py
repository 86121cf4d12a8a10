"""A model file is checked whole at load (metadata and tensors); NaN never comes out as a score."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.model import Padim


@pytest.fixture(scope="module")
def saved(quick_root, quick_category, tmp_path_factory):
    cfg = preset("quick").replace(d=8, batch_size=4)
    train = MVTecDataset(quick_root, quick_category, "train", geometry=cfg.geometry)
    model = Padim(cfg).fit(train, progress=False)
    return model.save(tmp_path_factory.mktemp("model") / "m.safetensors")


def _edited(src, dst, meta=None, config=None, tensors=None, drop_meta=(), drop_config=(), drop_tensors=()):
    """A copy of the model file `src` with metadata, config fields or tensors changed."""
    with safe_open(str(src), framework="pt") as f:
        m = dict(f.metadata())
    t = load_file(str(src))
    if config is not None or drop_config:
        c = json.loads(m["config"])
        c.update(config or {})
        for k in drop_config:
            del c[k]
        m["config"] = json.dumps(c)  # json writes float("nan") as NaN
    m.update(meta or {})
    t.update(tensors or {})
    for k in drop_meta:
        del m[k]
    for k in drop_tensors:
        del t[k]
    save_file(t, str(dst), metadata=m)
    return dst


#: How a file written before the digest (model format 1) looks: no sha256 in its metadata.
OLD = dict(meta={"format_version": "1"}, drop_meta=("sha256",))


def test_an_intact_file_loads(saved):
    assert Padim.load(saved).d == 8


def test_a_file_from_before_the_interpolation_field_loads_as_bilinear(saved, tmp_path, quick_root,
                                                                     quick_category):
    # Those versions resized and upsampled bilinearly; the field's default today is bicubic.
    old = Padim.load(_edited(saved, tmp_path / "old.safetensors", drop_config=("interpolation",), **OLD))
    assert old.config.interpolation == "bilinear" and old.config == Padim.load(saved).config
    test = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None, interpolation="bilinear")
    maps = old.predict_dataset(test, progress=False)["maps"]
    assert torch.equal(maps, Padim.load(saved).predict_dataset(test, progress=False)["maps"])


def test_a_file_from_before_the_stats_dtype_field_loads_as_float64_products(saved, tmp_path):
    old = Padim.load(_edited(saved, tmp_path / "old.safetensors", drop_config=("stats_dtype",), **OLD))
    assert old.config.stats_dtype == "float64"  # what every version before the field computed
    assert old.config.replace(stats_dtype="auto") == Padim.load(saved).config


def test_an_old_efficientnet_b5_file_keeps_the_layers_it_was_fitted_with(tmp_path):
    # Before the interpolation field, the B5 default layers were the paper's numbers read 0-based.
    from padim_utils.model import _read_metadata

    raw = preset("paper_effb5").to_dict()
    meta = {"grid": "[56, 56]", "n_train": "10"}
    del raw["interpolation"]
    config, _, _ = _read_metadata(tmp_path / "b5.safetensors", {**meta, "config": json.dumps(raw)})
    assert config.layers == ("block7", "block20", "block26") and config.interpolation == "bilinear"
    explicit = {**raw, "layers": ["block3", "block9"]}
    config, _, _ = _read_metadata(tmp_path / "b5.safetensors", {**meta, "config": json.dumps(explicit)})
    assert config.layers == ("block3", "block9")
    current = {**raw, "interpolation": "bicubic"}
    config, _, _ = _read_metadata(tmp_path / "b5.safetensors", {**meta, "config": json.dumps(current)})
    assert config.layers is None  # today's default, block6, block19, block25


def _nan_like(name):
    def make(t):
        t = t[name].clone()
        t.view(-1)[3] = float("nan")
        return {name: t}
    return make


EDITS = {
    "config not JSON": (dict(meta={"config": "{d: 32"}), "config metadata is not JSON"),
    "config not an object": (dict(meta={"config": "[1, 2]"}), "not a JSON object"),
    "config field missing": (dict(drop_config=("backbone",)), "the model's config has no backbone"),
    "d as a string": (dict(config={"d": "32"}), r"config d='32' has the wrong type \(expected int\)"),
    "pretrained as a number": (dict(config={"pretrained": 1}), "config pretrained=1 has the wrong type"),
    "sigma NaN": (dict(config={"sigma": float("nan")}), "config sigma=nan is not a finite number"),
    "interpolation unknown": (dict(config={"interpolation": "nearest"}), "interpolation must be one of bicubic"),
    "interpolation a number": (dict(config={"interpolation": 3}), "config interpolation=3 has the wrong type"),
    "seed beyond 64 bits": (dict(config={"seed": 2**70}), "seed must be an integer from 0 to 2\\*\\*64 - 1"),
    "n_train not a number": (dict(meta={"n_train": "many"}), "n_train metadata 'many' is not a count"),
    "grid not JSON": (dict(meta={"grid": "8x8"}), "grid metadata '8x8' is not two positive integers"),
    "grid missing": (dict(drop_meta=("grid",)), "has no 'grid' field"),
    "channel index missing": (dict(drop_tensors=("channel_index",)), "no 'channel_index' tensor"),
    "channel index out of range": (dict(tensors=lambda t: {"channel_index": t["channel_index"] + 170}),
                                   r"channels outside 0\.\.175"),
    "channel index repeated": (dict(tensors=lambda t: {"channel_index": t["channel_index"] * 0 + 3}),
                               "names a channel twice"),
    "channel index floats": (dict(tensors=lambda t: {"channel_index": t["channel_index"].float()}), "not integers"),
    "precision of the wrong shape": (dict(tensors=lambda t: {"precision": t["precision"][:, :7, :7].contiguous()}),
                                     r"tensor 'precision' has shape \(\d+, 7, 7\)"),
    "metadata d disagrees with the tensors": (dict(config={"d": 9}), r"tensor 'mean' has shape \(\d+, 8\) but the "
                                                                     r"metadata \(d=9"),
    "config size disagrees with the grid": (dict(config={"image_size": 128}), r"the model's grid \[16, 16\] does not "
                                            r"fit its config's 128px images \(they give \[32, 32\]\)"),
    "config crop disagrees with the grid": (dict(config={"image_size": 128, "crop": 96}), r"grid \[16, 16\] does "
                                            r"not fit its config's 96px images \(they give \[24, 24\]\)"),
    "mean holds NaN": (dict(tensors=_nan_like("mean")), "tensor 'mean' holds NaN or infinite values"),
    "precision holds inf": (dict(tensors=lambda t: {"precision": t["precision"] * float("inf")}),
                            "tensor 'precision' holds NaN or infinite values"),
    # the structure every fit gives its tensors, checked also in files without a digest
    "channel index unsorted": (dict(tensors=lambda t: {"channel_index": t["channel_index"].flip(0)}, **OLD),
                               "'channel_index' is not in increasing order"),
    "precision negated": (dict(tensors=lambda t: {"precision": -t["precision"]}, **OLD),
                          "'precision' has a diagonal entry <= 0"),
    "precision not symmetric": (dict(tensors=lambda t: {"precision": t["precision"] + torch.triu(
        torch.ones_like(t["precision"][0]), 1)}, **OLD), "'precision' is not symmetric"),
    "precision as bfloat16": (dict(tensors=lambda t: {"precision": t["precision"].bfloat16()}, **OLD),
                              r"'precision' holds torch.bfloat16 but a fit with dtype=float32 stores torch.float32"),
    "mean as float64": (dict(tensors=lambda t: {"mean": t["mean"].double()}, **OLD),
                        r"'mean' holds torch.float64 but a fit with dtype=float32 stores torch.float32"),
    # what only the digest written at save finds: a change that keeps the structure
    "sigma changed": (dict(config={"sigma": 5.0}), "differ from what was saved"),
    "channel index of other channels": (dict(tensors=lambda t: {"channel_index": t["channel_index"] + 1}),
                                        "differ from what was saved"),
    "precision scaled": (dict(tensors=lambda t: {"precision": t["precision"] * 1.01}), "differ from what was saved"),
    "digest removed": (dict(drop_meta=("sha256",)), "the model metadata has no 'sha256' field"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_an_edited_file_is_refused_in_one_line(saved, tmp_path, case):
    edit, expected = EDITS[case]
    edit = dict(edit)
    if callable(edit.get("tensors")):
        edit["tensors"] = edit["tensors"](load_file(str(saved)))
    path = _edited(saved, tmp_path / "edited.safetensors", **edit)
    with pytest.raises(PadimError, match=expected) as info:
        Padim.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def _flip_bit(path, tensor: str, byte: int, bit: int):
    """Flip one bit of a tensor's data in a safetensors file, in place (the header says where the data lies)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + n])[tensor]["data_offsets"]
    assert 0 <= byte < end - start
    raw[8 + n + start + byte] ^= 1 << bit
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("tensor, byte, bit", [
    ("channel_index", 0, 0),  # index 0's lowest bit: a channel 1 apart, still sorted and unique here
    ("precision", 5000, 3),  # a mantissa bit of one precision entry
    ("mean", 19, 0),  # the lowest exponent bit of one mean entry: doubled or halved
])
def test_a_flipped_bit_is_found_by_the_digest(saved, tmp_path, tensor, byte, bit, quick_root, quick_category):
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(saved.read_bytes())
    _flip_bit(path, tensor, byte, bit)
    assert load_file(str(path))[tensor].shape == load_file(str(saved))[tensor].shape  # the file still reads
    with pytest.raises(PadimError, match="differ from what was saved") as info:
        Padim.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_digest_is_written_at_save_and_a_format_1_file_still_loads(saved, tmp_path, quick_root, quick_category):
    with safe_open(str(saved), framework="pt") as f:
        meta = f.metadata()
    assert meta["format_version"] == "2" and len(meta["sha256"]) == 64
    old = Padim.load(_edited(saved, tmp_path / "old.safetensors", **OLD))  # a file written before the digest
    test = MVTecDataset(quick_root, quick_category, "test", geometry=old.config.geometry)
    assert torch.equal(old.predict_dataset(test, progress=False)["maps"],
                       Padim.load(saved).predict_dataset(test, progress=False)["maps"])


def test_pca_directions_that_are_not_orthonormal_are_refused(quick_root, quick_category, tmp_path):
    cfg = preset("quick").replace(d=4, reduction="pca", batch_size=4)
    train = MVTecDataset(quick_root, quick_category, "train", geometry=cfg.geometry)
    path = Padim(cfg).fit(train, progress=False).save(tmp_path / "pca.safetensors")
    w = load_file(str(path))["pca_projection"]
    assert torch.allclose(w.T @ w, torch.eye(4), atol=1e-5)  # what a PCA fit stores
    Padim.load(_edited(path, tmp_path / "old.safetensors", **OLD))
    bad = _edited(path, tmp_path / "bad.safetensors", tensors={"pca_projection": w * 2}, **OLD)
    with pytest.raises(PadimError, match="'pca_projection' does not hold orthonormal directions"):
        Padim.load(bad)


def test_a_model_giving_nan_maps_reports_no_score(saved, quick_root, quick_category):
    model = Padim.load(saved)
    model.mean = model.mean.clone()
    model.mean[5, 2] = float("nan")  # one position of every map
    test = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None, interpolation="bilinear")
    images = torch.stack([test[i]["image"] for i in range(2)])
    with pytest.raises(PadimError, match="anomaly map of image 0 of the batch holds NaN"):
        model.predict(images)
    with pytest.raises(PadimError, match=f"anomaly map of image {test.paths[0]} holds NaN"):
        model.predict_dataset(test, progress=False)


def test_full_disk_while_saving_is_one_line_and_leaves_no_temp(saved, tmp_path, monkeypatch):
    import safetensors

    import padim_utils.model

    def full(*args, **kwargs):  # what safetensors raises on ENOSPC
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    model = Padim.load(saved)
    monkeypatch.setattr(padim_utils.model, "save_file", full)
    with pytest.raises(PadimError) as info:
        model.save(tmp_path / "m.safetensors")
    assert str(info.value) == f"cannot write {tmp_path / 'm.safetensors'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_fit_giving_nan_statistics_is_refused(quick_root, quick_category, monkeypatch):
    from padim_utils.gaussian import GaussianStats

    real = GaussianStats.finalize

    def overflowed(self, *args, **kwargs):
        mean, precision = real(self, *args, **kwargs)
        precision[0, 0, 0] = float("inf")
        return mean, precision

    monkeypatch.setattr(GaussianStats, "finalize", overflowed)
    cfg = preset("quick").replace(d=8)
    train = MVTecDataset(quick_root, quick_category, "train", geometry=cfg.geometry)
    model = Padim(cfg)
    with pytest.raises(PadimError, match="the fit gave NaN or infinite Gaussian statistics"):
        model.fit(train, progress=False)
    assert model.precision is None  # nothing half-fitted to save
