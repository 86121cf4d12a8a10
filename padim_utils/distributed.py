"""Fitting on several GPUs (or CPU processes) with torchrun: shard the images, sum the statistics.

    torchrun --nproc_per_node 4 -m padim_utils.cli fit --root DIR --category bottle --out bottle.safetensors

PaDiM's fit is a sum over the training images: each process (a *rank*) fits
the per-position Gaussians of its own share of the images (items rank,
rank + K, rank + 2K, ... of K ranks), then the K partial fits are merged
with Chan's rule for K parts, in all-reduces that leave every rank with the
full fit:

    n = sum_k n_k,    mu = sum_k n_k mu_k / n,
    M2 = sum_k [ M2_k + n_k (mu_k - mu)(mu_k - mu)^T ]

which is what `GaussianStats.merge` gives folding the parts in one by one,
so the model equals the single-process fit up to float64 rounding. The PCA
reduction's first pass (a C x C scatter) is merged the same way, so every
rank projects with the same directions.

Before any image is read, the ranks compare a digest of their config and of
their training files (`agree`): ranks started with other options or reading
other data are refused, in one line on every rank, instead of being merged.

Backend: NCCL with one GPU per rank (cuda:LOCAL_RANK), gloo on CPUs. A rank
whose share is empty (fewer images than ranks) still joins every all-reduce
with n_k = 0. Collectives time out after PADIM_DIST_TIMEOUT seconds (default
1800), so a failed rank never leaves the others waiting forever; a rank waiting
for the others (to start, or in a collective) still stops at once on Ctrl-C
or SIGTERM: the waits are polled from Python, where signals are handled.

Outside torchrun (WORLD_SIZE unset or 1) `process_group` does nothing and
`active()` is False: the ordinary single-process fit.

>>> with process_group("cpu") as device:          # outside torchrun: one process, nothing to set up
...     (device, active(), rank(), world_size(), is_main())
('cpu', False, 0, 1, True)
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import threading
import time

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from .config import PadimConfig
from .errors import PadimError
from .gaussian import GaussianStats

TIMEOUT_ENV = "PADIM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------------------- who am I
def launched() -> bool:
    """True in a process that torchrun started as one of several (WORLD_SIZE > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def active() -> bool:
    """True when a process group of more than one rank is running: `Padim.fit` then shards."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else _env_int("RANK", 0)


def world_size() -> int:
    return dist.get_world_size() if active() else max(1, _env_int("WORLD_SIZE", 1))


def local_world_size() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE); 1 outside a process group."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1)) if active() else 1


def is_main() -> bool:
    """Rank 0 prints, shows progress bars and writes files; the others only compute."""
    return rank() == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise PadimError(f"{name}={value!r} is not an integer (it is set by torchrun)") from None


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks: $PADIM_DIST_TIMEOUT seconds, default 30 min."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise PadimError(f"{TIMEOUT_ENV}={value!r} is not a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def rank_device(device: str = "auto") -> str:
    """This rank's device: cuda:LOCAL_RANK where `device` means a GPU ("cuda", or "auto" with one), else "cpu"."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise PadimError("device='cuda' was asked for but no CUDA GPU is visible; use --device cpu")
    local, gpus = _env_int("LOCAL_RANK", 0), torch.cuda.device_count()
    if local >= gpus:
        raise PadimError(f"torchrun started more processes on this machine than there are GPUs ({gpus}): "
                         f"use --nproc_per_node {gpus}, or --device cpu")
    return f"cuda:{local}"


# ---------------------------------------------------------------------------- the process group
@contextlib.contextmanager
def process_group(device: str = "auto"):
    """Under torchrun: start the process group, yield this rank's device name, destroy the group at the end.

    Outside torchrun: yield `device` unchanged and do nothing else.
    """
    if not launched():
        yield device
        return
    if not dist.is_available():
        raise PadimError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise PadimError(f"WORLD_SIZE is set but {', '.join(missing)} not: start the processes with torchrun")
    name = rank_device(device)
    cuda = name.startswith("cuda")
    if cuda:
        torch.cuda.set_device(name)

    def start():
        if cuda:
            torch.cuda.set_device(name)  # this thread's current device too
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout(),
                                **({"device_id": torch.device(name)} if cuda else {}))

    try:
        _interruptible(start)  # rank 0 waits here for every other rank to start
    except (RuntimeError, ValueError) as e:
        raise PadimError(f"cannot start the torch.distributed process group: {_one_line(e)}") from None
    try:
        yield name
    except KeyboardInterrupt:  # a collective may still be pending: destroying the group would wait for it
        raise
    except BaseException:
        _destroy()
        raise
    else:
        _destroy()


def _destroy() -> None:
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def _interruptible(fn):
    """fn() in a helper thread, this thread waiting in short steps: Ctrl-C and SIGTERM, which Python
    handles only between bytecodes of the main thread, then stop the wait at once (the helper, blocked
    in C++, is abandoned) instead of after PADIM_DIST_TIMEOUT. fn's exception is raised here."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = e

    helper = threading.Thread(target=run, name="padim-distributed-wait", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(0.05)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@contextlib.contextmanager
def main_writes():
    """Wrap what only rank 0 does (writing the model): the others wait at a barrier, released
    also when rank 0 fails (its error is then reported by rank 0 alone)."""
    try:
        yield is_main()
    finally:
        if active():
            _collective(dist.barrier)


def _collective(fn, *args, **kwargs) -> None:
    """Run a torch.distributed collective and wait for it in short polls, so that Ctrl-C and SIGTERM
    stop the wait at once; another rank's crash or a timeout becomes one PadimError line."""
    try:
        work = fn(*args, async_op=True, **kwargs)
        pause = 0.0005
        while not work.is_completed():
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        work.wait()
    except RuntimeError as e:  # gloo raises plain RuntimeErrors, NCCL DistBackendError (a subclass)
        raise PadimError(f"the exchange with the other processes failed ({_one_line(e)}); another rank's "
                         "error is the likely cause") from None


