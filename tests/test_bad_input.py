"""The bad-input sweep of README "What happens on bad input": one line and exit 2, or a correct result,
checked before the work starts where it can be; nothing half-written, no mix of two runs, no NaN."""

import csv
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
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
    assert _visible(out) == _written(out) == sorted([*(r["heatmap"] for r in rows), "scores.csv"])


def _predict(model_file, inputs, out):
    return ["predict", "--model", str(model_file), "--input", str(inputs), "--out", str(out), "--quiet"]


def _visible(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


def _written(folder) -> list[str]:
    """What the manifest says the last run wrote in `folder`."""
    return sorted(json.loads((Path(folder) / files.MANIFEST).read_text())["files"])


def _rows(out) -> list[dict]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_predict_never_replaces_a_file_it_did_not_write(model_file, images, tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "pred"
    folder.mkdir()
    out.mkdir()
    shutil.copy(images[0], folder / "photo.png")
    (out / "photo_heatmap.png").write_bytes(b"the user's own picture")
    assert main(_predict(model_file, folder, out)) == 0
    assert (out / "photo_heatmap.png").read_bytes() == b"the user's own picture"
    assert [r["heatmap"] for r in _rows(out)] == ["photo_heatmap-2.png"]  # another name, listed in scores.csv
    (out / "PHOTO_HEATMAP-3.PNG").write_bytes(b"another")  # a case-insensitive disk takes it for -3
    assert main(_predict(model_file, folder, out)) == 0  # the run's own photo_heatmap-2.png is replaced
    assert [r["heatmap"] for r in _rows(out)] == ["photo_heatmap-2.png"]
    assert _visible(out) == ["PHOTO_HEATMAP-3.PNG", "photo_heatmap-2.png", "photo_heatmap.png", "scores.csv"]


def test_predict_with_out_as_input_keeps_the_input_images(model_file, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    shutil.copy(images[1], folder / "a_heatmap.png")  # an input image named like a.png's heat map
    before = (folder / "a_heatmap.png").read_bytes()
    for _ in range(2):  # the second run reads the same two images, not the first run's heat maps
        assert main(_predict(model_file, folder, folder)) == 0
        assert (folder / "a_heatmap.png").read_bytes() == before
        rows = _rows(folder)
        assert [(Path(r["image"]).name, r["heatmap"]) for r in rows] == [("a.png", "a_heatmap-2.png"),
                                                                        ("a_heatmap.png", "a_heatmap_heatmap.png")]
    assert "not scored: 2 heat map(s) an earlier padim predict wrote" in capsys.readouterr().err


def test_a_scores_csv_of_the_users_is_refused_before_the_work(model_file, images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "scores.csv").write_text("image,score,heatmap\nx.png,1,notes_heatmap.png\n")
    (out / "notes_heatmap.png").write_text("mine")
    monkeypatch.setattr(Padim, "predict_dataset", lambda *a, **k: pytest.fail("predicted before the check"))
    err = _error(capsys, _predict(model_file, images[0], out))
    assert f"--out {out} holds scores.csv, which no earlier run wrote there" in err
    assert _visible(out) == ["notes_heatmap.png", "scores.csv"] and (out / "notes_heatmap.png").read_text() == "mine"


def test_a_heat_map_the_user_changed_is_theirs(model_file, images, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(_predict(model_file, images[0], out)) == 0
    name = _rows(out)[0]["heatmap"]
    (out / name).write_bytes(b"edited by hand")  # no longer what the run wrote
    assert main(_predict(model_file, images[1], out)) == 0
    assert (out / name).read_bytes() == b"edited by hand"
    assert name not in _written(out)


def test_two_predicts_at_once_never_mix(model_file, images, tmp_path, monkeypatch):
    """Renames slowed to 50 ms, as on a network disk: the two runs publish one after the other."""
    import threading

    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "pred"
    for folder, prefix, chosen in ((first, "x", images[:4]), (second, "y", images[4:8])):
        folder.mkdir()
        for p in chosen:
            shutil.copy(p, folder / f"{prefix}{p.name}")
    real = os.replace

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "replace", slow)
    codes = []
    runs = [threading.Thread(target=lambda f=f: codes.append(main(_predict(model_file, f, out)))) for f in
            (first, second)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert codes == [0, 0]
    rows = _rows(out)
    inputs = {Path(r["image"]).parent for r in rows}
    assert len(inputs) == 1 and len(rows) == 4  # one run's scores ...
    assert _visible(out) == _written(out) == sorted([*(r["heatmap"] for r in rows), "scores.csv"])  # ... and maps


def test_predict_notes_the_files_it_does_not_score(model_file, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    Image.open(images[1]).convert("RGB").save(folder / "b.webp")
    Image.open(images[2]).convert("RGB").save(folder / "c.gif")
    assert main(_predict(model_file, folder, tmp_path / "pred")) == 0
    err = capsys.readouterr().err.strip()
    assert err == "padim: note: not scored, not images by their name (.png, .jpg, .jpeg, .bmp, .tif, .tiff): " \
                  "b.webp, c.gif"
    assert [Path(r["image"]).name for r in _rows(tmp_path / "pred")] == ["a.png"]


@pytest.mark.parametrize("device", ["gpu", "mps", "CPU", "cuda:x", "cuda:99"])
def test_predict_device_is_one_line(model_file, images, tmp_path, capsys, device):
    err = _error(capsys, ["predict", "--model", str(model_file), "--input", str(images[0]), "--out",
                          str(tmp_path / "pred"), "--device", device, "--quiet"])
    if device.startswith("cuda:9"):
        assert f"device='{device}' was asked for but" in err
    else:
        assert err == f"padim: error: device must be one of auto, cpu, cuda, got '{device}'"


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
    assert _visible(out) == sorted([*(r["heatmap"] for r in rows), "notes.txt", "scores.csv"])
    assert _written(out) == sorted([*(r["heatmap"] for r in rows), "scores.csv"])  # not the user's notes


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
