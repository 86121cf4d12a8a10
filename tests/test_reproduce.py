"""`padim reproduce`: every table from a quick run, the published numbers, mean ± SEM, resume, bad arguments.

One quick run of all eight tables (the `padim reproduce --quick` command, about a minute on a 2-core
CPU) is shared by the tests below; the resume and interruption tests re-run parts of it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image

from conftest import REPO
from padim_utils import cli
from padim_utils.experiments import reproduction as rp
from padim_utils.errors import PadimError
from padim_utils.experiments.tables import explain_gaps, gaps, mean_sem, table_markdown
from padim_utils.experiments.units import Unit

PAPER_FILE = REPO / "padim_utils" / "paper_results.json"
REAL_RUN_UNIT = rp.run_unit


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("reproduce_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADIM_DATA", str(home))
        mp.setenv("PADIM_PROGRESS", "0")
        yield home


@pytest.fixture(scope="module")
def quick_run(data_home, tmp_path_factory):
    """`padim reproduce --quick --table all` through the command line: (out folder, units computed)."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    calls = []
    real = rp.run_unit

    def spy(unit, ctx):
        calls.append(unit)
        return real(unit, ctx)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rp, "run_unit", spy)
        code = cli.main(["reproduce", "--quick", "--table", "all", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    return out, calls


def _results(out: Path) -> dict[Unit, dict]:
    """Every unit result under OUT/results, read back without the package's own reader."""
    found = {}
    for path in (out / "results").rglob("seed*.json"):
        record = json.loads(path.read_text())
        found[Unit(**record["unit"])] = record
    return found


def _row(table, **labels):
    rows = [r for r in table["rows"] if all(r["labels"].get(k) == v for k, v in labels.items())]
    assert len(rows) == 1, f"{labels}: {len(rows)} rows"
    return rows[0]


# ---------------------------------------------------------------------------- the quick run
def test_quick_run_writes_every_table(quick_run):
    out, calls = quick_run
    tables = rp.load_tables(out)
    assert list(tables) == list(rp.TABLES)
    readme = (out / "README.md").read_text()
    for t, table in tables.items():
        for ext in ("md", "json", "png"):
            assert (out / f"table_{t}.{ext}").is_file()
            assert f"table_{t}.{ext}" in readme
        with Image.open(out / f"table_{t}.png") as im:
            assert im.size[0] > 400 and im.size[1] > 200
        assert table["table"] == t and table["rows"] and table["columns"] and table["citation"]
        assert table["provenance"] and table["paper_models"]
        for row in table["rows"]:
            assert row["backbone"] == "efficientnet_lite0"
            assert row["backbone_label"] == "offline_lite0 (not the paper's backbone)"
            assert set(row["labels"]) == set(table["labels"])
            assert set(row["ours"]) == {c["key"] for c in table["columns"]}
        md = (out / f"table_{t}.md").read_text()
        assert md.startswith(f"## Table {t} · ") and "offline_lite0 (not the paper's backbone)" in md
        assert md.count("\n| ") == len(table["rows"]) + 1  # header + one line per row
    # one unit per (study, category, setting, seed), each computed once; seeds only where the choice is random
    assert len(calls) == len(set(calls)) == len(_results(out))
    seeds = {(u.study, u.setting): set() for u in calls}
    for u in calls:
        seeds[(u.study, u.setting)].add(u.seed)
    assert seeds[("reduction", "random_100")] == {0, 1} and seeds[("reduction", "pca_100")] == {0}
    assert seeds[("layers", "joint_gaussian_1_2_3")] == {0} and seeds[("cost", "main")] == {0}
    assert seeds[("mvtec", "main")] == {0, 1} and {s for (st, _), v in seeds.items() if st == "rd" for s in v} == {0, 1}


def test_every_published_number_is_the_paper_files(quick_run):
    """Each published value equals the one at its source path in paper_results.json (read here with json)."""
    paper = json.loads(PAPER_FILE.read_text())

    def at(path):
        node = paper
        for part in path.split("/"):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    tables = rp.load_tables(quick_run[0])
    for t, table in tables.items():
        shown = [p for r in table["rows"] for p in r["paper"] if p["value"] is not None]
        assert shown, f"table {t} shows no published number"
        for p in shown:
            assert at(p["source"]) == p["value"], (t, p)
    # a few by hand, from the paper (Defard et al., 2020)
    assert _row(tables["I"], setting="layers 1+2+3, one joint Gaussian")["paper"][0]["value"] == 0.971
    mean = _row(tables["III"], group="all", interpolation="bilinear")
    assert {(p["model"], p["metric"]): p["value"] for p in mean["paper"]}[("PaDiM-WR50-Rd550", "pixel_aupro")] == 0.921
    assert [p["value"] for p in _row(tables["IV"], scene="mean of 2")["paper"]] == [0.912, 0.899]
    assert [p["value"] for p in _row(tables["VI"], group="all")["paper"]] == [0.922, 0.731]
    assert 0.23 in [p["value"] for p in _row(tables["VII"], category="mean of 2")["paper"]]
    assert 3.8 in [p["value"] for p in _row(tables["VIII"], data="mvtec", category="mean of 2")["paper"]]
    # nothing is published for the synthetic categories
    assert all(p["value"] is None for p in _row(tables["III"], category="bottle_syn")["paper"])


def test_table_numbers_are_the_units_mean_and_sem(quick_run):
    """Recomputed from the unit files: seed by seed means over the categories, then numpy mean and scipy's SEM."""
    out = quick_run[0]
    results = _results(out)
    tables = rp.load_tables(out)

    def per_seed(study, setting, metric):
        seeds = sorted({u.seed for u in results if u.study == study and u.setting == setting})
        return [np.mean([r[metric] for u, r in results.items() if (u.study, u.setting, u.seed) == (study, setting, s)])
                for s in seeds]

    v = per_seed("mvtec", "main", "pixel_aupro")
    ours = _row(tables["III"], group="all", interpolation="bilinear")["ours"]["pixel_aupro"]
    assert len(v) == 2 and ours["n"] == 2
    assert ours["mean"] == pytest.approx(np.mean(v), abs=1e-12)
    assert ours["sem"] == pytest.approx(scipy.stats.sem(v), abs=1e-12)
    v = per_seed("reduction", "random_100", "pixel_auroc")
    ours = _row(tables["II"], setting="random, d = 100")["ours"]["pixel_auroc"]
    assert ours["sem"] == pytest.approx(scipy.stats.sem(v), abs=1e-12)
    pca = _row(tables["II"], setting="PCA, d = 100")["ours"]["pixel_auroc"]
    assert pca["n"] == 1 and pca["sem"] is None
    # Table VI: each Rd draw averaged over the channel seeds, then mean ± SEM over the 5 draws
    draws = [np.mean([r["pixel_auroc"] for u, r in results.items() if u.study == "rd" and u.setting == f"rd{d}"])
             for d in range(5)]
    ours = _row(tables["VI"], group="all")["ours"]["pixel_auroc"]
    assert ours["n"] == 5 and ours["sem"] == pytest.approx(scipy.stats.sem(draws), abs=1e-12)
    # Table V reads the same units as Table III
    assert _row(tables["V"], category="bottle_syn")["ours"]["image_auroc"]["values"] == \
        [r["image_auroc"] for u, r in sorted(results.items())
         if (u.study, u.category, u.setting) == ("mvtec", "bottle_syn", "main")]
    # Table III's last row: the same units with bicubic resizing and upsampling instead of the preset's bilinear
    v = per_seed("mvtec", "bicubic", "pixel_auroc")
    ours = _row(tables["III"], group="all", interpolation="bicubic")["ours"]["pixel_auroc"]
    assert ours["mean"] == pytest.approx(np.mean(v), abs=1e-12) and ours["n"] == 2
    assert {r["config"]["interpolation"] for u, r in results.items() if u.setting == "bicubic"} == {"bicubic"}
    assert {r["config"]["interpolation"] for u, r in results.items() if u.setting == "main"} == {"bilinear"}
    assert any("bicubic" in why for why in explain_gaps(tables["III"]))


def test_second_run_computes_nothing(quick_run, monkeypatch):
    out = quick_run[0]
    before = rp.load_tables(out)
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: pytest.fail(f"{unit} computed again"))
    tables = rp.reproduce("all", out=out, quick=True, device="cpu", progress=False)
    assert [r["ours"] for r in tables["III"]["rows"]] == [r["ours"] for r in before["III"]["rows"]]


def test_cli_continues_a_finished_run(quick_run, monkeypatch, capsys):
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: pytest.fail(f"{unit} computed again"))
    assert cli.main(["reproduce", "--quick", "--table", "III", "--out", str(quick_run[0]), "--quiet"]) == 0
    assert "Table III: Localisation per class" in capsys.readouterr().out


