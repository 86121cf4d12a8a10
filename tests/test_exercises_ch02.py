"""Exercise 2.1's check accepts the explained-variance fraction and catches the usual mistakes."""

import numpy as np
import torch

from padim_utils.course.exercises import check


def _data():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.1, 12)
    return torch.tensor(rng.normal(size=(500, 12)) * scales + 5.0)  # uncentred, unequal variances


def test_right_answer_passes():
    X = _data()
    ev = torch.linalg.eigvalsh(torch.cov(X.T)).flip(0)
    assert check("2.1", float(ev[:4].sum() / ev.sum()), X=X, d=4) is None


def test_typical_mistakes_are_caught():
    X = _data()
    ev = torch.linalg.eigvalsh(torch.cov(X.T))  # ascending: the classic slip
    assert "smallest" in check("2.1", float(ev[:4].sum() / ev.sum()), X=X, d=4)
    right = float(ev.flip(0)[:4].sum() / ev.sum())
    assert "percentage" in check("2.1", 100 * right, X=X, d=4)
    raw = torch.linalg.eigvalsh(X.T @ X / len(X)).flip(0)  # not centred: the mean dominates
    assert check("2.1", float(raw[:4].sum() / raw.sum()), X=X, d=4) is not None
    assert check("2.1", right, X=X, d=5) is not None
    assert "not answered" in check("2.1", ..., X=X, d=4)
