"""Exercise 3.1's check accepts one position's covariance and catches the usual mistakes."""

import torch

from padim_utils.course.exercises import check
from padim_utils.gaussian import GaussianStats


def _emb():
    return torch.randn(12, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1  # (N, d, h, w)


def test_right_answer_passes_and_agrees_with_gaussian_stats():
    emb = _emb()
    stats = GaussianStats(12, 5)
    stats.update(emb[:7])
    stats.update(emb[7:])
    answer = stats.covariance()[1 * 4 + 2]  # position (1, 2), flat index i * w + j
    assert check("3.1", answer, emb=emb, position=(1, 2)) is None
    xs = emb[:, :, 1, 2].double()
    assert check("3.1", (xs - xs.mean(0)).T @ (xs - xs.mean(0)) / 11, emb=emb, position=(1, 2)) is None


def test_typical_mistakes_are_caught():
    emb = _emb()
    xs = emb[:, :, 1, 2].double()
    xc = xs - xs.mean(0)
    assert "divided by N" in check("3.1", xc.T @ xc / 12, emb=emb, position=(1, 2))
    assert "image against image" in check("3.1", xc @ xc.T / 11, emb=emb, position=(1, 2))
    assert "eps" in check("3.1", xc.T @ xc / 11 + 0.01 * torch.eye(5), emb=emb, position=(1, 2))
    assert check("3.1", xc.T @ xc / 11, emb=emb, position=(2, 1)) is not None  # another position
    assert check("3.1", xs.T @ xs / 11, emb=emb, position=(1, 2)) is not None  # not centred
