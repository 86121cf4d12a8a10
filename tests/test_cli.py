"""The `padim` command: the happy path on the embedded data and every error path as one clear line."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from padim_utils.cli import main

QUICK = ["--config", "quick", "--d", "10", "--quiet"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_fit_predict_benchmark(quick_root, quick_category, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["fit", "--root", str(quick_root), "--category", quick_category, "--out", str(model), *QUICK]) == 0
    test_dir = quick_root / quick_category / "test"
    defect_dir = next(p for p in sorted(test_dir.iterdir()) if p.name != "good")
    assert main(["predict", "--model", str(model), "--input", str(defect_dir), "--out", str(tmp_path / "pred"),
                 "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pred" / "scores.csv")))
    assert len(rows) == len(list(defect_dir.iterdir()))
    assert all((tmp_path / "pred" / r["heatmap"]).is_file() and float(r["score"]) > 0 for r in rows)

    out = tmp_path / "bench.json"
    assert main(["benchmark", "--root", str(quick_root), "--category", quick_category, "--out", str(out),
                 "--figures", str(tmp_path / "fig"), *QUICK]) == 0
    record = json.loads(out.read_text())
    for key in ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro", "fit_seconds", "predict_seconds",
                "n_train", "n_test", "backbone", "d", "device", "peak_memory_bytes", "config"):
        assert key in record, key
    assert record["d"] == 10 and record["backbone"] == "efficientnet_lite0" and record["config"]["d"] == 10
    assert record["pixel_aupro"] > 0.3 and record["pixel_auroc"] > 0.7 and record["peak_memory_bytes"] > 0
    assert (tmp_path / "fig" / f"{quick_category}_examples.png").stat().st_size > 1000
    assert "image AUROC" in capsys.readouterr().out


def test_missing_root(tmp_path, capsys):
    err = _error(capsys, ["fit", "--root", str(tmp_path / "nope"), "--category", "bottle", "--out",
                          str(tmp_path / "m"), *QUICK])
    assert "nope" in err


def test_wrong_layout(tmp_path, capsys):
    (tmp_path / "cat" / "images").mkdir(parents=True)
    err = _error(capsys, ["benchmark", "--root", str(tmp_path), "--category", "cat", "--out", str(tmp_path / "o"),
                          *QUICK])
    assert "cat" in err and "train" in err


def test_image_without_mask(quick_root, quick_category, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(quick_root / quick_category, root / quick_category)
    mask = next((root / quick_category / "ground_truth").rglob("*_mask.png"))
    mask.unlink()
    err = _error(capsys, ["benchmark", "--root", str(root), "--category", quick_category, "--out",
                          str(tmp_path / "o.json"), *QUICK])
    assert mask.name in err


def test_corrupt_image(quick_root, quick_category, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(quick_root / quick_category, root / quick_category)
    bad = sorted((root / quick_category / "train" / "good").iterdir())[0]
    bad.write_bytes(b"not a png")
    err = _error(capsys, ["fit", "--root", str(root), "--category", quick_category, "--out",
                          str(tmp_path / "m"), *QUICK])
    assert bad.name in err


@pytest.mark.parametrize("extra, expected", [
    (["--backbone", "vgg16"], "vgg16"),
    (["--d", "999"], "d=999 is larger than the backbone's 176 channels"),
    (["--crop", "abc"], "--crop must be"),
    (["--config", "paper_r99"], "unknown config preset"),
    (["--reduction", "svd"], "reduction must be one of"),
])
def test_bad_options(quick_root, quick_category, tmp_path, capsys, extra, expected):
    err = _error(capsys, ["fit", "--root", str(quick_root), "--category", quick_category, "--out",
                          str(tmp_path / "m"), *QUICK, *extra])
    assert expected in err


def test_model_from_another_version(quick_root, quick_category, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = tmp_path / "m.safetensors"
    assert main(["fit", "--root", str(quick_root), "--category", quick_category, "--out", str(model), *QUICK]) == 0
    with safe_open(str(model), framework="pt") as f:
        meta = {**f.metadata(), "format_version": "99"}
    save_file(load_file(str(model)), str(model), metadata=meta)
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(quick_root), "--out", str(tmp_path)])
    assert "format 99" in err


def test_entry_point_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "padim_utils.cli", "predict", "--model", str(tmp_path / "x"),
                           "--input", ".", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "model file not found" in proc.stderr


def test_course_builds_the_site_in_quick_mode(tmp_path, monkeypatch, capsys):
    # what `make course` runs, on one chapter in quick mode
    from conftest import REPO

    monkeypatch.setenv("PADIM_QUICK", "1")
    monkeypatch.setenv("PADIM_DATA", str(tmp_path / "data"))
    out = tmp_path / "build"
    assert main(["course", "--notebooks", str(REPO / "notebooks"), "--out", str(out), "--only", "00", "--quiet"]) == 0
    page = (out / "00_setup_and_data.html").read_text()
    assert "padim-nav" in page and "celltag_solution" in page and "image/png" in page
    assert "00_setup_and_data.html" in (out / "index.html").read_text()
    assert (out / "mathjax" / "MathJax.js").is_file()
    assert "✓ Exercise 0.1: correct." in page and "jp-OutputArea-output" in page
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
