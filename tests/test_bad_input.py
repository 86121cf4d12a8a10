"""The bad-input sweep of README "What happens on bad input": one line and exit 2, or a correct result,
checked before the work starts where it can be; nothing half-written, no mix of two runs, no NaN."""

import csv
import errno
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from padim_utils import files
from padim_utils.cli import heatmap_names, main
from padim_utils.model import Padim

QUICK = ["--config", "quick", "--d", "8", "--quiet"]
REPO = Path(__file__).resolve().parents[1]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def no_fit(monkeypatch):
    """Make fitting fail loudly: an error expected before the work starts must come before the fit."""
    def fit(*args, **kwargs):
        raise AssertionError("the fit started before the mistake was reported")
    monkeypatch.setattr(Padim, "fit", fit)


@pytest.fixture(scope="module")
def model_file(quick_root, quick_category, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    assert main(["fit", "--root", str(quick_root), "--category", quick_category, "--out", str(path), *QUICK]) == 0
    return path


@pytest.fixture(scope="module")
def images(quick_root, quick_category):
    return sorted((quick_root / quick_category / "test" / "good").iterdir())


def _fit(root, category, out):
    return ["fit", "--root", str(root), "--category", category, "--out", str(out), *QUICK]


# ---------------------------------------------------------------------------- output paths, before the work
@pytest.mark.parametrize("case", ["out is a folder", "out is empty", "parent is a file", "pseudo file system",
                                  "read-only file system"])
def test_fit_output_is_checked_before_fitting(quick_root, quick_category, tmp_path, capsys, no_fit, monkeypatch,
                                              case):
    (tmp_path / "afile").write_text("x")
    out, expected = {
        "out is a folder": (tmp_path, "is a folder; name a file"),
        "out is empty": ("", "--out is empty"),
        "parent is a file": (tmp_path / "afile" / "m.safetensors", "afile is not a folder"),
        "pseudo file system": ("/proc/m.safetensors", "cannot write to the folder of --out /proc/m.safetensors"),
        "read-only file system": (tmp_path / "m.safetensors", "Read-only file system"),
    }[case]
    if case == "read-only file system":
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    assert expected in _error(capsys, _fit(quick_root, quick_category, out))


def test_a_fit_too_big_for_memory_is_refused_before_the_backbone(quick_root, quick_category, tmp_path, capsys,
                                                                  monkeypatch):
    import padim_utils.model

    def backbone(*args, **kwargs):
        raise AssertionError("the backbone ran before the fit was found too big")

    monkeypatch.setattr(Padim, "forward_layers", backbone)
    monkeypatch.setattr(padim_utils.model, "available_memory_bytes", lambda device: 24 * 2**30)  # a 24 GiB machine
    out = tmp_path / "m.safetensors"
    err = _error(capsys, ["fit", "--root", str(quick_root), "--category", quick_category, "--out", str(out),
                          "--config", "offline_lite0", "--image-size", "2048", "--batch-size", "1", "--device", "cpu",
                          "--quiet"])
    # 512 x 512 positions (stride 4), d = 100: 8 + 4 bytes per d^2 entry, 8 per mean entry
    need = 512 * 512 * (100 * 100 * 12 + 100 * 8)
    assert f"needs about {need / 1e9:.1f} GB of memory" in err and f"cpu has {24 * 2**30 / 1e9:.1f} GB" in err
    assert "lower --image-size or --crop, or --d" in err and not out.exists()


def test_benchmark_figures_that_is_a_file(quick_root, quick_category, tmp_path, capsys, no_fit):
    (tmp_path / "figs").write_text("x")
    err = _error(capsys, ["benchmark", "--root", str(quick_root), "--category", quick_category, "--out",
                          str(tmp_path / "b.json"), "--figures", str(tmp_path / "figs"), *QUICK])
    assert "--figures" in err and "not a folder" in err


def test_predict_out_that_is_a_file(model_file, images, tmp_path, capsys, monkeypatch):
    (tmp_path / "pred").write_text("x")
    monkeypatch.setattr(Padim, "predict_dataset", lambda *a, **k: pytest.fail("predicted before the check"))
    err = _error(capsys, ["predict", "--model", str(model_file), "--input", str(images[0]), "--out",
                          str(tmp_path / "pred"), "--quiet"])
    assert "--out" in err and "not a folder" in err


def test_full_disk_while_saving_the_model(quick_root, quick_category, tmp_path, capsys, monkeypatch):
    import safetensors

    import padim_utils.model

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(padim_utils.model, "save_file", full)
    err = _error(capsys, _fit(quick_root, quick_category, tmp_path / "m.safetensors"))
    assert err.endswith("m.safetensors: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_heat_maps(model_file, images, tmp_path, capsys, monkeypatch):
    import padim_utils.cli

    def full(path, *args, **kwargs):
        with files.atomic_path(path) as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(padim_utils.cli, "save_overlay", full)
    err = _error(capsys, ["predict", "--model", str(model_file), "--input", str(images[0]), "--out",
                          str(tmp_path / "pred"), "--quiet"])
    assert err.endswith(f"cannot write {tmp_path / 'pred' / images[0].stem}_heatmap.png: No space left on device")
    assert list(tmp_path.iterdir()) == []  # not even the output folder it made


@pytest.mark.parametrize("argv, expected", [
    (["--seed", str(2**64)], "--seed must be an integer from 0 to 2**64 - 1"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**64 - 1"),
])
def test_seed_out_of_range(quick_root, quick_category, tmp_path, capsys, no_fit, argv, expected):
    assert expected in _error(capsys, [*_fit(quick_root, quick_category, tmp_path / "m"), *argv])


def test_synth_seed_out_of_range(tmp_path, capsys):
    assert "--seed" in _error(capsys, ["synth", "--root", str(tmp_path / "s"), "--quick", "--seed", "-5"])


def test_largest_seed_works(quick_root, quick_category, tmp_path):
    assert main([*_fit(quick_root, quick_category, tmp_path / "m.safetensors"), "--seed", str(2**64 - 1)]) == 0


# ---------------------------------------------------------------------------- benchmark: undefined metrics
def _copy(quick_root, quick_category, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(quick_root / quick_category, root / quick_category)
    return root, root / quick_category


@pytest.mark.parametrize("case, expected", [
    ("no defective image", "holds only normal images (no defective image): image AUROC, image F1, pixel AUROC and "
                           "AU-PRO are all undefined"),
    ("no good image", "holds only anomalous images (no good image): image AUROC is undefined"),
    ("no defect pixel", "has a defect pixel (at 64px): pixel AUROC and AU-PRO are undefined"),
])
def test_benchmark_names_undefined_metrics_before_fitting(quick_root, quick_category, tmp_path, capsys, no_fit,
                                                          case, expected):
    root, cat = _copy(quick_root, quick_category, tmp_path)
    if case == "no defective image":
        for d in (cat / "test").iterdir():
            if d.name != "good":
                shutil.rmtree(d)
    elif case == "no good image":
        shutil.rmtree(cat / "test" / "good")
    else:
        for mask in (cat / "ground_truth").rglob("*_mask.png"):
            Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(mask)
    err = _error(capsys, ["benchmark", "--root", str(root), "--category", quick_category, "--out",
                          str(tmp_path / "b.json"), *QUICK])
    assert expected in err
    assert not (tmp_path / "b.json").exists()


# ---------------------------------------------------------------------------- symlink loops, odd names
@pytest.mark.parametrize("where", ["train/good", "test", "test/good"])
def test_symlink_loop_in_the_dataset(quick_root, quick_category, tmp_path, capsys, where):
    root, cat = _copy(quick_root, quick_category, tmp_path)
    loop = cat / where / ("loop.png" if where != "test" else "loop")
    loop.symlink_to(loop.name)  # points at itself
    err = _error(capsys, ["benchmark", "--root", str(root), "--category", quick_category, "--out",
                          str(tmp_path / "b.json"), *QUICK])
    assert str(loop) in err and "Too many levels of symbolic links" in err


def test_symlink_loop_in_the_predict_input(model_file, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    (folder / "b.png").symlink_to("b.png")
    err = _error(capsys, ["predict", "--model", str(model_file), "--input", str(folder), "--out",
                          str(tmp_path / "pred"), "--quiet"])
    assert str(folder / "b.png") in err and "Too many levels of symbolic links" in err
    (tmp_path / "self").symlink_to("self")
    err = _error(capsys, ["predict", "--model", str(model_file), "--input", str(tmp_path / "self"), "--out",
                          str(tmp_path / "pred"), "--quiet"])
    assert "symlink loop" in err


def test_file_name_that_is_not_utf8(model_file, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1, not UTF-8
    try:
        shutil.copy(images[0], folder / odd)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    shutil.copy(images[1], folder / "plain.png")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_file), "--input", str(folder), "--out", str(out), "--quiet"]) == 0
    raw = (out / "scores.csv").read_bytes()
    assert b"caf\xe9.png" in raw and b"plain.png" in raw
    with open(out / "scores.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["image"]).name for r in rows] == [odd, "plain.png"]
    assert all((out / r["heatmap"]).is_file() for r in rows)


# ---------------------------------------------------------------------------- predict outputs
def test_heatmap_names_are_unique_per_input():
    names = heatmap_names(["d/a.png", "d/a.jpg", "d/A.PNG", "d/b.png", "d/a_heatmap-2.png"])
    assert len({n.lower() for n in names}) == 5
    assert names[0] == "a_heatmap.png" and names[3] == "b_heatmap.png"


def test_predict_writes_one_heatmap_per_input_even_when_stems_clash(model_file, images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["a.png", "A.PNG"]):
        shutil.copy(images[i], folder / name)
    Image.open(images[2]).convert("RGB").save(folder / "a.jpg")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_file), "--input", str(folder), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert sorted(Path(r["image"]).name for r in rows) == ["A.PNG", "a.jpg", "a.png"]
    assert len({r["heatmap"].lower() for r in rows}) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted([*(r["heatmap"] for r in rows), "scores.csv"])


def _predict(model_file, inputs, out):
    return ["predict", "--model", str(model_file), "--input", str(inputs), "--out", str(out), "--quiet"]


def test_predict_into_a_used_folder_never_mixes_two_runs(model_file, images, tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for p in images[:2]:
        shutil.copy(p, first / f"x{p.name}")
    for p in images[2:4]:
        shutil.copy(p, second / f"y{p.name}")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # the user's own file stays
    assert main(_predict(model_file, first, out)) == 0
    first_run = sorted(p.name for p in out.iterdir())

    import padim_utils.cli

    real, calls = padim_utils.cli.save_overlay, []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half-way through the heat maps
        return real(*args, **kwargs)

    monkeypatch.setattr(padim_utils.cli, "save_overlay", fail_on_second)
    assert main(_predict(model_file, second, out)) == 130
    assert sorted(p.name for p in out.iterdir()) == first_run  # the first run, untouched, nothing of the second
    monkeypatch.setattr(padim_utils.cli, "save_overlay", real)

    assert main(_predict(model_file, second, out)) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert all(Path(r["image"]).parent == second for r in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(r["heatmap"] for r in rows), "notes.txt",
                                                            "scores.csv"])


def test_predict_outputs_respect_the_umask(model_file, images, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(_predict(model_file, images[0], tmp_path / "pred")) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pred").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_nan_model_gives_no_scores(model_file, images, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(model_file), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(model_file))
    tensors["mean"][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    err = _error(capsys, _predict(bad, images[0], tmp_path / "pred"))
    assert "tensor 'mean' holds NaN" in err
    assert not (tmp_path / "pred" / "scores.csv").exists()


# ---------------------------------------------------------------------------- SIGTERM
def test_sigterm_during_save_cleans_up_like_ctrl_c(quick_root, quick_category, tmp_path):
    """A `kill` arriving while the model file is written: exit 143, one line, no temp file, no model."""
    out = tmp_path / "models" / "m.safetensors"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import padim_utils.model
        from padim_utils.cli import main

        real = padim_utils.model.save_file

        def save_then_killed(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)   # the temp file is complete on disk
            os.kill(os.getpid(), signal.SIGTERM)         # ... and the kill comes before the rename

        padim_utils.model.save_file = save_then_killed
        sys.exit(main({_fit(quick_root, quick_category, out)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "padim: terminated"
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("outcome, expected", [
    ("nan", "image_auroc of .* came out NaN or infinite; not reported"),
    ("error", "metrics undefined on .*: masks contain no defect-free pixel"),
])
def test_benchmark_never_reports_a_nan_metric(quick_root, quick_category, monkeypatch, outcome, expected):
    import padim_utils.experiments.benchmark as experiment
    from padim_utils.config import preset
    from padim_utils.errors import PadimError

    real = experiment.evaluate

    def evaluate(*args, **kwargs):
        if outcome == "error":
            raise ValueError("masks contain no defect-free pixel: the false positive rate is undefined")
        return {**real(*args, **kwargs), "image_auroc": float("nan")}

    monkeypatch.setattr(experiment, "evaluate", evaluate)
    with pytest.raises(PadimError, match=expected):
        experiment.run_benchmark(preset("quick").replace(d=8), quick_root, quick_category, progress=False)
