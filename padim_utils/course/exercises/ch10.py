"""Chapter 10: reproducing the paper."""

import math

import numpy as np
import scipy.stats

from . import exercise
from ._common import as_array, as_number, close, compare_number, items, tolerance


@exercise("10.1")
def mean_and_sem(answer, values):
    """(mean, SEM) of per-seed values; SEM = sample std (ddof=1) / sqrt(n), checked against scipy.stats.sem."""
    v = as_array(values).ravel()
    pair = items(answer, 2)
    if pair is None:
        return "answer with a tuple (mean, sem)."
    try:
        mean, sem = (float("nan") if x is None else as_number(x) for x in pair)
    except (TypeError, ValueError):
        return f"answer with two numbers (mean, sem), got {answer!r}."
    tol = tolerance(answer)
    problem = compare_number(pair[0], float(np.mean(v)), "the mean", tol=tol, hint="the mean of the seeds' values.")
    if problem:
        if len(v) > 1 and close(sem, float(np.mean(v)), tol):
            return "the order is (mean, sem): the mean first."
        return problem
    if len(v) < 2:
        return None if math.isnan(sem) else "with one seed the SEM is undefined: answer None (or nan) for it."
    expected = float(scipy.stats.sem(v))
    if close(sem, np.std(v, ddof=0) / math.sqrt(len(v)), tol) and not close(sem, expected, tol):
        return "that SEM uses the population std (ddof=0); the sample std divides by n - 1 (ddof=1)."
    if close(sem, float(np.std(v, ddof=1)), tol) and not close(sem, expected, tol):
        return "that is the standard deviation of the seeds; the SEM divides it by sqrt(n)."
    return compare_number(pair[1], expected, "the SEM", tol=tol,
                          hint="the sample standard deviation (ddof=1) divided by the square root of the number "
                               "of seeds.")
