"""The package's optional parts: what each one brings, and one line naming the install when it is absent.

    need("onnx")                     # a PadimError naming the pip command when onnxruntime & co are missing
    ort = optional("onnxruntime")    # the module itself, or the same one-line PadimError

The core (torch, numpy, scipy, scikit-learn, matplotlib, ...) fits, predicts, scores and plots. The rest
is declared in pyproject.toml's [project.optional-dependencies], one extra per purpose; `EXTRAS` says
which importable modules each extra brings (a test checks it against pyproject.toml). The package is
installed from its repository, whose address (pyproject.toml's [project.urls] Repository) is read from
the installed package's metadata, so an install hint names the real place.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util

from .errors import PadimError

__all__ = ["DISTRIBUTION", "EXTRAS", "repository", "install_command", "missing", "need", "optional"]

#: The distribution's name on pip's side (the import name is padim_utils).
DISTRIBUTION = "padim-utils"

#: extra -> (what it is for, the modules it makes importable).
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "notebooks": ("the notebooks' kernel and chapter 08's sliders", ("ipykernel", "ipywidgets")),
    "onnx": ("the ONNX export (chapter 11, padim export)", ("onnx", "onnxruntime", "onnxscript")),
    "video": ("decoding STC's videos (chapter 07, the STC loaders)", ("av",)),
    "lab": ("JupyterLab on the notebooks", ("jupyterlab", "jupytext")),
    "site": ("building the course site (padim course)",
             ("jupytext", "nbformat", "nbclient", "nbconvert", "jupyter_server_mathjax")),
    "bench": ("the side-by-side benchmark against anomalib", ("anomalib",)),
}


def repository() -> str | None:
    """The repository's address, from the installed package's metadata (pyproject.toml's
    [project.urls] Repository); None where the package runs uninstalled (from a bare checkout)."""
    try:
        urls = importlib.metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    return None


def install_command(*extras: str) -> str:
    """The pip command that adds `extras` to an environment, e.g.
    pip install 'padim-utils[onnx] @ git+https://github.com/...' (from a clone: pip install -e '.[onnx]')."""
    names, url = ",".join(extras), repository()
    clone = f"pip install -e '.[{names}]'"
    if url is None:
        return f"{clone} in a clone of the course's repository"
    return f"pip install '{DISTRIBUTION}[{names}] @ git+{url}' (from a clone of the repository: {clone})"


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (an empty list when the extra is installed)."""
    if extra not in EXTRAS:
        raise PadimError(f"unknown optional part {extra!r}; choose one of {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra][1] if importlib.util.find_spec(m) is None]


def need(extra: str) -> None:
    """Raise one PadimError line naming the install command when `extra`'s modules are not all here."""
    absent = missing(extra)
    if absent:
        purpose = EXTRAS[extra][0]
        raise PadimError(f"{purpose} needs the optional part '{extra}' ({', '.join(absent)} not installed): "
                         f"{install_command(extra)}")


def optional(module: str):
    """Import `module`, one of an extra's modules; when it is absent, the one-line PadimError of `need`."""
    if importlib.util.find_spec(module) is None:
        extra = next((name for name, (_, mods) in EXTRAS.items() if module in mods), None)
        if extra is None:
            raise PadimError(f"{module} is not installed: pip install {module}")
        need(extra)
    return importlib.import_module(module)
