"""`padim fit/benchmark --dataset ...` and `padim synth --stc`: every dataset through the command line."""

import json

import pytest

from padim_utils.cli import main
from padim_utils.datasets.registry import DATASET_NAMES

QUICK = ["--config", "quick", "--quiet"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_knows_every_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--dataset", "nope", "--category", "x", "--out", "m.safetensors"])
    choices = capsys.readouterr().err.split("choose from", 1)[1]
    assert len(DATASET_NAMES) == 6 and all(name in choices for name in DATASET_NAMES)


def test_benchmark_stc_reports_frame_and_pixel_auroc(tmp_path, capsys):
    root = tmp_path / "stc"
    assert main(["synth", "--stc", "--root", str(root)]) == 0
    assert (root / "training" / "videos" / "01_001.avi").is_file()
    capsys.readouterr()
    out = tmp_path / "stc01.json"
    assert main(["benchmark", "--dataset", "stc", "--root", str(root), "--category", "01", "--frames-per-video",
                 "12", "--out", str(out), *QUICK]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == "stc" and record["n_train"] == 24 and record["n_test"] == 72
    # measured with 12 frames per video (run_stc, the default train_codec): 0.85 frame AUROC, 0.99 pixel AUROC
    assert record["frame_auroc"] > 0.65 and record["pixel_auroc"] > 0.75 and record["train_codec"] == "match"
    printed = capsys.readouterr().out
    assert f"frame AUROC {record['frame_auroc']:.3f}, pixel AUROC {record['pixel_auroc']:.3f}" in printed


def test_train_codec_option_reaches_the_stc_loader():
    from padim_utils.cli import data_args, make_parser

    args = make_parser().parse_args(["benchmark", "--dataset", "stc", "--category", "01", "--train-codec", "none",
                                     "--out", "x.json"])
    assert data_args(args)[3] == {"train_codec": "none"}
    with pytest.raises(SystemExit):  # argparse: one line naming the choices, exit 2
        make_parser().parse_args(["fit", "--dataset", "stc", "--train-codec", "h264", "--out", "m"])


def test_fit_and_benchmark_other_datasets(quick_root, quick_category, tmp_path, capsys):
    model = tmp_path / "rd.safetensors"
    assert main(["fit", "--dataset", "rd-mvtec", "--rd-seed", "3", "--root", str(quick_root), "--category",
                 quick_category, "--crop", "56", "--out", str(model), *QUICK]) == 0
    assert model.is_file() and "on 8 images" in capsys.readouterr().out
    cat = quick_root / quick_category
    out = tmp_path / "own.json"
    assert main(["benchmark", "--dataset", "folder", "--normal-dir", str(cat / "train" / "good"), "--test-dir",
                 str(cat / "test"), "--out", str(out), *QUICK]) == 0
    record = json.loads(out.read_text())
    assert record["pixel_auroc"] is None and record["image_auroc"] > 0.5
    printed = capsys.readouterr().out
    assert "pixel AUROC and AU-PRO skipped" in printed and "| n/a | n/a |" in printed


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "--dataset", "btad", "--out", "x.json"], "--category is required for --dataset btad"),
    (["fit", "--dataset", "mvtec", "--category", "bottle", "--frames-per-video", "3", "--out", "m"],
     "frames_per_video do not apply to dataset mvtec"),
    (["fit", "--dataset", "folder", "--out", "m"], "normal_dir is required"),
])
def test_dataset_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PADIM_DATA", str(tmp_path))
    assert message in _error(capsys, [*argv, *QUICK])


def test_default_root_is_the_data_home(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PADIM_DATA", str(tmp_path))
    err = _error(capsys, ["fit", "--dataset", "visa", "--category", "candle", "--out", "m", *QUICK])
    assert str(tmp_path / "visa") in err


def test_download_without_address_says_what_to_do(tmp_path, capsys):
    err = _error(capsys, ["download", "stc", "--root", str(tmp_path / "stc"), "--quiet"])
    assert "download shanghaitech.tar.gz by hand" in err and str(tmp_path / "downloads") in err
    assert not (tmp_path / "stc").exists()
