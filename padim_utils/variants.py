"""Variants of PaDiM's scoring step, for the course's comparisons (chapter 04).

PaDiM fits one Gaussian N(mu_p, Sigma_p) per patch position p. The variant
here fits **one Gaussian shared by all positions** (every patch of every
training image is one sample of it), then hands it to the same
`scoring.mahalanobis` as per-position statistics, so the rest of the pipeline
(upsampling, blur, image score = max, metrics) is unchanged:

    mean, precision = shared_gaussian(train_emb, eps=cfg.eps)      # (P, d), (P, d, d)
    dist = mahalanobis(test_emb, mean, precision)                  # (N, h, w)

The fit streams through `gaussian.GaussianStats` with a single position.
"""

from __future__ import annotations

import torch

from .errors import PadimError
from .gaussian import GaussianStats

__all__ = ["shared_gaussian"]


@torch.no_grad()
def shared_gaussian(embeddings: torch.Tensor, eps: float = 0.01, dtype=torch.float32,
                    batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gaussian over every patch of every image, repeated for each position.

    Parameters
    ----------
    embeddings : tensor (N, d, h, w)
        Training embeddings (after the reduction to d channels).
    eps : float
        Added to the covariance's diagonal, as in PaDiM (paper: 0.01).
    dtype : torch dtype of the returned tensors.
    batch : patches per `GaussianStats.update` call (bounds memory).

    Returns
    -------
    mean : (h * w, d), precision : (h * w, d, d)
        The same mean and inverse covariance at every position (expanded views,
        no copies), in the layout `scoring.mahalanobis` expects.
    """
    if embeddings.ndim != 4:
        raise PadimError(f"embeddings must have shape (N, d, h, w), got {tuple(embeddings.shape)}")
    n, d, h, w = embeddings.shape
    patches = embeddings.permute(0, 2, 3, 1).reshape(n * h * w, d)  # (N*h*w, d): one sample per patch
    if patches.shape[0] < 2:
        raise PadimError("a shared Gaussian needs at least 2 patches")
    stats = GaussianStats(1, d, device=embeddings.device)
    for s in range(0, patches.shape[0], batch):
        stats.update(patches[s : s + batch, :, None, None])  # (B, d, 1, 1): all positions are one
    mean, precision = stats.finalize(eps, dtype=dtype)  # (1, d), (1, d, d)
    return mean.expand(h * w, d), precision.expand(h * w, d, d)
