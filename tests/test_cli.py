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


def test_version(capsys):
    from padim_utils import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"padim {__version__}"
    proc = subprocess.run([sys.executable, "-m", "padim_utils.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"padim {__version__}"


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
    assert main(["course", "--notebooks", str(REPO / "chapters"), "--out", str(out), "--only", "00", "--quiet"]) == 0
    page = (out / "00_setup_and_data.html").read_text()
    assert "padim-nav" in page and "celltag_solution" in page and "image/png" in page
    index = (out / "index.html").read_text()
    assert "00_setup_and_data.html" in index
    assert "You will learn what this course runs on" in index  # a line describing the chapter
    assert "<b>quick mode</b>" in index and "Data: embedded synthetic category &#x27;bottle_syn&#x27;" in index
    assert "data/mvtec_ad/" in index  # how to switch to real MVTec AD
    assert '<a href="notebooks/00_setup_and_data.ipynb" download>' in index
    executed = json.loads((out / "notebooks" / "00_setup_and_data.ipynb").read_text())
    assert any(o for c in executed["cells"] for o in c.get("outputs", []))  # the download holds the outputs
    assert (out / "mathjax" / "MathJax.js").is_file()
    assert "✓ Exercise 0.1: correct." in page and "jp-OutputArea-output" in page
    assert str((out / "index.html").resolve()) in capsys.readouterr().out


def _config(*argv):
    from padim_utils.cli import build_config, make_parser

    return build_config(make_parser().parse_args(["fit", "--out", "m.safetensors", *argv]))


@pytest.mark.parametrize("argv, backbone, reduction, d", [
    # --backbone takes the new backbone's paper setting (anomalib's n_features), not the preset's d
    (["--config", "paper_r18", "--backbone", "wide_resnet50_2"], "wide_resnet50_2", "random", 550),
    (["--config", "paper_wr50", "--backbone", "resnet18"], "resnet18", "random", 100),
    (["--config", "paper_effb5", "--backbone", "resnet18"], "resnet18", "random", 100),
    (["--config", "offline_lite0", "--backbone", "efficientnet_b5"], "efficientnet_b5", "none", None),
    # explicit --d / --reduction win
    (["--config", "paper_r18", "--backbone", "wide_resnet50_2", "--d", "300"], "wide_resnet50_2", "random", 300),
    (["--config", "paper_r18", "--backbone", "wide_resnet50_2", "--reduction", "pca"], "wide_resnet50_2", "pca", 550),
    (["--config", "paper_wr50", "--backbone", "resnet18", "--reduction", "none"], "resnet18", "none", None),
    # --d on a preset that keeps every channel asks for d random channels
    (["--config", "paper_effb5", "--d", "200"], "efficientnet_b5", "random", 200),
    (["--config", "paper_effb5", "--backbone", "wide_resnet50_2", "--d", "64"], "wide_resnet50_2", "random", 64),
    # no --backbone: the preset as it is
    (["--config", "paper_wr50"], "wide_resnet50_2", "random", 550),
    (["--config", "paper_effb5"], "efficientnet_b5", "none", None),
])
def test_backbone_option_takes_the_backbones_paper_d(argv, backbone, reduction, d):
    cfg = _config(*argv)
    assert (cfg.backbone, cfg.reduction) == (backbone, reduction)
    if d is not None:
        assert cfg.d == d


def test_backbone_option_resets_the_layers(monkeypatch):
    from padim_utils import config

    custom = config.PadimConfig(backbone="efficientnet_lite0", layers=("blocks.2", "blocks.4"))
    monkeypatch.setitem(config.PRESETS, "custom", custom)
    assert _config("--config", "custom").layers == ("blocks.2", "blocks.4")
    assert _config("--config", "custom", "--backbone", "resnet18").layers is None  # resnet18's own layers
    assert _config("--config", "custom", "--backbone", "resnet18", "--layers", "layer2,layer3").layers == (
        "layer2", "layer3")


def test_interpolation_option():
    assert _config("--config", "paper_r18").interpolation == "bicubic"
    assert _config("--config", "quick").interpolation == "bilinear"
    assert _config("--config", "paper_r18", "--interpolation", "bilinear").interpolation == "bilinear"
    assert _config("--config", "offline_lite0", "--interpolation", "bicubic").interpolation == "bicubic"
    with pytest.raises(SystemExit):
        _config("--interpolation", "lanczos")


def test_fit_and_predict_with_bicubic(quick_root, quick_category, tmp_path):
    from padim_utils.model import Padim

    model = tmp_path / "m.safetensors"
    assert main(["fit", "--root", str(quick_root), "--category", quick_category, "--out", str(model), *QUICK,
                 "--interpolation", "bicubic"]) == 0
    assert Padim.load(model).config.interpolation == "bicubic"
    # predict reads the images the way the model was fitted (a bilinear dataset would be refused)
    good = quick_root / quick_category / "test" / "good"
    assert main(["predict", "--model", str(model), "--input", str(good), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))) == len(list(good.iterdir()))


@pytest.mark.parametrize("uid, root", [("0", True), ("1000", False)])
def test_make_lab_allows_root_only_for_root(tmp_path, uid, root):
    # JupyterLab refuses to run as root without --allow-root (Docker users are root)
    from conftest import REPO

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (fake / "id").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["make", "-n", "lab", "STAMP=Makefile"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if "jupyter lab" in line]
    assert line.endswith("--allow-root") is root
