"""Exercise 4.1: a right answer passes, typical wrong answers are caught with a useful sentence."""

import numpy as np
import torch

from padim_utils.course.exercises import check
from padim_utils.scoring import mahalanobis


def _given():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 4, 2, 3, generator=g)  # (N, d, h, w)
    mean = torch.randn(6, 4, generator=g)
    a = torch.randn(6, 4, 4, generator=g)
    precision = a @ a.transpose(1, 2) + torch.eye(4)  # positive definite
    return dict(embeddings=emb, mean=mean, precision=precision, image=2, position=(1, 2))


def test_right_answer_passes():
    given = _given()
    dist = mahalanobis(given["embeddings"], given["mean"], given["precision"])
    assert check("4.1", dist[2, 1, 2].item(), **given) is None


def test_squared_distance_is_caught():
    given = _given()
    dist = mahalanobis(given["embeddings"], given["mean"], given["precision"])
    msg = check("4.1", dist[2, 1, 2].item() ** 2, **given)
    assert msg is not None and "square" in msg and f"{dist[2, 1, 2].item():.6g}" not in msg


def test_covariance_instead_of_precision_is_caught():
    given = _given()
    x = given["embeddings"][2, :, 1, 2].double().numpy()
    mu, vi = given["mean"][5].double().numpy(), given["precision"][5].double().numpy()
    delta = x - mu
    msg = check("4.1", float(np.sqrt(delta @ np.linalg.inv(vi) @ delta)), **given)
    assert msg is not None and "inverse" in msg


def test_wrong_position_is_caught():
    given = _given()
    dist = mahalanobis(given["embeddings"], given["mean"], given["precision"])
    msg = check("4.1", dist[2, 2 - 1, 0].item(), **given)  # column 0 instead of 2
    assert msg is not None and "Hint:" in msg and f"{dist[2, 1, 2].item():.6g}" not in msg
    assert check("4.1", "big", **given) is not None