def test_interrupted_run_keeps_finished_units(data_home, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, calls = rp.run_unit, []

    def interrupt_third(unit, ctx):
        calls.append(unit)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(unit, ctx)

    monkeypatch.setattr(rp, "run_unit", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce("I", out=out, quick=True, device="cpu", progress=False)
    saved = _results(out)
    assert sorted(saved) == sorted(calls[:2]) and not (out / "table_I.json").exists()

    # the first category's layer outputs were saved before the interruption: the rerun reads them
    from padim_utils.experiments.features import FeatureCache

    computed, real_compute = [], FeatureCache.compute.__func__
    monkeypatch.setattr(FeatureCache, "compute", classmethod(
        lambda cls, dataset, *a, **k: computed.append(dataset.category) or real_compute(cls, dataset, *a, **k)))
    again = []
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: again.append(unit) or real(unit, ctx))
    tables = rp.reproduce("I", out=out, quick=True, device="cpu", progress=False)
    assert len(again) == 10 - 2 and not set(again) & set(saved)  # 2 categories x 5 settings, minus the saved 2
    assert len(_results(out)) == 10 and len(tables["I"]["rows"]) == 5
    assert calls[0].category not in computed, "the interrupted category's features are read back from disk"
    assert computed == [c for c in {u.category: None for u in again} if c != calls[0].category] * 2  # train, test


# ---------------------------------------------------------------------------- pieces
def test_mean_sem_against_numpy_and_scipy():
    values = [0.91, 0.87, 0.95, 0.90]
    s = mean_sem(values)
    assert s["mean"] == pytest.approx(np.mean(values)) and s["n"] == 4
    assert s["sem"] == pytest.approx(scipy.stats.sem(values))
    assert s["sem"] == pytest.approx(np.std(values, ddof=1) / 2)
    assert mean_sem([0.5]) == {"mean": 0.5, "sem": None, "n": 1, "values": [0.5]}
    assert mean_sem([])["mean"] is None


def _hand_table():  # two rows: a with two seeds and a published value, b with one seed and none
    return {"table": "III", "title": "t", "paper": "Table III", "labels": ["category"], "paper_models": ["P"],
            "columns": [{"key": "pixel_auroc", "name": "pixel AUROC", "unit": "", "fmt": ".3f"}],
            "rows": [{"labels": {"category": "a"}, "backbone": "x", "backbone_label": "lab",
                      "ours": {"pixel_auroc": mean_sem([0.4, 0.6])},
                      "paper": [{"model": "P", "metric": "pixel_auroc", "value": 0.97, "source": "x"}]},
                     {"labels": {"category": "b"}, "backbone": "x", "backbone_label": "lab",
                      "ours": {"pixel_auroc": mean_sem([0.5])},
                      "paper": [{"model": "P", "metric": "pixel_auroc", "value": None, "source": None}]}],
            "notes": [], "provenance": [], "spread": "s",
            "run": {"backbones": {"x": "lab"}, "data": {"mvtec": "d", "stc": "d"}, "quick": False, "seeds": 2}}


def test_markdown_shows_sem_only_for_several_seeds():
    md = table_markdown(_hand_table())
    assert "| a | lab | 0.500 ± 0.100 | 0.970 |" in md
    assert "| b | lab | 0.500 | – |" in md  # MISSING: the one "no number" mark of every table


def test_gaps_pair_our_mean_with_each_published_value():
    assert gaps(_hand_table()) == [{"table": "III", "row": "a", "metric": "pixel_auroc", "label": "pixel AUROC",
                                    "model": "P", "ours": pytest.approx(0.5), "paper": 0.97,
                                    "gap": pytest.approx(0.5 - 0.97), "backbone": "x"}]  # b: nothing published


def test_backbone_choice(monkeypatch):
    present = {"resnet18", "efficientnet_lite0"}
    monkeypatch.setattr(rp, "weights_present", lambda name: name in present)
    assert rp.choose_backbones("I") == ("resnet18",)
    assert rp.choose_backbones("III") == ("resnet18",)  # WR50's weights are not here
    assert rp.choose_backbones("VI") == ("efficientnet_lite0",)
    assert rp.choose_backbones("VI", "resnet18") == ("resnet18",)
    assert rp.backbone_label("efficientnet_lite0") == "offline_lite0 (not the paper's backbone)"
    assert "not the paper's" not in rp.backbone_label("resnet18")


def test_plan_shares_units_between_tables(data_home):
    sources = rp.find_sources(True)
    backbones = {t: ("efficientnet_lite0",) for t in rp.TABLES}
    both = rp.make_plan(("III", "V"), backbones, 3, sources, quick=True)
    assert both == rp.make_plan(("III",), backbones, 3, sources, quick=True)  # V reads III's units
    assert len(both) == len(sources.categories) * 3 * 2  # the preset's interpolation and the other one
    assert set(rp.make_plan(("V",), backbones, 3, sources, quick=True)) < set(both)
    plan = rp.make_plan(rp.TABLES, backbones, 3, sources, quick=True)
    assert len(plan) == len(set(plan))
    n_cat, n_scene = len(sources.categories), len(sources.scenes)
    expected = n_cat * (5 + (3 + 2 * 3) + 2 * 3 + 5 * 3 + 1) + n_scene * 3  # I, II, III/V, VI, VII; IV
    assert len(plan) == expected
    fewer = rp.make_plan(rp.TABLES, backbones, 3, sources, quick=True, draws=2)  # Table VI on 2 of the 5 draws
    assert set(fewer) < set(plan) and len(plan) - len(fewer) == n_cat * 3 * 3
    assert {u.setting for u in fewer if u.study == "rd"} == {"rd0", "rd1"}


def test_bad_arguments_are_one_line(tmp_path, capsys):
    with pytest.raises(PadimError, match="unknown table 'IX'"):
        rp.parse_tables("I,IX")
    assert rp.parse_tables("iii,I") == ("I", "III") and rp.parse_tables("all") == rp.TABLES
    for seeds in (0, -1, 1.5, True):
        with pytest.raises(PadimError, match="--seeds"):
            rp.reproduce("I", out=tmp_path / "o", seeds=seeds)
    for draws in (0, 6, 1.5, True):
        with pytest.raises(PadimError, match="--rd-draws"):
            rp.reproduce("I", out=tmp_path / "o", rd_draws=draws)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [(["--table", "IX"], "unknown table 'IX'"), (["--seeds", "0"], "--seeds"), (["--seeds", "two"], "--seeds"),
             (["--out", str(a_file)], "not a folder"), (["--backbone", "vgg"], "unknown backbone"),
             (["--rd-draws", "6"], "--rd-draws"), (["--rd-draws", "two"], "--rd-draws")]
    for args, text in cases:
        out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
        assert cli.main(["reproduce", *args, *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("padim: error: ") and text in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # nothing written before the arguments are checked


def test_command_line_error_in_a_subprocess(tmp_path):
    run = subprocess.run([sys.executable, "-m", "padim_utils.cli", "reproduce", "--table", "X", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["padim: error: unknown table 'X'; choose from I, II, III, IV, V, VI, "
                                               "VII, VIII or all"]


def test_a_run_on_other_data_is_kept_apart(quick_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(quick_run[0], out)
    other = tmp_path / "mvtec"
    shutil.copytree(rp.find_sources(True).mvtec_root / "bottle_syn", other / "bottle_syn")
    calls = []
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: calls.append(unit) or REAL_RUN_UNIT(unit, ctx))
    tables = rp.reproduce("III", out=out, quick=True, data=other, device="cpu", progress=False)
    assert len(calls) == 4  # bottle_syn, 2 seeds, 2 interpolations: nothing taken from the first run's folder
    keys = [rp.run_key(True, rp.find_sources(True)), rp.run_key(True, rp.find_sources(True, other))]
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(keys)
    assert [r["labels"]["category"] for r in tables["III"]["rows"]] == ["bottle_syn", "mean of 1", "mean of 1",
                                                                        "mean of 1"]


def test_figures_have_titles_labels_and_the_paper(quick_run):
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_reproduced_table

    tables = rp.load_tables(quick_run[0])
    for t, table in tables.items():
        fig = plot_reproduced_table(table)
        title = fig._suptitle.get_text()
        assert title.startswith(f"Table {t}: ") and "not the paper's backbone" in title
        assert len(fig.axes) == len(table["columns"])
        for ax, col in zip(fig.axes, table["columns"]):
            assert ax.get_title() == col["name"] and ax.get_xlabel() and col["name"] in ax.get_ylabel()
            assert len(ax.patches) == len(table["rows"])  # one bar per row
        labels = [text.get_text() for text in fig.legends[0].get_texts()]
        ours = {"I": "ours (one run per row, no error bar)", "VI": "ours (± SEM over random preprocessings)",
                "VII": "ours (one run per row, no error bar)", "VIII": "ours (one run per row, no error bar)"}
        assert labels[0] == ours.get(t, "ours (± SEM over seeds)") and any(label.startswith("paper: ") for label in labels)
        if t == "VII":  # seconds: ours ~1e-2 s (as measured: load makes it vary), the paper's SPADE 7.1 s
            ax = fig.axes[0]
            drawn = [p.get_height() for p in ax.patches] + [y for c in ax.collections for _, y in c.get_offsets()]
            drawn = [v for v in drawn if v > 0]
            assert ax.get_yscale() == ("log" if max(drawn) / min(drawn) > 100 else "linear")
        plt.close(fig)


def test_a_tiny_sem_is_not_printed_as_zero():
    from padim_utils.experiments.tables import _cell

    assert _cell(mean_sem([0.9941, 0.9942]), ".3f") == "0.994 ± <0.001"
    assert _cell(mean_sem([0.0848, 0.0956]), ".3g") == "0.0902 ± 0.0054"


def test_explain_gaps_names_only_what_differs():
    paper_like = {"table": "III", "run": {"backbones": {"resnet18": rp.backbone_label("resnet18")},
                                          "data": {"mvtec": "MVTec AD", "stc": "ShanghaiTech Campus"},
                                          "quick": False, "seeds": 10, "interpolation": {"resnet18": "bicubic"},
                                          "categories": ["bottle"]}}
    assert explain_gaps(paper_like) == ["our means cover 1 MVTec AD category (those present here); the paper's "
                                        "cover all 15"]
    paper_like["run"]["categories"] = list(range(15))
    assert explain_gaps(paper_like) == []  # the paper's setting: nothing to explain
    ours = {"table": "II", "run": {"backbones": {"efficientnet_lite0": rp.backbone_label("efficientnet_lite0")},
                                   "data": {"mvtec": "embedded synthetic", "stc": "synthetic STC-layout"},
                                   "quick": True, "seeds": 2, "interpolation": {"efficientnet_lite0": "bilinear"},
                                   "categories": ["bottle_syn"]}}
    reasons = explain_gaps(ours)
    for word in ("another backbone", "d scaled", "other data", "quick mode", "bilinear", "fewer seeds"):
        assert sum(word in r for r in reasons) == 1, word


@pytest.mark.slow
def test_real_bottle_beside_the_paper(bottle_root, tmp_path, monkeypatch):
    """Table III on the real MVTec AD bottle (about a minute on one CPU thread): our pixel AUROC beside the paper's
    per-category values (0.981 R18, 0.983 WR50); README's single-seed value is 0.982."""
    monkeypatch.setenv("PADIM_DATA", str(tmp_path / "data"))
    tables = rp.reproduce("III", out=tmp_path / "out", seeds=2, data=bottle_root, device="cpu", progress=False)
    row = _row(tables["III"], category="bottle")
    assert row["data"] == "MVTec AD" and row["ours"]["pixel_auroc"]["n"] == 2
    assert row["ours"]["pixel_auroc"]["mean"] == pytest.approx(0.983, abs=0.005)
    assert [p["value"] for p in row["paper"] if p["metric"] == "pixel_auroc"] == [0.981, 0.983]
    assert not any("synthetic" in n for n in tables["III"]["notes"])


# ---------------------------------------------------------------------------- what a run writes, what it reuses
def test_a_run_writes_only_under_out_and_only_what_its_tables_need(quick_root, tmp_path, monkeypatch, capsys):
    """Table III needs no STC: nothing is generated for it, and nothing lands in the working directory."""
    data = tmp_path / "mvtec"
    shutil.copytree(quick_root / "bottle_syn", data / "bottle_syn")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("PADIM_DATA", raising=False)  # the data home is then ./data: it must stay unwritten
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    code = cli.main(["reproduce", "--quick", "--table", "III", "--data", str(data), "--out", str(cwd / "out"),
                     "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in cwd.iterdir()) == ["out"]  # before: also data/stc_synthetic_quick (1.4 MB)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    run = json.loads(next((cwd / "out" / "results").glob("*/run.json")).read_text())
    assert run["stc_root"] is None and run["scenes"] == []
    assert "STC data: not used" in (cwd / "out" / "README.md").read_text()


def test_data_changed_in_place_is_computed_again(quick_root, tmp_path, monkeypatch, capsys):
    """The same --data folder and --out, the masks rewritten in between: the old results are not reused."""
    data, out = tmp_path / "mvtec", tmp_path / "out"
    shutil.copytree(quick_root / "bottle_syn", data / "bottle_syn")
    monkeypatch.setenv("PADIM_DATA", str(tmp_path / "home"))
    first = rp.reproduce("III", out=out, quick=True, data=data, device="cpu", progress=False)
    capsys.readouterr()
    again = rp.reproduce("III", out=out, quick=True, data=data, device="cpu", progress=False)
    said = capsys.readouterr().out
    assert "reused 4 of 4 saved results" in said and "bottle_syn 4" in said and "0 computed now, 4 reused" in said
    assert [r["ours"] for r in again["III"]["rows"]] == [r["ours"] for r in first["III"]["rows"]]
    for mask in (data / "bottle_syn" / "ground_truth").rglob("*.png"):  # invert every mask, in place
        Image.fromarray(255 - np.asarray(Image.open(mask).convert("L"))).save(mask)
    calls = []
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: calls.append(unit) or REAL_RUN_UNIT(unit, ctx))
    inverted = rp.reproduce("III", out=out, quick=True, data=data, device="cpu", progress=False)
    said = capsys.readouterr().out
    assert len(calls) == 4, "every result of the changed category is computed again"
    assert "computing 4 saved results again: their data changed" in said and "reused" not in said.split("\n")[0]
    pixel = [r["ours"]["pixel_auroc"] for r in inverted["III"]["rows"] if "pixel_auroc" in r["ours"]]
    before = [r["ours"]["pixel_auroc"] for r in first["III"]["rows"] if "pixel_auroc" in r["ours"]]
    assert pixel and pixel != before  # before the fix: the stale 0.9x was reported again


def _rewrite_in_place(path: Path) -> None:
    """Another picture in the same file: the same size on disk and the same modification time."""
    stat, size = path.stat(), path.stat().st_size
    img = np.asarray(Image.open(path).convert("RGB")).copy()
    img[: img.shape[0] // 2] = 0  # the top half black: compresses smaller
    Image.fromarray(img).save(path)
    data = path.read_bytes()
    assert len(data) < size
    path.write_bytes(data + bytes(size - len(data)))  # padded after PNG's end chunk, which readers ignore
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (size, stat.st_mtime_ns)


def test_a_result_is_reused_only_for_the_same_content_config_and_version(quick_root, tmp_path, monkeypatch, capsys):
    from padim_utils.experiments import units

    data, out = tmp_path / "mvtec", tmp_path / "out"
    shutil.copytree(quick_root / "bottle_syn", data / "bottle_syn")
    monkeypatch.setenv("PADIM_DATA", str(tmp_path / "home"))
    run = dict(out=out, quick=True, data=data, device="cpu", progress=False, seeds=1)
    base = units.base_config
    calls = []
    monkeypatch.setattr(rp, "run_unit", lambda unit, ctx: calls.append(unit) or REAL_RUN_UNIT(unit, ctx))

    def again(expected_reason: str, n: int = 2) -> dict:
        calls.clear()
        capsys.readouterr()
        tables = rp.reproduce("III", **run)
        said = capsys.readouterr().out
        assert len(calls) == n and f"computing {n} saved results again: {expected_reason}" in said, said
        return tables

    with monkeypatch.context() as m:  # another config (d = 8, bicubic) writes the results first
        m.setattr(units, "base_config", lambda *a, **k: base(*a, **k).replace(d=8, interpolation="bicubic"))
        other = rp.reproduce("III", **run)
    saved = sorted((out / "results").rglob("seed*.json"))
    assert len(saved) == 2 and {json.loads(p.read_text())["config"]["d"] for p in saved} == {8}
    first = again("another config or padim_utils version wrote them")
    assert {json.loads(p.read_text())["config"]["d"] for p in saved} == {32}
    assert [r["ours"] for r in first["III"]["rows"]] != [r["ours"] for r in other["III"]["rows"]]
    with monkeypatch.context() as m:  # another version writes them
        m.setattr(units, "__version__", "0.0.1")
        m.setattr(rp, "__version__", "0.0.1")
        again("another config or padim_utils version wrote them")
    assert {json.loads(p.read_text())["padim_utils_version"] for p in saved} == {"0.0.1"}
    again("another config or padim_utils version wrote them")
    edited = json.loads(saved[0].read_text())
    edited["image_auroc"] = 0.5  # a number changed by hand
    saved[0].write_text(json.dumps(edited))
    assert [r["ours"] for r in again("their checksum differs", 1)["III"]["rows"]] == \
        [r["ours"] for r in first["III"]["rows"]]
    # one training image rewritten in place, its size and modification time kept
    _rewrite_in_place(sorted((data / "bottle_syn" / "train" / "good").glob("*.png"))[0])
    changed = again("their data changed since (file contents)")
    monkeypatch.setattr(rp, "run_unit", REAL_RUN_UNIT)
    fresh = rp.reproduce("III", **{**run, "out": tmp_path / "fresh"})
    assert [r["ours"] for r in changed["III"]["rows"]] == [r["ours"] for r in fresh["III"]["rows"]]
    assert [r["ours"] for r in changed["III"]["rows"]] != [r["ours"] for r in first["III"]["rows"]]


def test_a_damaged_feature_file_is_computed_again(quick_root, tmp_path, monkeypatch):
    from padim_utils.experiments.features import FeatureCache
    from padim_utils.experiments.units import Context

    sources = rp.find_sources(True, quick_root, stc=False)
    unit = Unit("mvtec", "efficientnet_lite0", "bottle_syn", "main")
    ctx = Context(sources, True, "cpu", feature_dir=tmp_path / "features")
    cfg = ctx.config(unit)
    train, _ = ctx.caches(unit, cfg)
    files = sorted((tmp_path / "features").glob("*.safetensors"))
    assert len(files) == 2  # train and test
    for path in files:
        raw = bytearray(path.read_bytes())
        raw[-9:] = bytes(b ^ 0xFF for b in raw[-9:])  # the last tensor's end flipped in place: still readable
        path.write_bytes(bytes(raw))
    computed = []
    real = FeatureCache.compute.__func__
    monkeypatch.setattr(FeatureCache, "compute", classmethod(
        lambda cls, dataset, *a, **k: computed.append(dataset.split) or real(cls, dataset, *a, **k)))
    again, _ = Context(sources, True, "cpu", feature_dir=tmp_path / "features").caches(unit, cfg)
    assert computed == ["train", "test"]  # neither damaged file was served
    assert all(torch.equal(a, b) for a, b in zip(again.layers, train.layers))
    assert all(FeatureCache.load(p) for p in files)  # and both rewritten whole
