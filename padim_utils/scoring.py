"""Step 4 of PaDiM: Mahalanobis distance maps and image scores.

For a test embedding x_p at position p (paper eq. 2):

    M(x_p) = sqrt( (x_p - mu_p)^T Sigma_p^{-1} (x_p - mu_p) )

The (H, W) grid of distances is upsampled to the input size (bicubic in the
paper, bilinear in anomalib: the config's `interpolation`), smoothed with a
Gaussian of sigma = 4 pixels, and the image score is the map's maximum.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .config import check_interpolation


@torch.no_grad()
def mahalanobis(emb: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Distances (B, H, W) of embeddings (B, d, H, W) to per-position Gaussians.

    mean: (P, d), precision: (P, d, d) with P = H * W. Computed position-chunk by
    chunk as batched matrix products in the precision's dtype.

    With the identity as precision it is the Euclidean distance, sqrt(3^2 + 4^2) = 5; a variance of 4
    along the first axis (precision 1/4) halves that axis: sqrt(3^2 / 4 + 4^2) = 4.272:

    >>> emb = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)          # (B, d, H, W): one patch
    >>> mahalanobis(emb, torch.zeros(1, 2), torch.eye(2)[None])     # mean (P, d), precision (P, d, d)
    tensor([[[5.]]])
    >>> mahalanobis(emb, torch.zeros(1, 2), torch.diag(torch.tensor([0.25, 1.0]))[None])
    tensor([[[4.2720]]])
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


@functools.lru_cache(maxsize=32)  # built once per size, sigma, dtype and device
def _reflect_blur_matrix(n: int, sigma: float, dtype, device) -> torch.Tensor:
    """(n, n) matrix G with G @ x = the 1-D Gaussian blur of x with scipy's 'reflect' edges."""
    k = gaussian_kernel1d(sigma, dtype=torch.float64)
    r = (k.numel() - 1) // 2
    src = _reflect_index(n, r, "cpu").unfold(0, 2 * r + 1, 1)  # (n, 2r + 1): input index of each tap
    g = torch.zeros(n, n, dtype=torch.float64)
    g.scatter_add_(1, src, k.expand(n, -1).contiguous())  # taps that reflect onto one pixel add up
    return g.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _resize_matrix(n_in: int, n_out: int, mode: str, dtype, device) -> torch.Tensor:
    """(n_out, n_in) matrix U with U @ x = x resized by F.interpolate(mode, align_corners=False) along one axis.

    Bilinear and bicubic resizing are separable and linear, so resizing a (h, w) map is U_h @ D @ U_w^T;
    U is read off by resizing the identity along its rows (the other axis keeps its size: weights 0/1)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]  # (1, 1, n_in, n_in)
    u = F.interpolate(eye, size=(n_out, n_in), mode=mode, align_corners=False)[0, 0]
    return u.to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Blur (B, H, W) maps like scipy.ndimage.gaussian_filter(sigma, mode='reflect').

    Separable, so it is two matrix products G_H @ map @ G_W^T with the (reflect-padded)
    blur matrices: exact to float rounding, and far faster than a 33-tap convolution.
    """
    if sigma <= 0:
        return maps
    _, h, w = maps.shape
    g_h = _reflect_blur_matrix(h, float(sigma), maps.dtype, maps.device)  # (H, H)
    g_w = _reflect_blur_matrix(w, float(sigma), maps.dtype, maps.device)  # (W, W)
    return g_h @ maps @ g_w.T  # (B, H, W)


def anomaly_maps(distances: torch.Tensor, out_size: int, sigma: float = 4.0,
                 interpolation: str = "bicubic") -> torch.Tensor:
    """(B, h, w) patch distances -> (B, S, S) smoothed pixel maps.

    `interpolation`: "bicubic" (the paper) or "bilinear" (anomalib), pixel centres
    aligned (align_corners=False) as when resizing an image. Both steps are linear and
    separable, so the maps are matrix products: bilinear, U_h D U_w^T then the blur,
    fused into (G U_h) D (G U_w)^T; bicubic clamps at 0 between the two.
    """
    check_interpolation(interpolation)
    d = distances.float()  # (B, h, w)
    _, h, w = d.shape
    u_h = _resize_matrix(h, out_size, interpolation, d.dtype, d.device)  # (S, h)
    u_w = _resize_matrix(w, out_size, interpolation, d.dtype, d.device)  # (S, w)
    if interpolation == "bilinear" and sigma > 0:
        g = _reflect_blur_matrix(out_size, float(sigma), d.dtype, d.device)  # (S, S)
        return (g @ u_h) @ d @ (g @ u_w).T  # (B, S, S)
    up = u_h @ d @ u_w.T  # (B, S, S), as F.interpolate gives it
    if interpolation == "bicubic":
        # The cubic kernel has negative lobes, so next to a peak it can undershoot below 0; a
        # distance is never negative, so clamp at 0 (bilinear stays within the data's range).
        up = up.clamp_min(0)
    return gaussian_blur(up, sigma)


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """(B, S, S) -> (B,): the paper's image score, the maximum of the map.

    >>> image_scores(torch.tensor([[[0.1, 0.7], [0.2, 0.3]], [[2.0, 0.0], [0.0, 1.0]]]))
    tensor([0.7000, 2.0000])
    """
    return maps.flatten(1).amax(1)


__all__ = ["mahalanobis", "gaussian_blur", "gaussian_kernel1d", "anomaly_maps", "image_scores"]
