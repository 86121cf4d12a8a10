"""Comparisons the exercise checks share: they say *how* an answer is off, in one sentence.

A failure names the learner's own value and gives a hint (how to get there), never the expected
value: that belongs to the worked solution, which the learner opens when they choose to.
"""

from __future__ import annotations

import numpy as np
import torch

#: How near a number must be to the right value (relative above 1, absolute below): float32's precision
#: with room for a few roundings, so that a right answer computed in float32 passes. An answer held in a
#: coarser dtype (float16, bfloat16) is compared to its own precision (`tolerance`).
NUMBER_TOL = 1e-6


def as_array(x) -> np.ndarray:
    """A float64 numpy array of an array, tensor (any device and dtype), list or number."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        try:
            x = x.numpy()
        except TypeError:  # dtypes numpy has no match for (bfloat16, float8)
            x = x.double().numpy()
    return np.asarray(x, dtype=np.float64)


def as_number(answer) -> float:
    """One number from a Python, numpy or torch scalar, or from an array, tensor or list holding exactly one;
    TypeError or ValueError otherwise (a string, None, several numbers)."""
    if answer is None or isinstance(answer, (str, bytes)):
        raise TypeError(f"expected a number, got {answer!r}")
    a = as_array(answer)
    if a.size != 1:
        raise ValueError(f"expected one number, got {a.size}")
    return float(a.reshape(()))


def items(answer, n: int) -> list | None:
    """The `n` items of a tuple, list, array or tensor of `n` values (each as given, so its dtype is kept);
    None when `answer` is not one."""
    if isinstance(answer, (str, bytes, dict)):
        return None
    try:
        values = list(answer)
    except TypeError:
        return None
    return values if len(values) == n else None


def _eps(answer) -> float:
    """The rounding unit of the dtype an answer is held in (0 where it has none: Python numbers)."""
    dtype = getattr(answer, "dtype", None)
    if dtype is None and isinstance(answer, (list, tuple)):
        return max((_eps(a) for a in answer), default=0.0)
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps)
    return 0.0


def tolerance(answer, tol: float = NUMBER_TOL) -> float:
    """`tol`, widened to 4 rounding units of the answer's own dtype where that is coarser (float16, bfloat16)."""
    return max(tol, 4 * _eps(answer))


def close(value: float, expected: float, tol: float = NUMBER_TOL) -> bool:
    """|value - expected| <= tol, relative above 1 (NaN is never close)."""
    return abs(value - expected) <= tol * max(1.0, abs(expected))


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


def compare_number(answer, expected: float, name: str, tol: float = NUMBER_TOL, hint: str = "") -> str | None:
    """None when `answer` (any scalar, or an array, tensor or list of one number) is `expected` within `tol`
    (relative above 1; at least the answer dtype's precision, `tolerance`), else the learner's value and `hint`."""
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"{name} should be a number, got {answer!r}."
    if not close(a, expected, tolerance(answer, tol)):
        return f"{name} is {a:.6g}, which is not right.{_hint(hint)}"
    return None


def _hint(hint: str) -> str:
    return f" Hint: {hint}" if hint else ""
