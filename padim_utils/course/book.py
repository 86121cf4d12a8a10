"""The course as a book: execute every notebook headless and render them into a static site.

    build_course("chapters", "build")        # what `make course` runs; prints where the index is

Chapters are edited as jupytext `py:percent` files in `chapters/`, paired with the outputs-free
`.ipynb` in `notebooks/` that a learner opens (JupyterLab, Colab). Each one is read with jupytext, executed with nbclient in a fresh kernel (with PADIM_QUICK / PADIM_DATA /
PADIM_DEVICE passed through and exercise checks made strict), saved executed under
`build/notebooks/`, and rendered with nbconvert into `build/<name>.html` with a bar linking the
previous chapter, the index and the next chapter. Exercise solutions are raw cells tagged `solution`
(JupyterLab's Run All skips them); the book runs them as code (`with_solutions`), so every check is
made on a worked solution, and folds them into a "Solution" box that the reader opens. The maths is typeset by a local copy of MathJax 2.7 (from
the pip package `jupyter-server-mathjax`, copied to `build/mathjax/`), so the site reads offline.
"""

from __future__ import annotations

import contextlib
import copy
import html
import os
import re
import shutil
import time
from pathlib import Path


from ..config import env_flag
from ..errors import PadimError
from ..extras import need
from ..files import write_text
from ..progress import progress_bar

__all__ = ["course_notebooks", "read_notebook", "with_solutions", "execute_notebook", "render_html", "build_course",
           "notebook_problems", "static_widgets"]

_STYLE = """
<style>
.padim-nav{position:sticky;top:0;z-index:10;background:#1f3b57;color:#fff;padding:8px 16px;
  font:15px/1.4 system-ui,sans-serif;display:flex;gap:18px;align-items:center}
.padim-nav a{color:#fff;text-decoration:none}.padim-nav a:hover{text-decoration:underline}
.padim-nav .title{font-weight:600;margin-right:auto}
details.padim-solution{margin:6px 0 6px 0;border:1px solid #c9d6e3;border-radius:4px;padding:2px 8px}
details.padim-solution>summary{cursor:pointer;color:#1f3b57;font-weight:600;padding:4px 0}
.jp-RenderedMarkdown pre,.jp-RenderedMarkdown pre code{font-family:var(--jp-code-font-family,monospace)}
</style>
"""
_SCRIPT = """
<script>
[['solution', 'Solution (click to open)'],
 ['install', 'Install cell: installs the package on Colab and Kaggle, checks it elsewhere (click to open)']
].forEach(function (fold) {
  document.querySelectorAll('.jp-Cell.celltag_' + fold[0]).forEach(function (cell) {
    var box = document.createElement('details'); box.className = 'padim-solution';
    var label = document.createElement('summary'); label.textContent = fold[1];
    cell.parentNode.insertBefore(box, cell); box.appendChild(label); box.appendChild(cell);
  });
});
</script>
"""


