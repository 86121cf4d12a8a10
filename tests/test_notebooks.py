"""The course notebooks: stored as clean jupytext pairs, and every one runs top to bottom.

Quick mode (PADIM_QUICK=1) runs every chapter on the tiny embedded data, with exercise checks
strict (a wrong solution fails) and no error output allowed; where the real MVTec AD bottle data is
beside the repository, chapters 04-06 also run on it at full size.
"""

import ast
import json
import re
from pathlib import Path

import pytest

from conftest import BOTTLE_ROOT, REPO
from padim_utils.course.book import course_notebooks, execute_notebook, notebook_problems, read_notebook, with_solutions
from padim_utils.course.launch import chapter_extras
from padim_utils.extras import missing

NOTEBOOKS = course_notebooks(REPO / "chapters")  # the py:percent sources; their .ipynb pairs are in notebooks/
REAL_DATA_CHAPTERS = ("04", "05", "06")
#: Sentences that compare numbers of the run, said through `course.compare` (the issue-16 list and more).
CLAIMS = {
    "02": {"02.pca-keeps-variance", "02.random-vs-pca", "02.flatten"},
    "03": {"03.eps-small"},
    "04": {"04.beyond-sqrt-d", "04.max-differs-more", "04.scores-right", "04.shared-lower", "04.blur"},
    "05": {"05.aupro-lowest", "05.pro-below-tpr", "05.lead-shrinks", "05.threshold-holds"},
    "06": {"06.above-chance", "06.pixel-above-pro", "06.same-order"},
    "07": {"07.normal-frames-low", "07.max-vs-mean"},
    "08": {"08.joint-vs-single", "08.random-vs-pca"},
    "09": {"09.own-images", "09.rotation-raises", "09.shift-vs-defects", "09.cli-matches"},
    "10": {"10.table-I-joint", "10.table-I-sum", "10.table-II", "10.table-III-range", "10.table-III-interpolation",
           "10.table-IV", "10.table-V", "10.table-VI-drop", "10.table-VI-vs-paper", "10.model-size"},
}


def claims_problems(nb, chapter: str) -> list[str]:
    """What is wrong with the claims an executed chapter made through `compare`: a sentence other than the one
    its numbers make true, a shown text that is not the recorded one, a listed claim that was never made."""
    from padim_utils.course.notebook import CLAIM_KEY, verdict

    problems, made = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            claim = out.get("metadata", {}).get(CLAIM_KEY)
            if claim is None:
                continue
            made.add(claim["key"])
            truth = verdict(claim["a"], claim["b"], claim["tol"])
            said = truth if claim["sentences"][truth] is not None else ("more" if claim["a"] >= claim["b"] else "less")
            if (claim["verdict"], claim["said"]) != (truth, said):
                problems.append(f"{claim['key']}: says {claim['said']!r} for a = {claim['a']}, b = {claim['b']}")
            if out["data"].get("text/markdown") != claim["text"]:
                problems.append(f"{claim['key']}: the shown text is not the claim's")
    problems += [f"{key}: not said" for key in sorted(CLAIMS.get(chapter, set()) - made)]
    return problems


def _ids(paths):
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_pair_is_in_sync_and_stripped(path):
    ipynb = REPO / "notebooks" / f"{path.stem}.ipynb"
    assert ipynb.is_file(), f"{ipynb.name} missing: run `jupytext --sync chapters/{path.name}`"
    stored = json.loads(ipynb.read_text())
    for cell in stored["cells"]:
        assert not cell.get("outputs") and not cell.get("execution_count"), f"{ipynb.name} has outputs"
    py = read_notebook(path)
    assert [c["source"] for c in py.cells] == ["".join(c["source"]) for c in stored["cells"]], \
        f"{ipynb.name} differs from {path.name}: run `jupytext --sync chapters/{path.name}`"


