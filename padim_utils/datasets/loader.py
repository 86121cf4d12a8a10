"""Batches of decoded images for fit and predict, from worker processes that outlive one pass.

On a GPU the pipeline is bound by decoding (PNG inflate and resize on the CPU), so `BatchLoader`
keeps one pool of worker processes for the model's whole life: the PCA pass, the fit and every
predict reuse it, where a plain `DataLoader` starts new workers for every pass. Each pass sends
its dataset to the workers once (pickled into a private temporary folder) and then only
(file, indices) keys; every worker decodes whole batches and collates them itself.

    loader = BatchLoader(batch_size=32, workers=16, pin_memory=True)
    for batch in loader(train_set):       # dicts from `images.collate`: image (B, 3, S, S) uint8, ...
        ...
    for batch in loader(test_set):        # the same 16 processes
        ...

With `workers=0` batches are decoded in this process (the CPU path, where workers only compete
with the backbone for the same cores). A `PadimError` raised in a worker (a corrupt image, a
missing mask) arrives as the same one-line `PadimError` here, never as a worker traceback.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import tempfile
import weakref
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import collate
from ..errors import PadimError


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all cores where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class BatchLoader:
    """Ordered batches of any dataset, decoded by `workers` persistent processes (0: in this one)."""

    def __init__(self, batch_size: int, workers: int = 0, pin_memory: bool = False):
        self.batch_size, self.workers, self.pin_memory = batch_size, workers, pin_memory
        self._plan = _Plan()
        self._pool: DataLoader | None = None  # started on the first pass that needs it
        self._dir: Path | None = None
        self._passes = itertools.count()

    def __call__(self, dataset: Dataset) -> "_Pass":
        return _Pass(self, dataset)

    def _batches(self, dataset: Dataset):
        if self.workers == 0:
            yield from DataLoader(dataset, batch_size=self.batch_size, shuffle=False, collate_fn=collate)
            return
        n = len(dataset)
        ranges = [range(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        try:
            payload = pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a dataset that cannot travel (a lambda inside, an open file): workers of its own
            pool = DataLoader(_Dispatch(dataset), batch_size=None, sampler=[(None, r) for r in ranges],
                              collate_fn=_same, num_workers=self.workers, pin_memory=self.pin_memory)
        else:
            file = str(self._write(payload))
            self._plan.keys = [(file, r) for r in ranges]
            pool = self._start()
        try:
            for batch in pool:
                if isinstance(batch, _Failure):
                    raise PadimError(batch.message)
                yield batch
        finally:
            self._plan.keys = []

    def _start(self) -> DataLoader:
        if self._pool is None:
            self._pool = DataLoader(_Dispatch(), batch_size=None, sampler=self._plan, collate_fn=_same,
                                    num_workers=self.workers, persistent_workers=True, pin_memory=self.pin_memory,
                                    prefetch_factor=2)
        return self._pool

    def _write(self, payload: bytes) -> Path:
        """The dataset of this pass as a file the workers read once; the files of older passes go."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="padim-loader-"))
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        k = next(self._passes)
        old = self._dir / f"{k - 2}.pkl"  # two back: no worker can still be reading it
        old.unlink(missing_ok=True)
        file = self._dir / f"{k}.pkl"
        file.write_bytes(payload)
        return file

    def close(self) -> None:
        """Stop the workers and remove the temporary folder (also done when the loader is collected)."""
        self._pool = None  # the DataLoader's iterator shuts its workers down when collected
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _Pass:
    """One pass over a dataset: iterable once per `iter`, with a length for progress bars."""

    def __init__(self, loader: BatchLoader, dataset: Dataset):
        self.loader, self.dataset = loader, dataset

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.loader.batch_size)

    def __iter__(self):
        return self.loader._batches(self.dataset)


class _Plan(Sampler):
    """The keys of the current pass; set by `BatchLoader` before each pass (the workers stay)."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


class _Failure:
    """A PadimError met in a worker, sent back as a value so that it arrives as one line."""

    def __init__(self, message: str):
        self.message = message


class _Dispatch(Dataset):
    """In a worker: (file, indices) -> the collated batch of the dataset pickled in `file` (read once
    per pass), or of the dataset it was built with when `file` is None."""

    def __init__(self, dataset: Dataset | None = None):
        self.file, self.dataset = None, dataset

    def __getitem__(self, key):
        file, indices = key
        try:
            if file is not None and file != self.file:
                self.dataset, self.file = pickle.loads(Path(file).read_bytes()), file
            return collate([self.dataset[i] for i in indices])
        except PadimError as e:
            return _Failure(str(e))


def _same(batch):
    return batch


__all__ = ["BatchLoader", "available_cores"]
