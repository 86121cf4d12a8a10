"""Comparisons the exercise checks share: they say *how* an answer is off, in one sentence.

A failure names the learner's own value and gives a hint (how to get there), never the expected
value: that belongs to the worked solution, which the learner opens when they choose to.
"""

from __future__ import annotations

import numpy as np


def as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def compare_arrays(answer, expected, name: str, rtol: float = 1e-4, atol: float = 1e-6, hint: str = "") -> str | None:
    """None when `answer` has `expected`'s shape and values (within tolerance), else what differs and `hint`."""
    try:
        a = as_array(answer)
    except (TypeError, ValueError) as e:
        return f"{name} should be an array or tensor ({e})."
    e = as_array(expected)
    if a.shape != e.shape:
        return f"{name} has shape {a.shape}, expected {e.shape}."
    if not np.all(np.isfinite(a)):
        return f"{name} holds NaN or infinite values."
    if not np.allclose(a, e, rtol=rtol, atol=atol):
        worst = np.unravel_index(np.argmax(np.abs(a - e)), a.shape)
        return (f"{name} differs from the right values, most at index {tuple(int(i) for i in worst)} "
                f"(yours: {a[worst]:.6g}).{_hint(hint)}")
    return None


def compare_number(answer, expected: float, name: str, tol: float = 1e-6, hint: str = "") -> str | None:
    """None when `answer` is `expected` within `tol` (relative above 1), else the learner's value and `hint`."""
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return f"{name} should be a number, got {answer!r}."
    if not abs(a - expected) <= tol * max(1.0, abs(expected)):
        return f"{name} is {a:.6g}, which is not right.{_hint(hint)}"
    return None


def _hint(hint: str) -> str:
    return f" Hint: {hint}" if hint else ""
