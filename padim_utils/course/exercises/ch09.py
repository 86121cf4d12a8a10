"""Chapter 09: beyond the benchmark."""

import numpy as np

from . import exercise
from ._common import as_number, compare_number, tolerance


@exercise("9.1")
def rotation_slope(answer, angles, rot_scores):
    """Least-squares slope of the mean good-image score against the rotation angle, in score units per degree."""
    x = np.asarray(angles, dtype=np.float64)
    y = np.asarray(rot_scores, dtype=np.float64).reshape(len(x), -1).mean(axis=1)
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number (the slope), got {answer!r}."
    tol = tolerance(answer)
    if slope != 0 and abs(a - slope * 180 / np.pi) <= tol * abs(slope * 180 / np.pi):
        return "that is the slope per radian: use the angles in degrees."
    if slope != 0 and abs(a - 1 / slope) <= tol * abs(1 / slope):
        return "that is degrees per score unit: regress the score on the angle, not the other way round."
    return compare_number(answer, slope, "the slope (score units per degree)", tol=1e-6,
                          hint="average rot_scores over the images of each angle (axis=1), then fit a line to "
                               "those means against the angles in degrees: the slope is its first coefficient.")
