"""Step 4 of PaDiM: Mahalanobis distance maps and image scores.

For a test embedding x_p at position p (paper eq. 2):

    M(x_p) = sqrt( (x_p - mu_p)^T Sigma_p^{-1} (x_p - mu_p) )

The (H, W) grid of distances is upsampled to the input size (bicubic in the
paper, bilinear in anomalib: the config's `interpolation`), smoothed with a
Gaussian of sigma = 4 pixels, and the image score is the map's maximum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import INTERPOLATIONS
from .errors import PadimError


@torch.no_grad()
def mahalanobis(emb: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Distances (B, H, W) of embeddings (B, d, H, W) to per-position Gaussians.

    mean: (P, d), precision: (P, d, d) with P = H * W. Computed position-chunk by
    chunk as batched matrix products in the precision's dtype.
    """
    b, d, h, w = emb.shape
    x = emb.permute(2, 3, 0, 1).reshape(h * w, b, d).to(precision.dtype)  # (P, B, d): a view if channels-last
    out = torch.empty(h * w, b, dtype=precision.dtype, device=emb.device)  # (P, B)
    for s in range(0, h * w, chunk):
        # a contiguous (p, B, d) difference: the batched matmul is several times slower on the strided view
        delta = (x[s : s + chunk] - mean[s : s + chunk, None, :]).contiguous()  # (p, B, d)
        out[s : s + chunk] = (torch.bmm(delta, precision[s : s + chunk]) * delta).sum(-1)
    return out.clamp_min_(0).sqrt_().T.reshape(b, h, w)  # (B, H, W)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian, radius int(truncate * sigma + 0.5) as scipy.ndimage uses."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _reflect_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of scipy's 'reflect' padding (d c b a | a b c d | d c b a)."""
    i = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Blur (B, H, W) maps like scipy.ndimage.gaussian_filter(sigma, mode='reflect')."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, dtype=maps.dtype, device=maps.device)
    r = (k.numel() - 1) // 2
    b, h, w = maps.shape
    x = maps[:, None]  # (B, 1, H, W)
    x = x.index_select(2, _reflect_index(h, r, maps.device))  # (B, 1, H + 2r, W)
    x = F.conv2d(x, k.view(1, 1, -1, 1))  # (B, 1, H, W)
    x = x.index_select(3, _reflect_index(w, r, maps.device))  # (B, 1, H, W + 2r)
    x = F.conv2d(x, k.view(1, 1, 1, -1))  # (B, 1, H, W)
    return x[:, 0]


def anomaly_maps(distances: torch.Tensor, out_size: int, sigma: float = 4.0,
                 interpolation: str = "bicubic") -> torch.Tensor:
    """(B, h, w) patch distances -> (B, S, S) smoothed pixel maps.

    `interpolation`: "bicubic" (the paper) or "bilinear" (anomalib), pixel centres
    aligned (align_corners=False) as when resizing an image.
    """
    if interpolation not in INTERPOLATIONS:
        raise PadimError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    up = F.interpolate(distances[:, None].float(), size=(out_size, out_size), mode=interpolation,
                       align_corners=False)[:, 0]  # (B, S, S)
    if interpolation == "bicubic":
        # The cubic kernel has negative lobes, so next to a peak it can undershoot below 0; a
        # distance is never negative, so clamp at 0 (bilinear stays within the data's range).
        up = up.clamp_min(0)
    return gaussian_blur(up, sigma)


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """(B, S, S) -> (B,): the paper's image score, the maximum of the map."""
    return maps.flatten(1).amax(1)


__all__ = ["mahalanobis", "gaussian_blur", "gaussian_kernel1d", "anomaly_maps", "image_scores"]