def _one_line(e: BaseException) -> str:
    """The first sentence of an error, without gloo's "[.../pair.cc:561] " source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(e).split()))
    return text.split(". ")[0].rstrip(".") or type(e).__name__


# ---------------------------------------------------------------------------- the ranks agree
def _digest(text: str) -> int:
    """A signed 64-bit integer digest of `text` (sha256's first 8 bytes), for an int64 tensor."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "little",
                          signed=True)


def files_listing(paths, root=None) -> str:
    """The files' paths relative to `root` (default: their common folder) and their sizes (-1: not a file),
    one a line: the same for the same data, wherever each machine keeps it.

    >>> files_listing(["/no/such/a.png", "/no/such/b/c.png"])
    'a.png -1\\nb/c.png -1'
    >>> files_listing(["/data/bottle/train/0.png"], root="/data")
    'bottle/train/0.png -1'
    """
    paths = [str(p) for p in paths]
    base = str(root) if root is not None else (
        os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else "")
    lines = []
    for p in paths:
        try:
            size = os.stat(p).st_size if os.path.isfile(p) else -1
        except OSError:
            size = -1
        lines.append(f"{os.path.relpath(p, base) if base else p} {size}")
    return "\n".join(lines)


@torch.no_grad()
def agree(config: PadimConfig, dataset, device) -> None:
    """Every rank must fit with the same config on the same training images, or the merge mixes two fits:
    the ranks exchange a digest of each config field and of their training files (`files_listing`) with
    their number, and each rank raises the same one-line PadimError naming what differs. No-op outside a
    process group."""
    if not active():
        return
    fields = config.to_dict()
    paths = getattr(dataset, "paths", None)
    listing = files_listing(paths, getattr(dataset, "root", None)) if paths is not None else repr(dataset)
    mine = torch.tensor([_digest(listing), len(dataset), *(_digest(repr(fields[k])) for k in sorted(fields))],
                        dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world_size())]
    _collective(dist.all_gather, every, mine)
    every = [t.tolist() for t in every]
    for r, theirs in enumerate(every[1:], 1):
        names = [k for k, a, b in zip(sorted(fields), every[0][2:], theirs[2:]) if a != b]
        if names:
            raise PadimError(f"the ranks were started with different options: rank {r}'s "
                             f"{', '.join(names)} differ{'s' if len(names) == 1 else ''} from rank 0's; start "
                             "every rank with the same options")
        if theirs[:2] != every[0][:2]:
            raise PadimError(f"the ranks read different training data: rank {r} has {theirs[1]} images, rank 0 "
                             f"{every[0][1]}" + (" (other names or sizes)" if theirs[1] == every[0][1] else "")
                             + "; every rank must see the same dataset")


# ---------------------------------------------------------------------------- the data
class Shard(Subset):
    """Items rank, rank + K, rank + 2K, ... of a dataset (none when it has fewer items than ranks); a Subset,
    which `Padim`'s geometry check looks through to the dataset."""


def shard(dataset) -> Shard:
    """This rank's share of `dataset`."""
    if not isinstance(dataset, Dataset):
        raise PadimError(f"under torchrun, fit shards a dataset, not a {type(dataset).__name__}; "
                         "fit a FeatureCache in a single process")
    return Shard(dataset, range(rank(), len(dataset), world_size()))


# ---------------------------------------------------------------------------- the statistics
@torch.no_grad()
def agree_grid(grid: tuple[int, int] | None, device) -> tuple[int, int]:
    """The patch grid (h, w) on every rank; a rank that saw no image passes None and learns it."""
    t = torch.tensor(grid or (0, 0), dtype=torch.int64, device=device)  # (2,)
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    h, w = t.tolist()
    return h, w


@torch.no_grad()
def all_reduce_stats(stats: GaussianStats) -> GaussianStats:
    """Merge every rank's partial fit into the full fit, in place on every rank; returns `stats`.

    Three all-reduces (sums): n, n_k mu_k, then M2_k + n_k (mu_k - mu)(mu_k - mu)^T chunk by chunk
    of positions, in place in the scatter's chunks, so memory stays at the buffer plus one (P, d) mean.
    The tensors must be on the backend's device (cuda for NCCL). No-op outside a process group.
    """
    if not active():
        return stats
    if stats.m2_chunks is None:
        raise PadimError("these Gaussian statistics were already finalized")
    device, n_k = stats.mean.device, stats.n
    n = torch.tensor([n_k], dtype=torch.int64, device=device)
    _collective(dist.all_reduce, n)
    n = int(n.item())
    if n == 0:
        return stats
    mu = stats.mean * n_k  # (P, d)
    _collective(dist.all_reduce, mu)
    mu /= n  # the global mean
    for s, m2 in zip(range(0, stats.P, stats.chunk), stats.m2_chunks):  # (p, d, d) each: summed in place
        if n_k > 0:
            delta = stats.mean[s : s + stats.chunk] - mu[s : s + stats.chunk]  # (p, d)
            m2.baddbmm_(delta[:, :, None], delta[:, None, :], alpha=n_k)
        _collective(dist.all_reduce, m2)
    stats.mean.copy_(mu)
    stats.n = n
    return stats
