"""Where a learner opens a chapter: its Colab and Kaggle links, and the install cell every chapter starts with.

    colab_url("00_setup_and_data")       # https://colab.research.google.com/github/<owner>/<repo>/blob/main/...
    install_cell("07_stc_video")         # the chapter's first code cell, as py:percent text
    python -m padim_utils.course.launch  # `make links`: write both into the chapters and docs/workshop.md

Both come from one address, pyproject.toml's [project.urls] Repository, read from the installed
package's metadata (`extras.repository`). The chapters are edited as py:percent files in `chapters/`;
the learner opens the paired `.ipynb` in `notebooks/`, which jupytext writes from them.

The install cell does something only on a hosted runtime (Colab, Kaggle) where the package, or an
optional part the chapter needs, is missing. It installs from the repository with every package the
runtime already has held at its version (`pip -c` on the runtime's own list): torch, numpy and the
kernel stay as they are, and pip refuses rather than replace one. Elsewhere, where something is missing,
it stops the chapter with one line naming the install. `PADIM_PACKAGE` overrides what it installs
(e.g. a wheel handed out in a room without internet).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import PadimError
from ..extras import DISTRIBUTION, EXTRAS, repository

__all__ = ["CHAPTER_EXTRAS", "BRANCH", "chapter_extras", "github_path", "colab_url", "kaggle_url",
           "install_cell", "links_table", "write_install_cell", "write_links"]

#: chapter number -> the optional parts it needs beyond "notebooks".
CHAPTER_EXTRAS: dict[str, tuple[str, ...]] = {"07": ("video",), "11": ("onnx",)}
#: The branch the launch links open.
BRANCH = "main"
_CELL_START = "# %% tags=[\"install\"]"
_LINKS_START, _LINKS_END = "<!-- launch links: written by `make links` -->", "<!-- end of launch links -->"


def chapter_extras(name: str) -> tuple[str, ...]:
    """The optional parts chapter `name` (e.g. "07_stc_video") installs: "notebooks", plus its own."""
    return ("notebooks", *CHAPTER_EXTRAS.get(name[:2], ()))


def github_path(url: str | None = None) -> str:
    """"owner/name" of the GitHub repository at `url` (default: the package's own address)."""
    url = url or repository()
    m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url or "")
    if not m:
        raise PadimError(f"the launch links need a GitHub repository address, not {url!r} "
                         "(pyproject.toml's [project.urls] Repository)")
    return f"{m.group(1)}/{m.group(2)}"


def colab_url(name: str) -> str:
    """Open the committed notebook `notebooks/<name>.ipynb` in Google Colab."""
    return f"https://colab.research.google.com/github/{github_path()}/blob/{BRANCH}/notebooks/{name}.ipynb"


def kaggle_url(name: str) -> str:
    """Import the committed notebook `notebooks/<name>.ipynb` into a Kaggle notebook."""
    return (f"https://kaggle.com/kernels/welcome?src=https://github.com/{github_path()}/blob/{BRANCH}"
            f"/notebooks/{name}.ipynb")


def install_cell(name: str) -> str:
    """The py:percent text of chapter `name`'s install cell (its first code cell)."""
    extras = chapter_extras(name)
    probes = ("padim_utils", *(module for extra in extras for module in EXTRAS[extra][1]))
    package = f"{DISTRIBUTION}[{','.join(extras)}] @ git+https://github.com/{github_path()}"
    return f'''{_CELL_START} jupyter={{"source_hidden": true}} cellView="form"
#@title Install the course's package where it is missing (on Colab and Kaggle; elsewhere, only check)
# On Colab and Kaggle, pip installs padim-utils with every package already there held at its version:
# torch, numpy and the kernel stay as they are. Elsewhere, a missing package stops the chapter here.
import importlib, importlib.metadata, importlib.util, os, subprocess, sys, tempfile  # noqa: E401

PACKAGE = os.environ.get(
    "PADIM_PACKAGE", "{package}")
NEEDS = {probes!r}
absent = [m for m in NEEDS if importlib.util.find_spec(m) is None]
hosted = "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if absent and hosted:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keep:  # what is there stays
        keep.writelines(f"{{d.name}}=={{d.version}}\\n" for d in importlib.metadata.distributions() if d.name)
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", keep.name, PACKAGE]
    if subprocess.run(pip).returncode:
        raise SystemExit("pip could not install the course beside this runtime's packages (see above)")
    importlib.invalidate_caches()
elif absent:
    raise SystemExit(f"{{', '.join(absent)}} not installed in this kernel: pip install '{{PACKAGE}}'")
'''

def links_table(names: list[str]) -> str:
    """A markdown table: each chapter with its Colab and Kaggle links and the optional parts it installs."""
    rows = ["| chapter | open in | installs |", "|---|---|---|"]
    for name in names:
        rows.append(f"| `{name}` | [Colab]({colab_url(name)}) · [Kaggle]({kaggle_url(name)}) | "
                    f"`{DISTRIBUTION}[{','.join(chapter_extras(name))}]` |")
    return "\n".join(rows)


def write_install_cell(path: Path) -> bool:
    """Put chapter `path`'s install cell in place (after its title cell); True when the file changed."""
    text = path.read_text(encoding="utf-8")
    cell = install_cell(path.stem)
    cells = re.split(r"(?m)^(?=# %%)", text)  # [header, cell, cell, ...]
    kept = [c for c in cells if not c.startswith(_CELL_START)]
    new = "".join([*kept[:2], cell + "\n", *kept[2:]])
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def write_links(page: Path, names: list[str]) -> bool:
    """Rewrite the links table between `page`'s launch-link markers; True when the file changed."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(_LINKS_START) + ".*?" + re.escape(_LINKS_END), re.S)
    if not pattern.search(text):
        raise PadimError(f"{page} has no launch-link markers ({_LINKS_START} ... {_LINKS_END})")
    new = pattern.sub(lambda _: f"{_LINKS_START}\n{links_table(names)}\n{_LINKS_END}", text)
    if new != text:
        page.write_text(new, encoding="utf-8")
    return new != text


def main(root: str = ".") -> None:
    """`make links`: every chapter's install cell, its paired notebook, and docs/workshop.md's links."""
    import jupytext.cli

    root = Path(root)
    chapters = sorted((root / "chapters").glob("[0-9][0-9]_*.py"))
    for path in chapters:
        if write_install_cell(path):
            print(f"{path}: install cell written")
        jupytext.cli.jupytext(["--quiet", "--sync", str(path)])
    if write_links(root / "docs" / "workshop.md", [p.stem for p in chapters]):
        print("docs/workshop.md: launch links written")


if __name__ == "__main__":
    main()
