"""Chapter 10: reproducing the paper."""

import math

import numpy as np
import scipy.stats

from . import exercise
from ._common import compare_number


@exercise("10.1")
def mean_and_sem(answer, values):
    """(mean, SEM) of per-seed values; SEM = sample std (ddof=1) / sqrt(n), checked against scipy.stats.sem."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return "answer with a tuple (mean, sem)."
    try:
        mean, sem = (float("nan") if x is None else float(x) for x in answer)
    except (TypeError, ValueError):
        return f"answer with two numbers (mean, sem), got {answer!r}."
    problem = compare_number(mean, float(np.mean(v)), "the mean", tol=1e-9, hint="the mean of the seeds' values.")
    if problem:
        if len(v) > 1 and np.isclose(sem, np.mean(v)):
            return "the order is (mean, sem): the mean first."
        return problem
    if len(v) < 2:
        return None if math.isnan(sem) else "with one seed the SEM is undefined: answer None (or nan) for it."
    expected = float(scipy.stats.sem(v))
    if np.isclose(sem, np.std(v, ddof=0) / math.sqrt(len(v)), rtol=1e-9) and not np.isclose(sem, expected):
        return "that SEM uses the population std (ddof=0); the sample std divides by n - 1 (ddof=1)."
    if np.isclose(sem, np.std(v, ddof=1), rtol=1e-9) and not np.isclose(sem, expected):
        return "that is the standard deviation of the seeds; the SEM divides it by sqrt(n)."
    return compare_number(sem, expected, "the SEM", tol=1e-9,
                          hint="the sample standard deviation (ddof=1) divided by the square root of the number "
                               "of seeds.")
