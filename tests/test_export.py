"""ONNX export: onnxruntime reproduces Padim.predict (quick model; real bottle where present), the graph holds
what the docs say, and bad input is one line with nothing left on disk."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from padim_utils import export
from padim_utils.cli import main
from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.export import PadimGraph, compare_with_torch, export_onnx, onnx_session, run_onnx, size_breakdown
from padim_utils.model import Padim


@pytest.fixture(scope="module")
def cfg():
    return preset("quick")


def _dataset(root, category, split, cfg):
    return MVTecDataset(root, category, split, geometry=cfg.geometry)


@pytest.fixture(scope="module")
def model(quick_root, quick_category, cfg):
    return Padim(cfg, device="cpu").fit(_dataset(quick_root, quick_category, "train", cfg), progress=False)


@pytest.fixture(scope="module")
def images(quick_root, quick_category, cfg):
    test = _dataset(quick_root, quick_category, "test", cfg)
    return torch.stack([test[i]["image"] for i in range(len(test))])  # (N, 3, 64, 64) uint8, good and defective


@pytest.fixture(scope="module")
def onnx_file(model, images, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "quick.onnx", images=images[:4])


def _assert_reproduces(maps, scores, ref_maps, ref_scores):
    """The issue's criterion, checked with numpy: each map within 1e-4 of its peak value (and every single pixel
    within 1e-3 relative), the scores in the same order."""
    a, b = maps.numpy(), ref_maps.numpy()
    assert (np.abs(a - b).max(axis=(1, 2)) <= 1e-4 * np.abs(b).max(axis=(1, 2))).all()
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=0)
    assert np.array_equal(np.argsort(scores.numpy()), np.argsort(ref_scores.numpy()))
    np.testing.assert_allclose(scores.numpy(), ref_maps.numpy().reshape(len(maps), -1).max(1), rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 3, None])  # the batch axis is dynamic: the export traced 2 images
def test_onnxruntime_reproduces_predict(model, images, onnx_file, batch):
    session = onnx_session(onnx_file)
    n = batch or len(images)
    maps, scores = run_onnx(session, images[:n])
    assert maps.shape == (n, 64, 64) and scores.shape == (n,) and maps.dtype == torch.float32
    _assert_reproduces(maps, scores, *model.predict(images[:n]))


def test_the_graph_holds_the_models_tensors(model, onnx_file):
    graph = onnx.load(str(onnx_file))
    onnx.checker.check_model(graph)
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [export.OPSET]
    (inp,) = graph.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]  # a named, free batch axis
    assert [o.name for o in graph.graph.output] == ["maps", "scores"]
    tensors = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    p, d = model.mean.shape
    assert (p, d) == (16 * 16, 32)
    precision = [t for t in tensors.values() if t.shape == (p, d, d)]
    mean = [t for t in tensors.values() if t.shape in ((p, d), (p, 1, d))]  # (P, 1, d): broadcast over the batch
    assert len(precision) == 1 and np.array_equal(precision[0], model.precision.numpy())  # stored bit for bit
    assert len(mean) == 1 and np.array_equal(mean[0].reshape(p, d), model.mean.numpy())
    ops = {n.op_type for n in graph.graph.node}
    assert {"Conv", "MatMul", "ReduceMax", "Sqrt"} <= ops
    # Lite0's "same" padding traced as a pad (folded into the Conv's pads): a traced copy into a buffer was
    # ScatterND + whole-tensor transposes, 7x slower in onnxruntime than eager torch
    assert "ScatterND" not in ops
    raw = onnx_file.read_bytes()  # the exporter's stack traces (local paths) are not shipped
    assert b"stack_trace" not in raw and str(Path(export.__file__).parent).encode() not in raw


def test_file_size_is_the_backbone_plus_the_gaussians(model, onnx_file):
    parts = size_breakdown(model)
    p, d = model.mean.shape
    assert parts["precision"] == p * d * d * 4 and parts["mean"] == p * d * 4
    n_backbone = sum(t.numel() for t in (*model.extractor.parameters(), *model.extractor.buffers())
                     if t.is_floating_point())
    assert parts["backbone"] == 4 * n_backbone
    size = onnx_file.stat().st_size
    assert abs(size - parts["total"]) < 0.05 * size  # batch norms folded, the map matrices, the graph itself


def test_float16_precision_halves_the_matrices_and_matches_the_rounded_model(model, images, onnx_file, tmp_path):
    path = export_onnx(model, tmp_path / "half.onnx", precision="float16", images=images[:4])
    p, d = model.mean.shape
    saved = onnx_file.stat().st_size - path.stat().st_size
    assert abs(saved - p * d * d * 2) < 0.01 * p * d * d * 2
    tensors = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]
    (half,) = [t for t in tensors if t.shape == (p, d, d)]
    assert half.dtype == np.float16 and np.array_equal(half, model.precision.half().numpy())
    rounded = Padim(model.config, device="cpu")  # the same model with float16-rounded precision matrices
    rounded.mean, rounded.grid, rounded.reducer = model.mean, model.grid, model.reducer
    rounded.precision = model.precision.half().float()
    maps, scores = run_onnx(onnx_session(path), images)
    _assert_reproduces(maps, scores, *rounded.predict(images))
    assert model.precision is not rounded.precision and model.precision.dtype == torch.float32  # untouched


def test_export_leaves_predict_working(quick_root, quick_category, cfg, images, tmp_path):
    # a sigma no other test uses: scoring's blur matrix for it is first built during the export, which
    # must not leave a fake (traced) tensor in scoring's cache for later eager calls
    odd = cfg.replace(sigma=3.3125, d=8)
    m = Padim(odd, device="cpu").fit(_dataset(quick_root, quick_category, "train", odd), progress=False)
    path = export_onnx(m, tmp_path / "m.onnx", validate=False)
    maps, scores = m.predict(images[:3])
    _assert_reproduces(*run_onnx(onnx_session(path), images[:3]), maps, scores)


def test_failed_validation_writes_nothing(model, images, onnx_file, tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    previous = onnx_file.read_bytes()
    target.write_bytes(previous)  # the previous export
    forward = PadimGraph.forward

    def off_by_a_little(self, x):
        maps, scores = forward(self, x)
        return maps * 1.001, scores * 1.001  # 1e-3 relative: over the tolerance

    monkeypatch.setattr(PadimGraph, "forward", off_by_a_little)
    with pytest.raises(PadimError, match=r"does not reproduce Padim.predict \(maps differ .* at most 1.0e-03 of each") as e:
        export_onnx(model, target, images=images[:2])
    assert "\n" not in str(e.value) and str(target) in str(e.value)
    assert target.read_bytes() == previous  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_an_exporter_failure_is_one_line(model, tmp_path, monkeypatch):
    def branches_on_data(self, images):
        if images.float().mean() > 0:  # Python control flow on a value: torch.export cannot trace it
            return images.float().mean((1,)), images.float().amax((1, 2, 3))
        return images.float().mean((1,)), images.float().amin((1, 2, 3))

    monkeypatch.setattr(PadimGraph, "forward", branches_on_data)
    with pytest.raises(PadimError, match=r"^the ONNX exporter failed on this model \(\w+: .+\)$") as e:
        export_onnx(model, tmp_path / "m.onnx")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_unfitted_model_and_bad_options(cfg, model, tmp_path):
    with pytest.raises(PadimError, match="^the model is not fitted"):
        export_onnx(Padim(cfg, device="cpu"), tmp_path / "m.onnx")
    with pytest.raises(PadimError, match="precision must be one of float32, float16"):
        export_onnx(model, tmp_path / "m.onnx", precision="int8")
    with pytest.raises(PadimError, match=r"expected uint8 images of shape \(B, 3, 64, 64\)"):
        export_onnx(model, tmp_path / "m.onnx", images=torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    half = Padim(cfg.replace(dtype="bfloat16"), device="cpu")
    half.mean, half.precision, half.grid = model.mean, model.precision, model.grid
    with pytest.raises(PadimError, match="dtype=bfloat16 .*under autocast.*fit it with dtype='float32'"):
        export_onnx(half, tmp_path / "m.onnx")
    double = Padim(cfg.replace(dtype="float64"), device="cpu")
    double.mean, double.precision, double.grid = model.mean.double(), model.precision.double(), model.grid
    with pytest.raises(PadimError, match="dtype=float64 .*no float64 kernels"):
        export_onnx(double, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_model_over_the_onnx_limit_is_refused(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "size_breakdown", lambda m, precision: {"total": 3 * 2**30})
    with pytest.raises(PadimError, match="over ONNX's 2 GB single-file limit.*precision='float16'"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing(model, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full)
    with pytest.raises(PadimError, match=r"^cannot write .*m.onnx: No space left on device$"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_compare_catches_a_different_order(model, images, onnx_file):
    ok = compare_with_torch(onnx_file, model, images[:4])
    assert ok.ok and ok.ranks_equal and ok.max_relative_error < 1e-4 and ok.max_pixel_relative_error < 1e-3 and ok.n_images == 4
    other = Padim(model.config.replace(seed=1), device="cpu")  # other channels: other maps, other order
    other.mean, other.precision, other.grid = model.mean, model.precision, model.grid
    bad = compare_with_torch(onnx_file, other, images)
    assert not bad.ok and bad.max_relative_error > 1e-2


# ---------------------------------------------------------------------------- the command line
def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_export(model, images, quick_root, quick_category, tmp_path, capsys):
    model_file = model.save(tmp_path / "m.safetensors")
    out = tmp_path / "onnx" / "m.onnx"
    folder = quick_root / quick_category / "test" / "good"
    assert main(["export", str(model_file), "--out", str(out), "--images", str(folder), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "within 1e-04 of their peak" in printed and "of " + str(folder) in printed
    _assert_reproduces(*run_onnx(onnx_session(out), images), *model.predict(images))


@pytest.mark.parametrize("case", ["not a model", "missing model", "out is a folder", "pseudo file system"])
def test_cli_export_bad_input(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setattr(export, "_trace", lambda *a: pytest.fail("exported despite bad input"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    model_file, out, expected = {
        "not a model": (tmp_path / "junk.safetensors", tmp_path / "m.onnx", "is not a readable padim model file"),
        "missing model": (tmp_path / "nope.safetensors", tmp_path / "m.onnx", "model file not found"),
        "out is a folder": (tmp_path / "junk.safetensors", tmp_path, "is a folder; name a file"),
        "pseudo file system": (tmp_path / "junk.safetensors", "/proc/m.onnx", "cannot write to the folder of --out"),
    }[case]
    assert expected in _error(capsys, ["export", str(model_file), "--out", str(out), "--quiet"])
    assert not (tmp_path / "m.onnx").exists()


def test_out_naming_the_model_or_another_file_is_refused(model, onnx_file, tmp_path, capsys, monkeypatch):
    model_file = model.save(tmp_path / "m.safetensors")
    before = model_file.read_bytes()
    notes = tmp_path / "notes.csv"
    notes.write_text("image,score\n")
    traced = []
    trace = export._trace
    monkeypatch.setattr(export, "_trace", lambda *a: traced.append(a) or trace(*a))
    err = _error(capsys, ["export", str(model_file), "--out", str(model_file), "--quiet"])
    assert f"{model_file} is a safetensors file (a padim model or feature cache), not an ONNX graph" in err
    with pytest.raises(PadimError, match=f"^{notes} exists and is not an ONNX graph"):
        export_onnx(model, notes)
    assert traced == [] and model_file.read_bytes() == before and notes.read_text() == "image,score\n"
    assert Padim.load(model_file).d == model.d
    again = tmp_path / "again.onnx"
    again.write_bytes(onnx_file.read_bytes())  # an earlier export is replaced
    assert main(["export", str(model_file), "--out", str(again), "--quiet"]) == 0 and len(traced) == 1


def test_one_image_keeps_the_batch_axis_free(model, images, quick_root, quick_category, tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    first = sorted((quick_root / quick_category / "test" / "good").glob("*.png"))[0]
    (folder / first.name).write_bytes(first.read_bytes())
    out = tmp_path / "m.onnx"
    assert main(["export", str(model.save(tmp_path / "m.safetensors")), "--out", str(out), "--images", str(folder),
                 "--quiet"]) == 0
    assert "1 image(s) of" in capsys.readouterr().out
    batch = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # a named, free axis, not 1
    _assert_reproduces(*run_onnx(onnx_session(out), images[:5]), *model.predict(images[:5]))


def test_a_model_whose_size_disagrees_with_its_grid_is_one_line(model, tmp_path, capsys, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    monkeypatch.setattr(export, "_trace", lambda *a: pytest.fail("exported despite bad input"))
    path = model.save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["config"] = json.dumps({**json.loads(meta["config"]), "image_size": 128})
    save_file(load_file(str(path)), str(path), metadata=meta)
    err = _error(capsys, ["export", str(path), "--out", str(tmp_path / "m.onnx"), "--quiet"])
    assert "the model's grid [16, 16] does not fit its config's 128px images (they give [32, 32])" in err
    resized = Padim(model.config.replace(image_size=128), device="cpu")  # in memory: the same mismatch
    resized.mean, resized.precision, resized.grid = model.mean, model.precision, model.grid
    with pytest.raises(PadimError, match=r"^the model's patch grid \[16, 16\] does not fit its config's 128px"):
        export_onnx(resized, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_real_bottle_export_reproduces_predict(bottle_root, tmp_path):
    cfg = preset("offline_lite0").replace(device="cpu")
    kw = {"geometry": cfg.geometry}
    model = Padim(cfg).fit(MVTecDataset(bottle_root, "bottle", "train", **kw), progress=False)
    test = MVTecDataset(bottle_root, "bottle", "test", **kw)
    images = torch.stack([test[i]["image"] for i in range(len(test))])  # all 83: good and 3 defect types
    path = export_onnx(model, tmp_path / "bottle.onnx", images=images[::10])
    assert abs(path.stat().st_size - size_breakdown(model)["total"]) < 0.02 * path.stat().st_size
    assert size_breakdown(model)["precision"] == 64 * 64 * 100 * 100 * 4  # P = 64 x 64 positions, d = 100
    maps, scores = run_onnx(onnx_session(path), images, batch_size=16)
    ref_maps, ref_scores = model.predict(images)
    _assert_reproduces(maps, scores, ref_maps, ref_scores)