def course_notebooks(folder: str | os.PathLike) -> list[Path]:
    """The course's chapters: `NN_*.py` files in `folder`, in order (a folder so named is no chapter)."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.py") if p.is_file())
    if not found:
        raise PadimError(f"no course notebooks (NN_name.py) in {folder}")
    return found


def read_notebook(path: str | os.PathLike):
    """A notebook (nbformat) from a `py:percent` file or an `.ipynb`; one PadimError line for a file that
    cannot be read as one (not UTF-8 text, unreadable)."""
    import jupytext

    try:
        return jupytext.read(str(path))
    except UnicodeDecodeError as e:
        raise PadimError(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it "
                         "as UTF-8") from None
    except OSError as e:
        raise PadimError(f"cannot read {path}: {e.strerror or e}") from None


def _apply(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    """Set (str) or unset (None) environment variables for the duration of the block."""
    old = {k: os.environ.get(k) for k in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(old)


def with_solutions(nb):
    """`nb` with each exercise's solution made runnable: a raw cell tagged "solution" (what JupyterLab's
    Run All skips, so a learner's check judges their own answer) becomes a code cell, folded
    (`jupyter.source_hidden`) as it was. The book and the tests run the checks on these solutions."""
    import nbformat

    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "raw" and "solution" in cell.get("metadata", {}).get("tags", []):
            code = nbformat.v4.new_code_cell(cell.source, metadata=cell.metadata)
            if "id" in cell:
                code.id = cell.id
            nb.cells[i] = code
    return nb


def execute_notebook(nb, cwd: str | os.PathLike, quick: bool | None = None, timeout: int = 1200,
                     solutions: bool = True):
    """Run every cell of `nb` in a fresh kernel started in `cwd`; returns the executed notebook.

    With `solutions` (the default: the book and the tests) the exercises' solutions run too
    (`with_solutions`); without, the notebook runs as JupyterLab's Run All runs it.

    The kernel sees this process's environment, with PADIM_STRICT_EXERCISES=1 with `solutions` (a wrong
    exercise solution fails the run), PADIM_PROGRESS=0 (no progress widgets in the pages), PADIM_QUICK set from
    `quick` when given, PADIM_DATA defaulting to the `data/` folder beside `cwd` (the notebooks' folder),
    and MPLBACKEND removed (a forced Agg backend would keep figures out of the outputs). A failing cell raises PadimError naming it.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    env = {"PADIM_STRICT_EXERCISES": "1" if solutions else "0", "PADIM_PROGRESS": "0", "MPLBACKEND": None,
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if not os.environ.get("PADIM_DATA"):  # the repository's data/, not notebooks/data/
        env["PADIM_DATA"] = str(Path(cwd).resolve().parent / "data")
    if quick is not None:
        env["PADIM_QUICK"] = "1" if quick else "0"
    if solutions:
        nb = with_solutions(nb)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no start-up chatter
    with _environment(env):
        try:
            client.execute()
        except CellExecutionError as e:
            first = str(e).strip().splitlines()
            raise PadimError(f"a cell failed: {first[-1] if first else e}") from e
        except DeadKernelError:
            raise PadimError(f"the kernel died in cell {_running_cell(nb)} (out of memory, or the code ended "
                             "the process)") from None
        except CellTimeoutError:
            raise PadimError(f"cell {_running_cell(nb)} ran longer than {timeout} s") from None
    return nb


def _running_cell(nb) -> int:
    """The index of the first code cell without an execution count: the one running when the kernel stopped."""
    return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None),
                len(nb.cells) - 1)


def notebook_problems(nb) -> list[str]:
    """What a reader would see as broken in an executed notebook: error outputs, a stray matplotlib object
    printed as a cell's result (`Out: Text(0.5, 1.0, ...)`), and no figure at all."""
    problems, pngs = [], 0
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            shown = out.get("data", {}).get("text/plain", "") if out.get("output_type") == "execute_result" else ""
            if re.match(r"\[?(<matplotlib\.|Text\(|Line2D\()", "".join(shown)):
                problems.append(f"cell {i}: prints a matplotlib object ({''.join(shown)[:40]})")
            if out.get("output_type") == "stream" and out.get("name") == "stderr" and "Traceback" in out.get("text", ""):
                problems.append(f"cell {i}: a traceback on stderr")
            pngs += "image/png" in out.get("data", {})
    if pngs == 0:
        problems.append("no figure (image/png output) at all")
    return problems


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return fallback


MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # relative to the pages


def copy_mathjax(out: str | os.PathLike) -> Path:
    """MathJax 2.7 (the pip package jupyter-server-mathjax) into `out/mathjax`, once; returns that folder."""
    import jupyter_server_mathjax

    target = Path(out) / "mathjax"
    if not (target / "MathJax.js").is_file():
        source = Path(jupyter_server_mathjax.__file__).parent / "static"
        tmp = Path(out) / ".mathjax.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p class=\"padim-widget\"><b>Interactive controls appear here in JupyterLab.</b> They need a "
               "running Python kernel, which a static page has not: open this notebook with <code>make lab</code> "
               "to use them.</p>")


