"""The notebooks' helpers: settings from the environment, finding the data, exercises, the paper's numbers,
the site builder's pages."""

import functools
import os
import json

import pytest

from conftest import BOTTLE_ROOT, REPO
from padim_utils.course import notebook as course
from padim_utils.config import env_flag
from padim_utils.errors import PadimError
from padim_utils.course.exercises import check, registered


@pytest.mark.parametrize("value, expected", [("1", True), ("YES", True), (" on ", True), ("0", False),
                                             ("false", False), ("", False)])
def test_env_flag_values(monkeypatch, value, expected):
    monkeypatch.setenv("PADIM_TEST_FLAG", value)
    assert env_flag("PADIM_TEST_FLAG") is expected


def test_env_flag_and_device_refuse_nonsense(monkeypatch):
    monkeypatch.delenv("PADIM_TEST_FLAG", raising=False)
    assert env_flag("PADIM_TEST_FLAG", default=True) is True
    monkeypatch.setenv("PADIM_TEST_FLAG", "maybe")
    with pytest.raises(PadimError, match="PADIM_TEST_FLAG='maybe'"):
        env_flag("PADIM_TEST_FLAG")
    monkeypatch.setenv("PADIM_DEVICE", "tpu")
    with pytest.raises(PadimError, match="PADIM_DEVICE='tpu'"):
        course.env_device()
    monkeypatch.setenv("PADIM_DEVICE", "CPU")
    assert course.env_device() == "cpu"


def test_course_data_generates_the_embedded_set_without_real_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PADIM_DATA", str(tmp_path))
    data = course.course_data(quick=True, device="cpu")
    assert (data.source, data.category, data.real) == ("embedded synthetic", "bottle_syn", False)
    assert data.categories == ("bottle_syn", "carpet_syn") and data.config.image_size == 64
    assert len(data.train()) == 8 and data.train().out_size == 64
    assert "Data: embedded synthetic category 'bottle_syn'" in capsys.readouterr().out
    with pytest.raises(PadimError, match="category 'bottle' not found"):
        course.course_data("bottle", quick=True)
    monkeypatch.setenv("PADIM_CATEGORY", "carpet_syn")
    assert course.course_data(quick=True, verbose=False).category == "carpet_syn"
    monkeypatch.setenv("PADIM_CATEGORY", "zipper")
    with pytest.raises(PadimError, match="category 'zipper' not found"):
        course.course_data(quick=True)


def test_course_data_prefers_real_mvtec(monkeypatch, capsys):
    if not (BOTTLE_ROOT / "bottle").is_dir():
        pytest.skip(f"real MVTec AD data not found at {BOTTLE_ROOT}")
    monkeypatch.setenv("PADIM_DATA", str(BOTTLE_ROOT.parent))
    data = course.course_data(quick=False, device="cpu")
    assert (data.source, data.category, data.root) == ("MVTec AD", "bottle", BOTTLE_ROOT)
    assert data.config.image_size == 256 and data.config.crop is None
    assert "(209 train / 83 test images at 256x256 px)" in capsys.readouterr().out


def test_check_exercise_prints_and_is_strict_when_asked(monkeypatch, capsys, quick_root, quick_category):
    from padim_utils.datasets.mvtec import MVTecDataset

    test = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None)
    monkeypatch.delenv("PADIM_STRICT_EXERCISES", raising=False)
    course.check_exercise("0.1", ...)
    assert "not answered yet" in capsys.readouterr().out
    course.check_exercise("0.1", (0, 0.0), test=test)
    assert "✗ Exercise 0.1: the number of defective images is 0" in capsys.readouterr().out
    monkeypatch.setenv("PADIM_STRICT_EXERCISES", "1")
    with pytest.raises(AssertionError, match="exercise 0.1"):
        course.check_exercise("0.1", (0, 0.0), test=test)
    with pytest.raises(PadimError, match="no exercise '99.9'"):
        check("99.9", 1)


def test_every_notebook_exercise_is_registered():
    keys = set(registered())
    for path in sorted((REPO / "chapters").glob("[0-9][0-9]_*.py")):
        import re

        for key in re.findall(r'check_exercise\("([\d.]+)"', path.read_text()):
            assert key in keys, f"{path.name} uses exercise {key}, which has no check"


