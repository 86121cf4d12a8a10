"""Self-checking exercises of the course notebooks.

Each chapter's checks live in `chNN.py` (exercise "3.1" -> `ch03.py`) and are
registered with `@exercise("3.1")`. A check receives the learner's answer and the
objects the notebook passes along, computes the right answer its own way
(numpy, scikit-learn, plain loops) and returns None when the answer is right,
or one sentence saying what is off. Notebooks call `course.check_exercise`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ...errors import PadimError

_CHECKS: dict[str, Callable[..., str | None]] = {}


def exercise(key: str):
    """Register the decorated function as the check of exercise `key` (e.g. "3.1")."""

    def register(fn):
        _CHECKS[key] = fn
        return fn

    return register


def _load(key: str) -> None:
    chapter = key.split(".")[0]
    if not chapter.isdigit():
        raise PadimError(f"exercise keys look like '3.1', got {key!r}")
    try:
        importlib.import_module(f"{__name__}.ch{int(chapter):02d}")
    except ModuleNotFoundError:
        pass


def check(key: str, answer, **given) -> str | None:
    """None if `answer` is right for exercise `key`, else what is off."""
    if key not in _CHECKS:
        _load(key)
    if key not in _CHECKS:
        raise PadimError(f"there is no exercise {key!r}")
    if answer is Ellipsis:
        return "not answered yet: replace the `...` with your answer and run the cell again."
    try:
        return _CHECKS[key](answer, **given)
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        return f"your answer could not be checked ({type(e).__name__}: {e})."


def registered() -> list[str]:
    """Keys of every exercise (loads every chapter)."""
    for n in range(100):
        _load(str(n))
    return sorted(_CHECKS, key=lambda k: tuple(int(p) for p in k.split(".")))
