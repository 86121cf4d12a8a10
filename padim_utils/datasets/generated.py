"""Folders this package generates (the synthetic MVTec AD set, the synthetic STC set, the walkway scene):
written whole or not at all, kept while their parameters match, never written over real data.

A generated folder holds a marker, ``.synthetic.json``, with the parameters that drew it. Writing one:

1. ``write(tmp, params)`` fills a hidden temporary folder beside the target (``.<name>.tmp-...``);
2. the marker is written last: a folder with a marker is complete;
3. the folder gets the permissions of an ordinary new folder and is renamed into place
   (:func:`swap_in`), replacing an older version.

A target whose marker matches the parameters is kept (unless ``force``); one without a marker
(real data?) is never touched: PadimError.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import PadimError

__all__ = ["MARKER", "check_count", "read_marker", "write_marker", "umask", "build_folder", "swap_in",
           "write_synthetic_folder"]

#: The marker file of a generated folder: the parameters that drew it, as JSON.
MARKER = ".synthetic.json"


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``, else one PadimError line.

    >>> check_count("n_train", 3, 1)
    3
    >>> check_count("n_train", 0, 1)
    Traceback (most recent call last):
    padim_utils.errors.PadimError: n_train must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PadimError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The parameters in ``folder``'s marker; None where it has no readable marker."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(folder: Path, params: dict[str, Any]) -> None:
    """Write ``params`` as ``folder``'s marker (sorted keys, indented)."""
    (folder / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def umask() -> int:
    """This process's umask (read without changing it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def build_folder(target: Path, params: dict[str, Any], write: Callable[[Path, dict[str, Any]], None],
                 force: bool) -> None:
    """Steps 1-3 of the module docstring: ``write(tmp, params)``, the marker, the rename into ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp, params)
        write_marker(tmp, params)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp made it private
        swap_in(tmp, target, params, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_in(tmp: Path, target: Path, params: dict[str, Any], force: bool) -> None:
    """Rename the finished ``tmp`` folder to ``target``, replacing an older version."""
    for _ in range(5):
        try:
            os.rename(tmp, target)  # fails if target exists and is not empty
            return
        except OSError:
            if not target.exists():
                continue  # it vanished meanwhile (concurrent run): try again
        if not force and read_marker(target) == params:
            return  # a concurrent run already wrote the same data: keep it
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.rename(target, old / target.name)
        except OSError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    raise PadimError(f"could not move the generated data into {target}")


def write_synthetic_folder(root: Path, params: dict[str, Any], write: Callable[[Path, dict[str, Any]], None],
                           force: bool = False) -> Path:
    """Write generated data in the STC layout into ``root`` (:func:`build_folder`). A ``root`` whose
    marker matches ``params`` is kept (unless ``force``); a non-empty ``root`` without a marker (real
    data?) is never touched: PadimError."""
    if root.exists():
        if not root.is_dir():
            raise PadimError(f"STC data root is not a folder: {root}")
        marker = read_marker(root)
        if marker is None and any(root.iterdir()):
            raise PadimError(f"refusing to overwrite {root}: it is not empty and has no {MARKER} "
                             "(not synthetic data?)")
        if marker == params and not force:
            return root
        if marker is None:
            root.rmdir()  # empty
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"cannot create {root.parent}: {exc.strerror or exc}") from None
    build_folder(root, params, write, force)
    return root