def static_widgets(nb):
    """A copy of `nb` where every widget output (which a static page cannot draw: it would show an empty
    "Out[n]:") says instead where its controls work. The executed notebook itself keeps its widgets."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                out["data"] = {"text/html": WIDGET_NOTE}
    return nb


def render_html(nb, title: str, prev: tuple[str, str] | None = None, next_: tuple[str, str] | None = None) -> str:
    """One chapter as a standalone HTML page (nbconvert's lab template) with the course's navigation bar;
    its maths is typeset by the MathJax that `copy_mathjax` puts beside it, and its widgets say where they
    work (`static_widgets`)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL)
    body, _ = exporter.from_notebook_node(static_widgets(nb), resources={"metadata": {"name": title}})
    links = [f'<span class="title">{html.escape(title)}</span>']
    if prev:
        links.append(f'<a href="{prev[0]}">&larr; {html.escape(prev[1])}</a>')
    links.append('<a href="index.html">Contents</a>')
    if next_:
        links.append(f'<a href="{next_[0]}">{html.escape(next_[1])} &rarr;</a>')
    nav = f'<nav class="padim-nav">{"".join(links)}</nav>'
    body = body.replace("</head>", _STYLE + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    return body.replace("</body>", _SCRIPT + "</body>", 1)


def _banner(chapters: list[dict], quick: bool) -> str:
    """What this build ran on (from the chapters' own "Data: ..." lines) and how to run it on real MVTec AD."""
    lines = list(dict.fromkeys(c["data_line"] for c in chapters if c["data_line"]))
    real = any(line.startswith("Data: MVTec AD") for line in lines)
    mode = ("<b>quick mode</b> (<code>PADIM_QUICK=1</code>: 64 px images, a few training images; numbers show the "
            "method at work, not its accuracy)" if quick else
            "<b>full mode</b> (256 px images; <code>PADIM_QUICK=1</code> runs the quick version)")
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines) or "<li>(no data line printed)</li>"
    switch = ("These pages ran on real MVTec AD." if real else
              "These pages ran on the course's <b>embedded synthetic data</b>, not MVTec AD. To run them on real "
              "MVTec AD, put its categories under <code>data/mvtec_ad/</code> (<code>padim download mvtec</code>, "
              "or copy them there; e.g. <code>data/mvtec_ad/bottle/train/good</code>) or set "
              "<code>PADIM_DATA</code> to a folder holding <code>mvtec_ad/</code>, then run <code>make course</code> "
              "again (<code>PADIM_CATEGORY=bottle</code> picks the category).")
    return (f'<div class="banner"><p>This build: {mode}.</p><ul>{items}</ul><p>{switch}</p></div>')