def test_each_chapter_ends_by_naming_the_next_one():
    import re

    paths = sorted((REPO / "chapters").glob("[0-9][0-9]_*.py"))
    for path, following in zip(paths, paths[1:] + [None]):
        lines = re.findall(r"^# \*\*Next:\*\* (.*)$", path.read_text(), flags=re.M)
        assert len(lines) == 1, f"{path.name}: one 'Next:' line"
        if following is None:
            assert lines[0].startswith("the end of the course"), path.name
        else:
            assert lines[0].startswith(following.name[:2] + " "), f"{path.name} should lead to {following.name}"


def test_markdown_table_and_show_source(capsys):
    from padim_utils.course import markdown_table  # what a notebook imports: the package's one table writer

    table = markdown_table([{"a": 1, "b": 0.12345}, {"a": "x|y", "b": 2}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x\\|y | 2 |"]
    assert markdown_table({"k": "v"}).splitlines()[2] == "| k | v |"
    course.show_source(course.env_device)
    out = capsys.readouterr().out
    assert "def env_device" in out and "padim_utils/course/notebook.py" in out
    from padim_utils.gaussian import GaussianStats

    course.show_source(GaussianStats.update)  # decorated with @torch.no_grad(): its own code, its own file
    out = capsys.readouterr().out
    assert "def update" in out and "padim_utils/gaussian.py" in out


def test_environment_report_names_devices_and_weights():
    report = course.environment_report()
    assert report["weights: efficientnet_lite0"].startswith("offline")
    assert {"torch", "device", "weights: resnet18", "weights: wide_resnet50_2"} <= set(report)


# --------------------------------------------------------------------------- the paper's numbers
def test_packaged_paper_numbers_are_the_shared_reference():
    from padim_utils.paper import paper_results

    shared = REPO.parent / "shared" / "reference" / "paper_results.json"
    if not shared.is_file():
        pytest.skip(f"{shared} not found")
    assert paper_results() == json.loads(shared.read_text())
    assert "arXiv 2011.08785" in paper_results()["_about"]


def test_paper_value_and_table():
    from padim_utils.experiments.tables import paper_table
    from padim_utils.paper import paper_value

    assert paper_value("PaDiM-WR50-Rd550", "bottle", "pixel_auroc") == 0.983
    assert paper_value("PaDiM-WR50-Rd550", "mean", "pixel_aupro") == 0.921
    assert paper_value("PaDiM-R18-Rd100", "carpet", "pixel_auroc") is None
    recs = [{"category": "bottle", "backbone": "wide_resnet50_2", "d": 550, "image_auroc": 1.0,
             "pixel_auroc": 0.98, "pixel_aupro": 0.90},
            {"category": "screw", "backbone": "wide_resnet50_2", "d": 550, "image_auroc": 0.8,
             "pixel_auroc": 0.96, "pixel_aupro": 0.80},
            {"category": "carpet", "backbone": "wide_resnet50_2", "d": 550, "image_auroc": 0.9,
             "pixel_auroc": 0.99, "pixel_aupro": 0.95},
            {"category": "bottle_syn", "backbone": "wide_resnet50_2", "d": 550, "image_auroc": 0.5,
             "pixel_auroc": 0.5, "pixel_aupro": 0.5}]
    lines = paper_table(recs[:3]).splitlines()
    assert "| objects | bottle | 1.000 / – | 0.980 / 0.983 | 0.900 / – |" in lines
    assert "| objects | **mean of 2** | 0.900 / – | 0.970 / 0.978 | 0.850 / 0.916 |" in lines
    assert "| textures | **mean of 1** | 0.900 / – | 0.990 / 0.969 | 0.950 / 0.932 |" in lines
    assert "| all | **mean of 3** | 0.900 / 0.953 | 0.977 / 0.975 | 0.883 / 0.921 |" in lines
    assert "Defard et al., 2020" in lines[0] and "Our means cover 3 of the 15" in lines[-1]
    # an embedded synthetic category counts as the group it imitates, as in `padim reproduce`'s tables
    lines = paper_table([recs[3], {**recs[3], "category": "carpet_syn", "pixel_auroc": 0.7}]).splitlines()
    assert "| objects | bottle_syn | 0.500 / – | 0.500 / – | 0.500 / – |" in lines
    assert "| textures | carpet_syn | 0.500 / – | 0.700 / – | 0.500 / – |" in lines
    assert "| all | **mean of 2** | 0.500 / 0.953 | 0.600 / 0.975 | 0.500 / 0.921 |" in lines
    assert not any(line.startswith("| other") for line in lines)
    assert any("reference only" in line for line in lines) and "Our means cover 0 of the 15" in lines[-1]


# --------------------------------------------------------------------------- the site
def test_render_html_adds_navigation_and_folds_solutions():
    import nbformat

    from padim_utils.course.book import notebook_problems, render_html

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 03 · Covariance"),
                nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]}),
                nbformat.v4.new_code_cell("y = 2", metadata={"tags": ["install"]})]
    page = render_html(nb, "03 · Covariance", prev=("02_a.html", "02 · A"), next_=("04_b.html", "04 · B"))
    assert page.count('class="padim-nav"') == 1 and 'href="02_a.html"' in page and 'href="04_b.html"' in page
    assert "celltag_solution" in page and "padim-solution" in page
    assert "celltag_install" in page and "['install', 'Install cell" in page  # folded like a solution
    assert 'src="mathjax/MathJax.js?config=' in page and "libs/mathjax" not in page  # maths typeset offline
    assert notebook_problems(nb) == ["no figure (image/png output) at all"]
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    assert "cell 1: ValueError: boom" in notebook_problems(nb)
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "Text(0.5, 1.0, 'scores')"})]
    assert "cell 1: prints a matplotlib object (Text(0.5, 1.0, 'scores'))" in notebook_problems(nb)


