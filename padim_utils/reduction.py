"""Step 2 of PaDiM: from the backbone's layers to one d-dimensional embedding per patch.

PaDiM concatenates layers 1-3 (upsampled to layer 1's grid) into a C-channel
embedding, then keeps only d of the C channels. The paper's finding (Sec. 5.1)
is that a *random* subset works as well as PCA, and better, at a fraction of the cost.

    random : d channels drawn once with a seeded `torch.Generator`.
             Channels are gathered per layer *before* upsampling, which is exact
             because nearest-neighbour upsampling copies values channel by channel.
    pca    : the d leading principal directions of the training embeddings,
             x -> W^T x with W of shape (C, d), fitted in one streaming pass.
    none   : all C channels.
"""

from __future__ import annotations

import torch

from .backbones import embed
from .errors import PadimError
from .gaussian import GaussianStats


def _check_d(d: int, n_channels: int) -> None:
    if d > n_channels:
        raise PadimError(f"d={d} is larger than the backbone's {n_channels} channels; use d <= {n_channels}")


def random_channels(n_channels: int, d: int, seed: int) -> torch.Tensor:
    """Sorted indices of `d` channels out of `n_channels`, reproducible from `seed`.

    Sorting does not change the Mahalanobis distance (it is invariant to a
    permutation of the coordinates) and lets each layer be indexed separately.

    >>> idx = random_channels(448, 100, seed=0)       # ResNet18's 448 channels, the paper's d = 100
    >>> idx.shape, bool((idx[1:] > idx[:-1]).all()), 0 <= int(idx.min()) and int(idx.max()) < 448
    (torch.Size([100]), True, True)
    >>> torch.equal(idx, random_channels(448, 100, seed=0)), torch.equal(idx, random_channels(448, 100, seed=1))
    (True, False)
    """
    _check_d(d, n_channels)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_channels, generator=g)[:d].sort().values  # (d,)


class Reducer:
    """Turns the list of layer outputs into the (B, d, H, W) embedding.

    Two layers, 2 and 3 channels, the second on a grid half as fine; "none" keeps all 5 channels, each
    layer upsampled (nearest) to the first one's 4 x 4 grid:

    >>> layers = [torch.zeros(1, 2, 4, 4), torch.arange(12.0).reshape(1, 3, 2, 2)]
    >>> emb = Reducer("none", channels=[2, 3], d=5)(layers)
    >>> emb.shape
    torch.Size([1, 5, 4, 4])
    >>> emb[0, 2]                                      # layer 2's first channel, each value copied 2 x 2
    tensor([[0., 0., 1., 1.],
            [0., 0., 1., 1.],
            [2., 2., 3., 3.],
            [2., 2., 3., 3.]])
    >>> Reducer("random", channels=[2, 3], d=2, seed=0)(layers).shape
    torch.Size([1, 2, 4, 4])
    """

    def __init__(self, kind: str, channels: list[int], d: int, seed: int = 0):
        self.kind = kind
        self.channels = list(channels)  # per hooked layer
        self.n_channels = sum(self.channels)
        self.index: torch.Tensor | None = None  # (d,) for "random"
        self.projection: torch.Tensor | None = None  # (C, d) for "pca"
        if kind == "none":
            self.d = self.n_channels
        elif kind in ("random", "pca"):
            _check_d(d, self.n_channels)
            self.d = d
            if kind == "random":
                self.index = random_channels(self.n_channels, d, seed)
        else:
            raise PadimError(f"unknown reduction {kind!r}; choose random, pca or none")

    @property
    def needs_fit(self) -> bool:
        return self.kind == "pca" and self.projection is None

    def __call__(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[(B, C_i, H_i, W_i)] -> (B, d, H_1, W_1), channels-last in memory for "random"."""
        if self.kind == "random":
            picked, start = [], 0
            index = self.index.to(features[0].device)
            for f, c in zip(features, self.channels):
                local = index[(index >= start) & (index < start + c)] - start
                # gathered along the last axis of the (B, H, W, C) view: the result is channels-last,
                # so every patch's d-vector is contiguous for the Gaussian fit and the distances
                picked.append(f.movedim(1, -1).index_select(-1, local).movedim(-1, 1))  # (B, k_i, H_i, W_i)
                start += c
            return embed(picked)
        emb = embed(features)  # (B, C, H, W)
        if self.kind == "none":
            return emb
        if self.projection is None:
            raise PadimError("PCA reduction used before it was fitted")
        w = self.projection.to(device=emb.device, dtype=emb.dtype)  # (C, d)
        return torch.einsum("bchw,cd->bdhw", emb, w)

    def fit_pca(self, embeddings, merge=None, device="cpu") -> None:
        """Fit the PCA directions from an iterable of full (B, C, H, W) embeddings.

        Accumulates the C x C scatter matrix of all training patch vectors in
        float64 (shifted by the first batch's mean for stability), then keeps
        the eigenvectors of the d largest eigenvalues. `merge`, if given, is
        called on the scatter as one-position `GaussianStats` (count, mean
        (1, C), centred scatter (1, C, C)) before the eigen-decomposition:
        `padim_utils.distributed.all_reduce_stats` sums the ranks' shares
        there. `device` holds the scatter when `embeddings` is empty.
        """
        n, shift, s1, s2 = 0, None, None, None
        for emb in embeddings:
            x = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).double()  # (B*H*W, C)
            if shift is None:
                shift = x.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            x = x - shift
            n += x.shape[0]
            s1 += x.sum(0)
            s2.addmm_(x.T, x)
        stats = GaussianStats(1, self.n_channels, s2.device if n else device)
        if n:
            m = s1 / n  # (C,)
            stats.n = n
            stats.mean[0] = shift + m
            stats.m2[0] = s2 - n * torch.outer(m, m)  # (C, C) centred scatter
        if merge is not None:
            merge(stats)
        if stats.n < 2:
            raise PadimError("PCA needs at least two training patches")
        cov = stats.m2[0] / (stats.n - 1)  # (C, C)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        w = evecs[:, -self.d :].flip(1)  # (C, d), largest first
        # Fix each direction's sign (largest |component| positive) so fits are reproducible.
        sign = torch.sign(w.gather(0, w.abs().argmax(0, keepdim=True)))
        self.projection = (w * sign).float().contiguous()

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        if self.index is not None:
            out["channel_index"] = self.index.contiguous()
        if self.projection is not None:
            out["pca_projection"] = self.projection.contiguous()
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.kind == "random":
            self.index = tensors["channel_index"].long()
        elif self.kind == "pca":
            self.projection = tensors["pca_projection"].float()
