"""Step 3 of PaDiM: one multivariate Gaussian per patch position.

For every position p of the H x W grid, PaDiM models the d-dimensional
embeddings of the N training images as N(mu_p, Sigma_p) with

    Sigma_p = 1/(N-1) sum_i (x_ip - mu_p)(x_ip - mu_p)^T + eps * I      (paper eq. 1)

`GaussianStats` accumulates this *streaming*, batch by batch, without ever
keeping the training embeddings: it stores the count n, the mean (P, d) and
the centred scatter M2 = sum (x - mu)(x - mu)^T (P, d, d) in float64, and
merges a new batch with Chan et al.'s pairwise update

    delta = mu_b - mu_a,   M2 = M2_a + M2_b + delta delta^T * n_a n_b / n.

The same rule merges two partial fits (`merge`), e.g. fits of two halves of
the data or of two GPUs, into exactly the full fit.

Each batch costs one batched matrix product per chunk of positions: the
batch's centred rows with Chan's term appended as one more row,

    R = [x_1 - mu_b; ...; x_B - mu_b; sqrt(n_a n_b / n) * delta]   (B + 1, d)
    M2 += R^T R

The product runs in float64 where the device does float64 fast (CPUs,
data-centre GPUs), else in float32 on rows centred in float64 and added to the
float64 M2 (`scatter_dtype`): the statistics then equal the float64 ones to
about 1e-7 relative, where float32 sums of raw moments would lose most digits.

`finalize` turns the statistics into the mean and the *inverse* covariance
(precision), computed chunk by chunk through a Cholesky factorisation. M2 is
held as one tensor per chunk of positions, each freed once inverted, so the
peak memory of finalize is the scatter itself plus one chunk, not scatter and
precision side by side.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

from .config import STATS_DTYPES
from .errors import PadimError

#: CUDA compute capabilities whose float64 rate is half their float32 rate (P100, V100, A100,
#: H100/H200, B200). Other GPUs run float64 at 1/32 to 1/64 of float32.
FAST_FLOAT64_GPUS = {(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)}


def scatter_dtype(device, requested: str = "auto") -> torch.dtype:
    """The dtype of the scatter products: float64 or float32 as `requested`; "auto" takes float64 on
    the CPU and on GPUs in `FAST_FLOAT64_GPUS`, float32 on other GPUs. M2 itself is always float64."""
    if requested not in STATS_DTYPES:
        raise PadimError(f"the Gaussian statistics' dtype must be one of {', '.join(STATS_DTYPES)}, "
                         f"got {requested!r}")
    if requested != "auto":
        return getattr(torch, requested)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float64 if torch.cuda.get_device_capability(device) in FAST_FLOAT64_GPUS else torch.float32
    return torch.float64


def fit_bytes(positions: int, d: int, precision_dtype: torch.dtype = torch.float32) -> int:
    """Bytes a fit of `positions` Gaussians in d dimensions holds at its peak: the float64 mean and scatter
    (`GaussianStats`: positions x d x 8 + positions x d^2 x 8) and the precision `finalize` writes while the
    scatter is still held (positions x d^2 x the precision's bytes).

    >>> stats = GaussianStats(n_positions=6, d=5)
    >>> fit_bytes(6, 5) == stats.nbytes + 6 * 5 * 5 * 4      # + a float32 precision (P, d, d)
    True
    >>> round(fit_bytes(512 * 512, 100) / 1e9, 1)           # 2048 px images, stride 4, d = 100
    31.7
    """
    return positions * d * 8 + positions * d * d * (8 + precision_dtype.itemsize)


def _map_chunks(fn, items) -> list:
    """fn(item) for every item, on the CPU: one Python thread per torch thread, each running torch
    single-threaded. Batched Cholesky factorises one matrix at a time, so this keeps every core busy
    (1.2-1.4x faster finalize on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


class GaussianStats:
    """Streaming per-position mean and covariance of (B, d, H, W) embeddings.

    `dtype`: the arithmetic of the scatter products, "auto" (see `scatter_dtype`), "float64" or
    "float32"; the count, mean and M2 are float64 whatever it says.

    Streamed in two batches, the covariance at each position is the two-pass one (`torch.cov`):

    >>> x = torch.randn(10, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> stats = GaussianStats(n_positions=4, d=3)       # (N, d, H, W) embeddings, P = H * W = 4
    >>> stats.update(x[:6]); stats.update(x[6:])
    >>> rows = x[:, :, 0, 1]                            # position 1 (row 0, column 1): (N, d)
    >>> torch.allclose(stats.covariance()[1], torch.cov(rows.T)), torch.allclose(stats.mean[1], rows.mean(0))
    (True, True)
    >>> torch.allclose(stats.covariance(eps=0.01)[1], torch.cov(rows.T) + 0.01 * torch.eye(3, dtype=torch.float64))
    True
    """

    def __init__(self, n_positions: int, d: int, device="cpu", chunk: int = 512, dtype: str = "auto"):
        self.P, self.d, self.chunk = n_positions, d, chunk
        self.n = 0
        self.mean = torch.zeros(n_positions, d, dtype=torch.float64, device=device)  # (P, d)
        self.product_dtype = scatter_dtype(self.mean.device, dtype)
        # M2, one (p, d, d) float64 tensor per chunk of positions: finalize frees each once inverted
        self.m2_chunks: list[torch.Tensor] | None = [
            torch.zeros(min(chunk, n_positions - s), d, d, dtype=torch.float64, device=device)
            for s in range(0, n_positions, chunk)]

    @property
    def m2(self) -> torch.Tensor:
        """The centred scatter (P, d, d), float64: the chunks side by side (a copy when there are
        several; `m2_chunks` holds them without copying)."""
        self._check_unconsumed()
        return self.m2_chunks[0] if len(self.m2_chunks) == 1 else torch.cat(self.m2_chunks)

    @property
    def nbytes(self) -> int:
        """Bytes held by the statistics (mean and M2)."""
        self._check_unconsumed()
        return self.mean.nbytes + sum(m.nbytes for m in self.m2_chunks)

    @torch.no_grad()
    def update(self, emb: torch.Tensor) -> None:
        """Add a batch of embeddings (B, d, H, W) with H * W == P."""
        b, d, h, w = emb.shape
        if d != self.d or h * w != self.P:
            raise PadimError(f"embedding of shape {tuple(emb.shape)} does not match the fit ({self.d} x {self.P})")
        self._check_unconsumed()
        na, n = self.n, self.n + b
        # (P, B, d), a view: each d-vector is contiguous when emb is channels-last, as the Reducer returns it
        x = emb.permute(2, 3, 0, 1).reshape(h * w, b, d)
        for s, m2 in zip(range(0, self.P, self.chunk), self.m2_chunks):
            p = m2.shape[0]
            # (p, B [+1], d) float64 rows, contiguous: the batched matmul is ~10x slower on the strided view
            rows = torch.empty(p, b + (na > 0), d, dtype=torch.float64, device=m2.device)
            rows[:, :b] = x[s : s + p]
            mb = rows[:, :b].mean(1)  # (p, d): the batch's means
            ma = self.mean[s : s + p]  # (p, d): the means so far, updated in place
            rows[:, :b] -= mb[:, None, :]  # the batch's centred rows
            if na > 0:  # Chan's term sqrt(na nb / n) * delta as one more row: one product adds both
                rows[:, b] = (mb - ma) * math.sqrt(na * b / n)
            _add_scatter(m2, rows.to(self.product_dtype))
            ma.add_((mb - ma) * (b / n))
        self.n = n

    @torch.no_grad()
    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """Fold another partial fit into this one (in place); returns self."""
        if (other.P, other.d) != (self.P, self.d):
            raise PadimError("cannot merge Gaussian fits of different shapes")
        self._check_unconsumed()
        other._check_unconsumed()
        if other.n == 0:
            return self
        na, nb = self.n, other.n
        theirs = other.m2  # (P, d, d)
        for s, m2 in zip(range(0, self.P, self.chunk), self.m2_chunks):
            m2.add_(theirs[s : s + self.chunk].to(m2.device))
            ma, mb = self.mean[s : s + self.chunk], other.mean[s : s + self.chunk].to(m2.device)
            if na > 0:
                delta = mb - ma  # (p, d)
                m2.baddbmm_(delta[:, :, None], delta[:, None, :], alpha=na * nb / (na + nb))
            ma.add_((mb - ma) * (nb / (na + nb)))
        self.n = na + nb
        return self

    def covariance(self, eps: float = 0.0) -> torch.Tensor:
        """(P, d, d) float64 covariance, unbiased (N - 1), plus eps * I. Allocates a copy."""
        self._check_n()
        cov = torch.cat(self.m2_chunks) / (self.n - 1)
        cov.diagonal(dim1=-2, dim2=-1).add_(eps)
        return cov

    @torch.no_grad()
    def finalize(self, eps: float, dtype=torch.float32, keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (mean (P, d), precision (P, d, d)) in `dtype`.

        By default this consumes the statistics: each chunk of the scatter is turned into its
        covariance in place, factorised and inverted. On a GPU the chunks go one at a time, each
        freed once inverted, so peak memory is the float64 scatter plus one chunk's temporaries
        (Wide-ResNet50, d = 550, 56 x 56 grid: 7.1 GiB + ~0.6 GiB), never scatter and precision
        (3.5 GiB in float32) side by side. On a CPU with several threads the chunks are inverted in
        parallel into one output, and the scatter goes at the end. With `keep=True` each chunk is
        copied first, so the same statistics can be finalised again, e.g. for several eps.
        """
        self._check_n()
        device = self.mean.device
        # positions factorised at once: on the CPU few, so that a batch of factors stays in cache (1.5x
        # faster than 128 for d = 100); on a GPU many, so that one call fills the device
        sub = max(1, min(self.chunk, 16 if device.type == "cpu" else 128))

        def invert(m2: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            """Write the precision of a (p, d, d) scatter chunk into `out`; returns the (p,) Cholesky
            info (0: positive definite)."""
            infos = []
            for s in range(0, m2.shape[0], sub):
                cov = m2[s : s + sub] / (self.n - 1) if keep else m2[s : s + sub].div_(self.n - 1)
                cov.diagonal(dim1=-2, dim2=-1).add_(eps)
                chol, info = torch.linalg.cholesky_ex(cov)
                # a failed factor (info > 0) is swapped for I before inverting: a CPU inverse would raise on
                # its zero diagonal, and the caller reports the failure once, without a sync per chunk
                chol = torch.where(info[:, None, None] == 0, chol, torch.eye(self.d, dtype=chol.dtype,
                                                                            device=chol.device))
                out[s : s + sub] = torch.cholesky_inverse(chol)
                infos.append(info)
            return torch.cat(infos)

        starts = range(0, self.P, self.chunk)
        if device.type == "cpu" and torch.get_num_threads() > 1:  # chunks in parallel threads, one output
            precision = torch.empty(self.P, self.d, self.d, dtype=dtype)  # (P, d, d)
            infos = _map_chunks(lambda i: invert(self.m2_chunks[i], precision[starts[i] : starts[i] + self.chunk]),
                                range(len(starts)))
        else:  # one chunk at a time (GPUs), each scatter chunk freed as soon as it is inverted
            outs, infos = [], []
            for i in range(len(starts)):
                outs.append(torch.empty(self.m2_chunks[i].shape, dtype=dtype, device=device))
                infos.append(invert(self.m2_chunks[i], outs[-1]))
                if not keep:
                    self.m2_chunks[i] = None  # freed
            precision = outs[0] if len(outs) == 1 else torch.cat(outs)  # (P, d, d)
        if not keep:
            self.m2_chunks = None  # consumed
        if bool(torch.cat(infos).ne(0).any()):  # one host sync, not one per chunk
            raise PadimError("a covariance matrix is not positive definite; increase eps")
        return self.mean.to(dtype), precision

    def _check_unconsumed(self) -> None:
        if self.m2_chunks is None:
            raise PadimError("these Gaussian statistics were already finalized")

    def _check_n(self) -> None:
        self._check_unconsumed()
        if self.n < 2:
            raise PadimError(f"a Gaussian fit needs at least 2 training images, got {self.n}")


def _add_scatter(m2: torch.Tensor, rows: torch.Tensor) -> None:
    """m2 (p, d, d) float64 += rows^T rows for rows (p, k, d), in rows' dtype. A float32 product
    runs in full float32 (never TF32, whatever the global setting), then is added in float64."""
    if rows.dtype == torch.float64:
        m2.baddbmm_(rows.transpose(1, 2), rows)
        return
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        m2.add_(torch.bmm(rows.transpose(1, 2), rows))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


@torch.no_grad()
def shared_gaussian(embeddings: torch.Tensor, eps: float = 0.01, dtype=torch.float32,
                    batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """A variant for comparison (course chapter 04): **one Gaussian shared by all positions**, every patch of
    every training image one sample of it (streamed through `GaussianStats` with a single position), repeated
    for each position so that `scoring.mahalanobis` and the rest of the pipeline take it unchanged:

        mean, precision = shared_gaussian(train_emb, eps=cfg.eps)      # (P, d), (P, d, d)
        dist = mahalanobis(test_emb, mean, precision)                  # (N, h, w)

    `embeddings`: training embeddings (N, d, h, w), after the reduction; `eps`: added to the covariance's
    diagonal, as in PaDiM (paper: 0.01); `dtype`: of the returned tensors; `batch`: patches per
    `GaussianStats.update` (bounds memory). Returns mean (h * w, d) and precision (h * w, d, d): the same at
    every position (expanded views, no copies).
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