def test_a_widget_on_the_site_says_where_its_controls_work():
    import nbformat

    from padim_utils.course.book import WIDGET_VIEW, render_html

    nb = nbformat.v4.new_notebook()
    widget = {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": "abc"},
              "text/plain": "VBox(children=(SelectMultiple(...),))"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 08 · Ablations"),
                nbformat.v4.new_code_cell("widget.box", outputs=[
                    nbformat.v4.new_output("execute_result", data=widget, execution_count=1)])]
    page = render_html(nb, "08 · Ablations")
    assert "Interactive controls appear here in JupyterLab" in page and "make lab" in page
    assert "VBox(children" not in page
    assert WIDGET_VIEW in nb.cells[1].outputs[0]["data"]  # the executed notebook keeps its widget


# --------------------------------------------------------------------------- the "Look inside" listings
def _show_source_targets(path):
    """The expressions passed to show_source(...) in a notebook's .py file, with the notebook's imports."""
    import ast

    tree = ast.parse(path.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), str(path), "exec"), namespace)
    targets = [ast.unparse(n.args[0]) for n in ast.walk(tree)
               if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "show_source"]
    return targets, namespace


def _assert_listing_is_the_file(obj, code):
    """`code` parses, and is the object's lines in its file with only their common indentation removed."""
    import ast
    import inspect

    ast.parse(code)
    lines, start = inspect.getsourcelines(inspect.unwrap(getattr(obj, "fget", obj)))
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    assert [indent + line if line else "" for line in code.split("\n")] == \
           [line.rstrip("\n") if line.strip() else "" for line in lines][: len(code.split("\n"))]


