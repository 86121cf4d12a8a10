"""What the metrics accept: numpy arrays or torch tensors, checked and converted, and the few array
operations each backend gives the pixel metrics (`metrics` computes; this module only vets its inputs).

Image inputs are labels (N,) (bool or 0/1) and finite scores (N,); pixel inputs are masks and maps
(N, H, W). Scores keep float32/float64; float16 and bfloat16 widen to float32; integers keep their exact
values (int64 scores near 2**62 would tie as float64), booleans become int64.
CUDA tensors stay on their device (`TorchOps`); everything else goes through numpy (`NumpyOps`), whose
SIMD sort is about ten times faster than torch's on the CPU.

>>> labels, scores = image_inputs([0, 1, 1], [0.2, 0.9, 0.4])
>>> labels.tolist(), scores.dtype.name
([False, True, True], 'float64')
>>> image_inputs([0, 2], [0.1, 0.2])
Traceback (most recent call last):
ValueError: labels must be boolean or 0/1, got values [0, 2]...
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["NumpyOps", "TorchOps", "is_tensor", "as_numpy", "scores_dtype", "as_bool", "image_inputs", "check_limit",
           "pixel_inputs", "CPU_TENSORS_VIA_NUMPY"]

# CPU tensors go through numpy (faster sort). Tests set this to False to run
# the torch code path on CPU tensors.
CPU_TENSORS_VIA_NUMPY = True


# ---------------------------------------------------------------------------
# numpy / torch operations used by the pixel metrics
# ---------------------------------------------------------------------------


class NumpyOps:
    """The few array operations the pixel metrics need, for numpy."""

    def sort(self, a):
        return np.sort(a)

    def argsort(self, a):
        return np.argsort(a)

    def searchsorted(self, seq, values, right=False):
        return np.searchsorted(seq, values, side="right" if right else "left")

    def runs(self, a):
        """Runs of equal values of sorted 1-D ``a``: ``(values, starts, ends)``."""
        new = np.empty(a.shape[0], dtype=bool)
        new[:1] = True
        np.not_equal(a[1:], a[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], a.shape[0])
        return a[starts], starts, ends

    def suffix_sum(self, w):
        """``s[i] = sum(w[i:])`` for ``i = 0..len(w)``, summed from the end."""
        s = np.zeros(w.shape[0] + 1, dtype=np.float64)
        s[:-1] = np.cumsum(w[::-1], dtype=np.float64)[::-1]
        return s

    def from_numpy(self, a):
        return a

    def to_numpy(self, a):
        return np.asarray(a)


class TorchOps:
    """The same operations with torch, on the device of the inputs."""

    def __init__(self, device):
        self.torch = sys.modules["torch"]
        self.device = device

    def sort(self, a):
        return self.torch.sort(a).values

    def argsort(self, a):
        return self.torch.argsort(a)

    def searchsorted(self, seq, values, right=False):
        return self.torch.searchsorted(seq, values, right=right)

    def runs(self, a):
        values, counts = self.torch.unique_consecutive(a, return_counts=True)
        ends = self.torch.cumsum(counts, 0)
        return values, ends - counts, ends

    def suffix_sum(self, w):
        t = self.torch
        s = t.zeros(w.shape[0] + 1, dtype=t.float64, device=w.device)
        s[:-1] = t.flip(t.cumsum(t.flip(w.to(t.float64), (0,)), 0), (0,))
        return s

    def from_numpy(self, a):
        return self.torch.from_numpy(a).to(self.device)

    def to_numpy(self, a):
        return a.detach().cpu().numpy()


# ---------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------


def is_tensor(x):
    torch = sys.modules.get("torch")  # never import torch just to check
    return torch is not None and isinstance(x, torch.Tensor)


def _tensor_to_numpy(x):
    x = x.detach().cpu()
    if x.dtype == sys.modules["torch"].bfloat16:  # numpy has no bfloat16
        x = x.float()
    return x.numpy()


def as_numpy(x, name):
    """Convert to a numpy array with a real numeric dtype."""
    a = _tensor_to_numpy(x) if is_tensor(x) else np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers or booleans, got dtype {a.dtype}")
    return a


def scores_dtype(a):
    """Scores keep float32/float64 and integer dtypes (ranked exactly); float16 widens to float32, bool to int64.

    >>> scores_dtype(np.array([2**62, 2**62 + 1])).tolist()          # distinct, as float64 they would tie
    [4611686018427387904, 4611686018427387905]
    """
    if a.dtype == np.float16:
        return a.astype(np.float32)
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    return a


def as_bool(a, name):
    """Bool array from bool or 0/1 numbers (numpy)."""
    if a.dtype == bool:
        return a
    if not ((a == 0) | (a == 1)).all():
        hint = "; for masks stored as 0/255 pass masks > 0" if name == "masks" else ""
        raise ValueError(f"{name} must be boolean or 0/1, got values {np.unique(a)[:5].tolist()}...{hint}")
    return a.astype(bool)


def image_inputs(labels, scores):
    """Check image labels ``(N,)`` and scores ``(N,)``; return (bool, float) numpy."""
    labels = as_numpy(labels, "labels")
    scores = as_numpy(scores, "scores")
    for name, a in (("labels", labels), ("scores", scores)):
        if a.ndim != 1 or a.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array (N,), got shape {a.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    scores = scores_dtype(scores)
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return as_bool(labels, "labels"), scores


def check_limit(fpr_limit):
    limit = float(fpr_limit)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit!r}")
    return limit


def pixel_inputs(masks, maps):
    """Check masks and maps ``(N, H, W)``; return ``(ops, masks, maps, masks_np)``.

    ``masks``/``maps`` come back as arrays of the chosen backend (bool and
    float32/float64); ``masks_np`` is the same masks as a numpy bool array
    for the connected-component labelling.
    """
    device = None  # torch path only for CUDA tensors (and, in tests, CPU tensors)
    for x in (maps, masks):
        on_cpu = is_tensor(x) and x.device.type == "cpu"
        if is_tensor(x) and (x.device.type == "cuda" or (on_cpu and not CPU_TENSORS_VIA_NUMPY)):
            device = x.device
            break
    if device is None:  # numpy path
        ops = NumpyOps()
        masks, maps = as_numpy(masks, "masks"), as_numpy(maps, "maps")
    else:  # torch path on `device`
        torch = sys.modules["torch"]
        ops = TorchOps(device)
        masks, maps = (
            x.detach().to(device) if is_tensor(x) else torch.as_tensor(np.asarray(x), device=device)
            for x in (masks, maps)
        )
        for name, x in (("masks", masks), ("maps", maps)):
            if x.is_complex() or x.is_quantized:
                raise ValueError(f"{name} must hold real numbers or booleans, got dtype {x.dtype}")

    for name, x in (("masks", masks), ("maps", maps)):
        if x.ndim != 3 or min(x.shape) == 0:
            raise ValueError(
                f"{name} must have shape (N, H, W) with N, H, W > 0, got {tuple(x.shape)}"
                " (squeeze a channel axis of size 1 first)"
            )
    if tuple(masks.shape) != tuple(maps.shape):
        raise ValueError(f"masks {tuple(masks.shape)} and maps {tuple(maps.shape)} differ in shape")

    if device is None:
        maps = scores_dtype(maps)
        masks = as_bool(masks, "masks")
        masks_np = masks
    else:
        if not maps.is_floating_point():
            maps = maps.long()  # integers ranked exactly, as on the numpy path
        elif maps.dtype not in (torch.float32, torch.float64):
            maps = maps.float()  # float16, bfloat16, ... widen exactly
        if masks.dtype != torch.bool:
            if not ((masks == 0) | (masks == 1)).all():
                raise ValueError("masks must be boolean or 0/1; for masks stored as 0/255 pass masks > 0")
            masks = masks != 0
        masks_np = masks.cpu().numpy()
    return ops, masks, maps, masks_np