def test_a_learner_sees_one_notebook_per_chapter():
    # JupyterLab's file browser and Colab open notebooks/: only the .ipynb there, one per chapter
    shown = sorted(p.name for p in (REPO / "notebooks").iterdir()
                   if p.is_file() and p.suffix != ".md" and not p.name.startswith("."))
    assert shown == [f"{p.stem}.ipynb" for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_chapter_shape(path):
    text = path.read_text()
    assert re.search(r"^# # \d\d · ", text, flags=re.M), "a '# NN · Title' heading"
    assert "**You will learn**" in text and "## Summary" in text
    assert 'tags=["parameters"]' in text and 'env_flag("PADIM_QUICK")' in text
    assert 'tags=["solution"]' in text and "check_exercise(" in text
    assert "show_source(" in text
    assert "padim_utils.cli" not in text and not re.search(r"padim_utils(\.\w+)*\._\w", text), \
        "notebooks use public names only"
    for cell in read_notebook(path).cells:  # prose swallowed by a code cell (a missing "# %% [markdown]")
        assert not (cell.cell_type == "code" and re.search(r"^# #+ ", cell.source, flags=re.M)), cell.source[:200]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_comparing_sentence_can_be_said(path):
    # a quick run says one sentence of each `compare`; the others (said on other data) must format too
    import string

    said = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "compare"):
            continue
        said += 1
        fields = {"a", "b", "diff", "gap", "ratio"} | {k.arg for k in node.keywords}
        sentences = {k.arg: k.value for k in node.keywords if k.arg in ("more", "less", "same")}
        assert {"more", "less"} <= set(sentences), ast.unparse(node)[:80]
        for name, value in sentences.items():
            assert isinstance(value, ast.Constant) and isinstance(value.value, str), f"{name}: a plain string"
            used = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(value.value) if f}
            assert used <= fields, f"{name} uses {used - fields}: {value.value[:60]}"
            value.value.format(**{f: 0.5 for f in fields})  # every format spec fits a number
    assert said >= len(CLAIMS.get(path.name[:2], ())), "every listed claim is made with compare"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_solutions_are_folded_and_skipped_by_run_all(path):
    # JupyterLab's Run All executes every code cell: a solution there would hand out the check's ✓ for free.
    nb = read_notebook(path)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.cell_type == "raw" for c in solutions), "solutions are raw cells (Run All skips them)"
    for cell in solutions:
        assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}, "folded in JupyterLab"
        ast.parse(cell.source)  # what the book runs
    runnable = with_solutions(read_notebook(path))
    assert [c.cell_type for c in runnable.cells if "solution" in c.metadata.get("tags", [])] == ["code"] * len(solutions)


def test_run_all_without_solutions_shows_no_tick(quick_data_home, monkeypatch):
    # what a learner sees after Run All in JupyterLab, before answering: the checks ask for an answer
    monkeypatch.setenv("PADIM_DATA", str(quick_data_home))
    monkeypatch.setenv("PADIM_DEVICE", "cpu")
    path = NOTEBOOKS[0]
    nb = execute_notebook(read_notebook(path), cwd=path.parent, quick=True, solutions=False)
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "✓" not in outputs and "✗ Exercise 0.1: not answered yet" in outputs


@pytest.fixture(scope="session")
def quick_data_home(tmp_path_factory):
    return tmp_path_factory.mktemp("padim_data")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_quick_mode(path, quick_data_home, monkeypatch):
    absent = [m for extra in chapter_extras(path.stem) for m in missing(extra)]
    if absent:
        pytest.skip(f"{path.stem} needs {', '.join(absent)} (extras {', '.join(chapter_extras(path.stem))})")
    monkeypatch.setenv("PADIM_DATA", str(quick_data_home))
    monkeypatch.setenv("PADIM_DEVICE", "cpu")
    nb = execute_notebook(read_notebook(path), cwd=path.parent, quick=True)
    assert notebook_problems(nb) == []
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    n_checks = sum(c.source.count("check_exercise(") for c in nb.cells if c.cell_type == "code")
    assert outputs.count("✓ Exercise") == n_checks > 0
    assert "✗" not in outputs
    assert claims_problems(nb, path.name[:2]) == []  # every comparing sentence is the one the run's numbers make true
    for written in re.findall(r"-> (\S+\.(?:json|md))$", outputs, flags=re.M):  # a path it prints is where it wrote
        assert Path(written).is_absolute() and Path(written).is_file(), written


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in REAL_DATA_CHAPTERS],
                         ids=_ids([p for p in NOTEBOOKS if p.name[:2] in REAL_DATA_CHAPTERS]))
def test_notebook_runs_on_real_bottle(path, monkeypatch):
    if not (BOTTLE_ROOT / "bottle").is_dir():
        pytest.skip(f"real MVTec AD data not found at {BOTTLE_ROOT}")
    monkeypatch.setenv("PADIM_DATA", str(BOTTLE_ROOT.parent))  # $PADIM_DATA/mvtec_ad/bottle
    monkeypatch.setenv("PADIM_DEVICE", "cpu")
    nb = execute_notebook(read_notebook(path), cwd=path.parent, quick=False)
    assert notebook_problems(nb) == []
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Data: MVTec AD category 'bottle'" in outputs and "✗" not in outputs
    assert claims_problems(nb, path.name[:2]) == []
