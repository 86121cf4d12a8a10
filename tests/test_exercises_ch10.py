"""Exercise 10.1 accepts the right answer and catches typical wrong ones."""

import math

import numpy as np

from padim_utils.course.exercises import check

VALUES = [0.91, 0.87, 0.95, 0.90]
MEAN = 0.9075
SEM = 0.016520189667999174  # sqrt(((0.0025^2 + 0.0375^2 + 0.0425^2 + 0.0075^2) / 3) / 4), worked by hand


def test_right_answer_passes():
    assert math.isclose(np.std(VALUES, ddof=1) / 2, SEM, rel_tol=1e-12)
    assert check("10.1", (MEAN, SEM), values=VALUES) is None
    assert check("10.1", [MEAN, SEM + 1e-12], values=VALUES) is None
    assert check("10.1", (0.5, None), values=[0.5]) is None  # one seed: no SEM
    assert check("10.1", (0.5, float("nan")), values=[0.5]) is None


def test_wrong_answers_are_caught():
    assert "ddof" in check("10.1", (MEAN, np.std(VALUES) / 2), values=VALUES)
    assert "sqrt(n)" in check("10.1", (MEAN, np.std(VALUES, ddof=1)), values=VALUES)
    assert "order" in check("10.1", (SEM, MEAN), values=VALUES)
    assert check("10.1", (MEAN + 0.01, SEM), values=VALUES) is not None
    assert check("10.1", (MEAN, SEM * 1.01), values=VALUES) is not None
    assert check("10.1", (0.5, 0.0), values=[0.5]) is not None
    assert check("10.1", MEAN, values=VALUES) is not None
    assert check("10.1", ("a", "b"), values=VALUES) is not None
    assert check("10.1", ..., values=VALUES).startswith("not answered")