@pytest.mark.parametrize("path", sorted((REPO / "chapters").glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_listing_the_course_shows_is_python_as_in_the_file(path):
    targets, namespace = _show_source_targets(path)
    assert targets, f"{path.name} shows no listing"
    for target in targets:
        try:
            obj = eval(target, namespace)
        except NameError as e:
            pytest.fail(f"{path.name}: show_source({target}) needs a name the notebook computes ({e}); "
                        "show a name it imports")
        code, where = course.source_listing(obj)
        _assert_listing_is_the_file(obj, code)
        assert where.startswith("padim_utils/"), where


def _twice(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return 2 * fn(*args)
    return wrapper


@_twice
def _decorated(x):
    if x > 0:
        return x
    return -x


class _Listed:
    """A class whose listing must keep its methods' bodies indented."""

    def method(self, x):
        for i in range(x):
            if i:
                return i
        return None

    @property
    def prop(self):
        return {"a": 1}


class _WithText:
    def with_text(self):
        return """
text at column 0
    indented text
"""


def _plain(x):
    y = x + 1
    return y


@pytest.mark.parametrize("obj, first", [(_plain, "def _plain(x):"), (_decorated, "@_twice"),
                                        (_Listed.method, "def method(self, x):"), (_Listed, "class _Listed:"),
                                        (_Listed.prop, "@property"), (_WithText.with_text, "def with_text(self):")],
                         ids=["function", "decorated function", "method", "class", "property", "method with text"])
def test_source_listing_keeps_the_code_as_written(obj, first):
    import ast

    code, where = course.source_listing(obj)
    assert code.split("\n")[0] == first and where.endswith("test_course.py")
    ast.parse(code)
    if obj is not _WithText.with_text:  # its string's lines at column 0 cannot lose an indentation they lack
        _assert_listing_is_the_file(obj, code)
    else:
        assert "\ntext at column 0\n    indented text\n" in code and "    return" in code


def test_a_wrong_answer_gets_a_hint_never_the_expected_value():
    from padim_utils.course.exercises._common import compare_arrays, compare_number

    msg = compare_number(0.5, 0.8125, "your AUROC", hint="count the pairs.")
    assert msg == "your AUROC is 0.5, which is not right. Hint: count the pairs."
    assert compare_number(0.8125, 0.8125, "x") is None
    msg = compare_arrays([[1.0, 2.0]], [[1.0, 2.75]], "your matrix", hint="divide by N - 1.")
    assert "index (0, 1) (yours: 2)" in msg and "Hint: divide by N - 1." in msg and "2.75" not in msg


# --------------------------------------------------------------------------- sentences chosen by the run's numbers
@pytest.mark.parametrize("a, b, tol, said", [(0.92, 0.90, 0.0, "ours 0.920 above 0.900"),
                                             (0.88, 0.90, 0.0, "ours 0.880 below 0.900 (gap 0.020)"),
                                             (0.905, 0.90, 0.01, "a tie, +0.005"),
                                             (0.90, 0.90, 0.0, "a tie, +0.000")])
def test_compare_says_the_sentence_its_numbers_make_true(a, b, tol, said, capsys):
    course.compare("x.y", a, b, tol=tol, more="ours {a:.3f} above {b:.3f}", less="ours {a:.3f} below {b:.3f} "
                   "(gap {gap:.3f})", same="a tie, {diff:+.3f}")
    assert capsys.readouterr().out.strip() == said  # outside a notebook: printed


def test_compare_without_a_same_sentence_and_its_record(monkeypatch):
    shown = []
    monkeypatch.setattr(course, "show", lambda text, metadata=None: shown.append((text, metadata)))
    course.compare("k", 0.5, 0.5, more="{what}: at least", less="{what}: below", what="AU-PRO")
    course.compare("k", 0.49, 0.5, tol=0.02, more="at least", less="below")
    (text, meta), (text2, meta2) = shown
    assert text == "AU-PRO: at least" and text2 == "below"
    claim = meta[course.CLAIM_KEY]
    assert (claim["key"], claim["a"], claim["b"], claim["verdict"], claim["said"]) == ("k", 0.5, 0.5, "same", "more")
    assert meta2[course.CLAIM_KEY]["verdict"] == "same" and meta2[course.CLAIM_KEY]["said"] == "less"
    assert [course.verdict(1, 0), course.verdict(0, 1), course.verdict(1, 0.95, 0.1)] == ["more", "less", "same"]


def test_solved_follows_the_last_check(monkeypatch, capsys):
    monkeypatch.delenv("PADIM_STRICT_EXERCISES", raising=False)
    course.check_exercise("10.1", (2.0, 1.0), values=[1.0, 3.0])
    assert course.solved("10.1")
    course.check_exercise("10.1", (2.5, 1.0), values=[1.0, 3.0])
    assert not course.solved("10.1") and "✗ Exercise 10.1" in capsys.readouterr().out


def test_course_features_are_computed_once_and_read_back(tmp_path, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    from padim_utils.experiments.features import FeatureCache

    monkeypatch.setenv("PADIM_DATA", str(tmp_path))
    data = course.course_data(quick=True, device="cpu", verbose=False)
    computed = []
    real_compute = FeatureCache.compute.__func__
    monkeypatch.setattr(FeatureCache, "compute",
                        classmethod(lambda cls, *a, **k: computed.append(1) or real_compute(cls, *a, **k)))
    first = data.features("train")
    assert len(computed) == 1 and len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    again = data.features("train")  # read back from disk, not computed
    assert len(computed) == 1 and all(torch.equal(a, b) for a, b in zip(first.layers, again.layers))
    assert again.paths == first.paths and len(again) == len(data.train())
    other = course.CourseData(data.root, data.category, data.source, True, data.config.replace(d=8), data.categories)
    other.features("train")  # d is not a feature setting: the same file
    assert len(computed) == 1
    data.features("test")
    assert len(computed) == 2
    path = data.train().paths[0]  # the images change: computed anew
    os.utime(path, ns=(0, 0))
    data.features("train")
    assert len(computed) == 3
    data.features("test")
    assert len(computed) == 3  # the test split unchanged: read back
    mask = next(m for m in data.test().mask_paths if m is not None)  # a mask corrected in place ...
    st = os.stat(mask)
    corrected = np.zeros_like(np.asarray(Image.open(mask)))
    Image.fromarray(corrected).save(mask)
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... even with its modification time put back
    served = data.features("test")
    assert len(computed) == 4  # computed anew, not served stale
    assert int(served.masks[data.test().mask_paths.index(mask)].sum()) == 0


# ---------------------------------------------------------------------------- the course builder's edges
def _chapter(title: str, code: str) -> str:
    return f"# %% [markdown]\n# # {title}\n\n# %%\n{code}\n"


FIGURE = "import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()"


def test_a_chapter_whose_kernel_dies_fails_alone(tmp_path, capsys):
    from padim_utils.cli import main

    book = tmp_path / "notebooks"
    book.mkdir()
    (book / "00_first.py").write_text(_chapter("First", FIGURE))
    (book / "01_dies.py").write_text(_chapter("Dies", "import os\nos._exit(1)"))
    (book / "02_last.py").write_text(_chapter("Last", FIGURE))
    (book / "03_folder.py").mkdir()  # a folder named like a chapter is no chapter
    out = tmp_path / "build"
    assert main(["course", "--notebooks", str(book), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "padim: error: course notebooks failed: 01_dies.py: the kernel died in cell 1 (out of memory, or " \
                  "the code ended the process)"
    assert sorted(p.name for p in out.glob("*.html")) == ["00_first.html", "01_dies.html", "02_last.html",
                                                          "index.html"]  # the other chapters are built
    assert "image/png" in (out / "02_last.html").read_text()


@pytest.mark.parametrize("case", ["not UTF-8", "--only 99", "--only 00,99"])
def test_course_mistakes_are_one_line_before_any_chapter_runs(tmp_path, capsys, monkeypatch, case):
    from padim_utils.cli import main
    from padim_utils.course import book

    monkeypatch.setattr(book, "execute_notebook", lambda *a, **k: pytest.fail("a chapter ran"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "00_first.py").write_text(_chapter("First", FIGURE))
    text = _chapter("Zweite Übung", FIGURE)
    (folder / "01_second.py").write_bytes(text.encode("latin-1"))  # Ü is one byte, 0xdc, in Latin-1
    argv = ["course", "--notebooks", str(folder), "--out", str(tmp_path / "build"), "--quiet"]
    if case.startswith("--only"):
        (folder / "01_second.py").write_text(_chapter("Second", FIGURE))
        argv += ["--only", case.split()[1]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    expected = {"not UTF-8": f"padim: error: {folder / '01_second.py'} is not UTF-8 text (byte 0xdc at offset "
                             f"{text.index('Ü')}); save it as UTF-8",
                "--only 99": f"padim: error: --only 99: no chapter in {folder} starts with 99 (chapters: 00, 01)",
                "--only 00,99": f"padim: error: --only 00,99: no chapter in {folder} starts with 99 (chapters: 00, "
                                "01)"}[case]
    assert err == expected
    assert not (tmp_path / "build").exists()