def _index_page(chapters: list[dict], quick: bool = False) -> str:
    rows = "\n".join(
        f'<li><a href="{c["html"]}">{html.escape(c["title"])}</a>'
        + (f'<div class="d">{html.escape(c["about"])}</div>' if c["about"] else "")
        + f'<div class="t">{c["seconds"]:.0f} s to run{", " + html.escape(c["data"]) if c["data"] else ""} · '
          f'<a href="{c["ipynb"]}" download>executed notebook (.ipynb)</a></div></li>'
        for c in chapters)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PaDiM, step by step</title>{_STYLE}
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:0}}main{{max-width:820px;margin:24px auto;padding:0 16px}}
li{{margin:10px 0}}.t{{color:#667;font-size:14px}}.d{{font-size:15px}}
.banner{{background:#eef3f8;border-left:4px solid #1f3b57;padding:4px 14px;margin:12px 0;font-size:15px}}
.banner ul{{margin:4px 0;padding-left:20px}}</style></head>
<body><nav class="padim-nav"><span class="title">PaDiM, step by step</span></nav><main>
<h1>PaDiM, step by step</h1>
<p>A course on PaDiM (Defard et al., 2020, <a href="https://arxiv.org/abs/2011.08785">arXiv 2011.08785</a>):
each chapter explains one step, runs the tested code of <code>padim_utils</code> and ends with an exercise.
These pages were executed headless; open the same notebooks in JupyterLab with <code>make lab</code>, or
download a chapter's executed notebook below.</p>
{_banner(chapters, quick)}
<ol start="0">
{rows}
</ol></main></body></html>
"""


def _data_line(nb) -> str:
    """The first "Data: ..." line a chapter printed (what it ran on), or ""."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            m = re.search(r"^Data: .+$", text, flags=re.M)
            if m:
                return m.group(0)
    return ""


_TEX = {r"\epsilon": "ε", r"\sigma": "σ", r"\Sigma": "Σ", r"\mu": "μ", r"\times": "×", r"\cdot": "·"}


def _about(nb) -> str:
    """A chapter in one line: its "**You will learn** ..." sentence up to the first colon or semicolon, as
    plain text (the maths of a description in Unicode: the index page has no MathJax)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"\*\*You will learn\*\*\s+(.+?)(?:\n\s*\n|$)", cell.source, flags=re.S)
            if m:
                text = re.sub(r"\s+", " ", m.group(1)).strip()
                for tex, char in _TEX.items():
                    text = text.replace(tex, char)
                text = re.sub(r"[*`$]|\\[a-zA-Z]+", "", text)  # emphasis, code and maths marks, other TeX
                depth, end = 0, len(text)
                for i, ch in enumerate(text):  # the first ": " or "; " outside parentheses ends the line
                    depth += (ch == "(") - (ch == ")")
                    if depth == 0 and ch in ":;" and text[i + 1:i + 2] == " ":
                        end = i
                        break
                return "You will learn " + text[:end].rstrip(" .,") + "."
    return ""


def build_course(notebooks: str | os.PathLike = "chapters", out: str | os.PathLike = "build",
                 quick: bool | None = None, only: list[str] | None = None, progress: bool = True) -> Path:
    """Execute the chapters and render them with an index page; returns the index's path.

    `only` restricts the run to chapters whose file name starts with one of the given prefixes
    (e.g. ["04", "05"]). Every chapter runs even when an earlier one fails; then PadimError lists
    the failures, and the pages of the chapters that ran are still written.
    """
    need("site")  # jupytext, nbclient, nbconvert, ...: one line naming the install when absent
    import nbformat

    paths = course_notebooks(notebooks)
    if only:
        unmatched = [o for o in only if not any(p.name.startswith(o) for p in paths)]
        if unmatched:
            raise PadimError(f"--only {','.join(only)}: no chapter in {notebooks} starts with "
                             f"{', '.join(unmatched)} (chapters: {', '.join(p.name[:2] for p in paths)})")
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    notebooks_read = {path: read_notebook(path) for path in paths}  # every chapter readable, before the work
    out = Path(out)
    titles = []
    executed: list[tuple[Path, object, float]] = []
    failures = []
    for path in progress_bar(paths, "course notebooks", progress):
        nb = notebooks_read[path]
        start = time.perf_counter()
        try:
            execute_notebook(nb, cwd=path.parent, quick=quick)
        except PadimError as e:
            failures.append(f"{path.name}: {e}")
        seconds = time.perf_counter() - start
        problems = notebook_problems(nb)
        if problems and not any(f.startswith(path.name) for f in failures):
            failures.append(f"{path.name}: {'; '.join(problems)}")
        print(f"{path.name}: {seconds:.1f} s{' (FAILED)' if failures and failures[-1].startswith(path.name) else ''}")
        executed.append((path, nb, seconds))
        titles.append(_title(nb, path.stem))
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    chapters = []
    for i, (path, nb, seconds) in enumerate(executed):
        name = path.stem
        prev = (f"{executed[i - 1][0].stem}.html", titles[i - 1]) if i > 0 else None
        nxt = (f"{executed[i + 1][0].stem}.html", titles[i + 1]) if i + 1 < len(executed) else None
        write_text(out / f"{name}.html", render_html(nb, titles[i], prev, nxt))
        write_text(out / "notebooks" / f"{name}.ipynb", nbformat.writes(nb))
        line = _data_line(nb)
        m = re.match(r"Data: (.+?) from ", line)
        chapters.append({"html": f"{name}.html", "title": titles[i], "seconds": seconds, "data": m.group(1) if m else "",
                         "data_line": line, "about": _about(nb), "ipynb": f"notebooks/{name}.ipynb"})
    index = write_text(out / "index.html", _index_page(chapters, env_flag("PADIM_QUICK") if quick is None else quick))
    if failures:
        raise PadimError("course notebooks failed: " + " | ".join(failures))
    return index
