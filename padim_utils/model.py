"""`Padim`: the whole method behind three calls, fit / predict / save.

    model = Padim(preset("offline_lite0")).fit(train_set)
    maps, scores = model.predict(images)          # images: uint8 (B, 3, S, S)
    model.save("bottle.safetensors"); Padim.load("bottle.safetensors")

Pipeline (one GPU pass per batch, nothing kept but the Gaussian statistics):
uint8 images -> normalise on the device -> backbone layers -> reduction to d
channels -> streaming Gaussian per position -> precision via Cholesky.
Under torchrun (a torch.distributed process group) `fit` takes this rank's
share of the images and sums the statistics across ranks (`distributed`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import ConcatDataset, Dataset, Subset

from . import __version__, distributed
from .backbones import embed, feature_extractor, prefers_channels_last
from .config import Geometry, PadimConfig, check_device
from .datasets.images import resize_crop_images
from .datasets.loader import BatchLoader, available_cores
from .errors import PadimError
from .files import atomic_path, read_safetensors
from .gaussian import GaussianStats, fit_bytes
from .measure import available_memory_bytes, timed
from .progress import progress_bar
from .reduction import Reducer
from .scoring import anomaly_maps, image_scores, mahalanobis

FORMAT_VERSION = "2"
#: Model formats `Padim.load` reads: "1" files (before the digest) are checked by their structure alone.
READABLE_FORMATS = ("1", FORMAT_VERSION)
#: The metadata field holding the sha256 of everything else in the file (`file_digest`).
DIGEST_KEY = "sha256"


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when a GPU is visible, else cpu; "cpu", "cuda" or "cuda:N" (a torchrun rank's GPU) as
    named; any other name, or a GPU that is not there, is one PadimError line."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cuda:\d+", name):
        check_device(name)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PadimError(f"device={name!r} was asked for but no CUDA GPU is visible; use device='cpu' or 'auto'")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise PadimError(f"device={name!r} was asked for but this machine has {torch.cuda.device_count()} "
                             "CUDA GPU(s)")
    return torch.device(name)


class Padim:
    """PaDiM anomaly detector (Defard et al., 2020)."""

    def __init__(self, config: PadimConfig | None = None, device: str | None = None, compile: bool = False,
                 resize_on_device: bool = False, workers: int | None = None):
        """`compile=True` runs the backbone through `torch.compile`: a one-off compilation (about 25 s for
        Lite0 on a 2-core CPU), then a forward pass 1.6x faster for Lite0 there (no gain for ResNet18);
        worth it for EfficientNets and thousands of images. Results equal the eager ones to float rounding.

        `resize_on_device=True`: the loader only decodes, and the images are resized and cropped on the
        device (`datasets.images.resize_crop_images`, within 1 grey level of PIL's resize); every image of a batch
        must then have the same size, as in MVTec AD's categories.

        `workers`: processes decoding images, kept for the model's life; None takes one per core on a
        GPU (which waits for decoding) and 0 on the CPU (decoding in this process, between batches)."""
        self.config = config or PadimConfig()
        self.device = resolve_device(device or self.config.device)
        self.resize_on_device = resize_on_device
        self.extractor = feature_extractor(self.config.backbone, self.config.layers, self.config.pretrained)
        full = torch.float64 if self.config.dtype == "float64" else torch.float32  # half types: autocast
        self.extractor = self.extractor.to(self.device, dtype=full)
        self.extractor.use_channels_last(prefers_channels_last(self.config.backbone, self.device))
        self._network = torch.compile(self.extractor) if compile else self.extractor
        self.reducer = Reducer(self.config.reduction, self.extractor.channels, self.config.d, self.config.seed)
        cuda = self.device.type == "cuda"  # a GPU waits for decoding: every core decodes, pinned for the copy
        self.workers = (available_cores() if cuda else 0) if workers is None else workers
        self._loader = BatchLoader(self.config.batch_size, workers=self.workers, pin_memory=cuda)
        self.mean: torch.Tensor | None = None  # (P, d)
        self.precision: torch.Tensor | None = None  # (P, d, d)
        self.grid: tuple[int, int] | None = None  # (h, w) of the patch grid
        self.n_train = 0

    #: settings that act after the backbone: a model can take new values of these without a new network
    AFTER_BACKBONE = frozenset({"d", "reduction", "seed", "eps", "sigma", "position_chunk", "batch_size"})

    def with_settings(self, **changes) -> "Padim":
        """An unfitted model with `config.replace(**changes)` that shares this one's frozen backbone (and its
        decoding workers): for sweeps over settings that act after the backbone (`AFTER_BACKBONE`).

        >>> from padim_utils.config import preset
        >>> model = Padim(preset("quick"), device="cpu")
        >>> other = model.with_settings(d=8, reduction="pca")
        >>> (model.d, other.d), other.extractor is model.extractor, other.config.backbone
        ((32, 8), True, 'efficientnet_lite0')
        >>> model.with_settings(backbone="resnet18")
        Traceback (most recent call last):
        padim_utils.errors.PadimError: with_settings changes only batch_size, d, ...; backbone need a new Padim
        """
        late = set(changes) - self.AFTER_BACKBONE
        if late:
            raise PadimError(f"with_settings changes only {', '.join(sorted(self.AFTER_BACKBONE))}; "
                             f"{', '.join(sorted(late))} need a new Padim")
        model = copy.copy(self)
        model.config = self.config.replace(**changes)
        model.reducer = Reducer(model.config.reduction, self.extractor.channels, model.config.d, model.config.seed)
        model.mean = model.precision = model.grid = None
        model.n_train = 0
        return model

    # ------------------------------------------------------------------ features
    @property
    def d(self) -> int:
        return self.reducer.d

    @property
    def config_grid(self) -> tuple[int, int]:
        """The patch grid (h, w) the config's images give: out_size / the first layer's stride, rounded up
        (every backbone's padding keeps a partial patch)."""
        side = -(-self.config.out_size // self.extractor.strides[0])
        return side, side

    def forward_layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, 3, S, S) on any device -> the backbone's layer outputs [(B, C_i, h_i, w_i)], float32."""
        images = images.to(self.device, non_blocking=True)  # (B, 3, H, W) uint8
        if tuple(images.shape[-2:]) != (self.config.out_size,) * 2:
            if not self.resize_on_device:
                raise PadimError(f"images of {images.shape[-2]}x{images.shape[-1]} px (height x width) reach a model "
                                 f"for {self.config.out_size}x{self.config.out_size} px images "
                                 f"({self.config.geometry!r}): resize them as the fit did, "
                                 "resize_crop_images(images, **model.config.geometry.as_kwargs())")
            images = resize_crop_images(images, **self.config.geometry.as_kwargs())
        x = self.extractor.normalize(images)  # (B, 3, S, S) float32
        b = x.shape[0]
        if self._network is not self.extractor and b < self.config.batch_size:
            # a compiled network keeps one batch shape: pad the last, short batch (no recompilation)
            x = torch.cat([x, x.new_zeros(self.config.batch_size - b, *x.shape[1:])])
        dtype = self.config.torch_dtype
        with torch.inference_mode():
            if dtype in (torch.float16, torch.bfloat16):
                with torch.autocast(self.device.type, dtype=dtype):
                    feats = self._network(x)
            else:
                feats = self._network(x.to(dtype))
        return [f[:b].float() for f in feats]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> reduced embeddings (B, d, h, w) on self.device."""
        return self.reducer(self.forward_layers(images))

    def layer_batches(self, data, progress: bool = False, desc: str = "layers"):
        """(layer outputs on self.device, batch dict) per batch, from a dataset or a FeatureCache."""
        if hasattr(data, "batches") and hasattr(data, "check_config"):  # a FeatureCache: layer outputs already
            data.check_config(self.config)
            for layers, meta in progress_bar(data.batches(self.config.batch_size), desc, progress,
                                     total=-(-len(data) // self.config.batch_size)):
                yield [f.to(self.device) for f in layers], meta
            return
        self._check_geometry(data)
        for batch in progress_bar(self.loader(data), desc, progress):
            yield self.forward_layers(batch["image"]), batch

    def loader(self, data: Dataset):
        """Batches of uint8 images (and labels, masks, paths) in order, as this device wants them:
        on a GPU decoded by one worker process per core, kept for the model's life (`loader.BatchLoader`),
        into pinned memory; on the CPU in this process. With `resize_on_device`, images come at their
        decoded size."""
        if self.resize_on_device and getattr(data, "resize_on_load", False):
            data = copy.copy(data)
            data.resize_on_load = False
        return self._loader(data)

    def _check_geometry(self, dataset: Dataset) -> None:
        """The dataset's whole geometry (resize, crop, interpolation; through Subsets and ConcatDatasets) must
        give the config's pixels; images of datasets that name none are checked by size (`forward_layers`)."""
        for geometry in _geometries(dataset):
            if not geometry.same_pixels(self.config.geometry):
                raise PadimError(f"the dataset's geometry {geometry!r} differs from the model config's "
                                 f"{self.config.geometry!r}: build the dataset with geometry=config.geometry")

    # ------------------------------------------------------------------ fit
    def fit(self, data, progress: bool = True) -> "Padim":
        """Fit the per-position Gaussians on normal images: a dataset (items with 'image') or a FeatureCache."""
        if len(data) < 2:
            raise PadimError(f"fitting needs at least 2 training images, got {len(data)}")
        self.check_memory()
        sharded = distributed.active()  # under torchrun: fit this rank's share, sum the statistics
        if sharded:
            data = distributed.shard(data)
        if self.reducer.kind == "pca":  # a first pass for the PCA directions
            self.reducer.fit_pca((embed(layers) for layers, _ in self.layer_batches(data, progress, "PCA pass")),
                                 merge=distributed.all_reduce_stats if sharded else None, device=self.device)
        stats, pending = None, []
        for layers, _ in self.layer_batches(data, progress, f"fit {self.config.backbone}"):
            emb = self.reducer(layers)  # (B, d, h, w)
            if stats is None:
                self.grid = tuple(emb.shape[-2:])
                stats = self._new_stats()
                per_update = self._images_per_update()
            pending.append(emb)
            if sum(e.shape[0] for e in pending) >= per_update:  # one update for many images: fewer passes over M2
                stats.update(torch.cat(pending) if len(pending) > 1 else emb)
                pending = []
        if pending:
            stats.update(torch.cat(pending))
        if sharded:  # every rank joins, also one whose share was empty
            self.grid = distributed.agree_grid(self.grid, self.device)
            if stats is None:
                stats = self._new_stats()
            distributed.all_reduce_stats(stats)
        store = torch.float64 if self.config.dtype == "float64" else torch.float32
        mean, precision = stats.finalize(self.config.eps, dtype=store)
        if not (torch.isfinite(mean).all() and torch.isfinite(precision).all()):
            raise PadimError(f"the fit gave NaN or infinite Gaussian statistics (dtype={self.config.dtype}: "
                             "the features overflowed?); nothing is kept, try dtype='float32'")
        self.mean, self.precision = mean, precision
        self.n_train = stats.n
        return self

    @property
    def stored_dtype(self) -> torch.dtype:
        """The dtype `fit` keeps the mean and precision in: float64 for dtype="float64", else float32."""
        return torch.float64 if self.config.dtype == "float64" else torch.float32

    def check_memory(self) -> int:
        """Refuse, before the backbone runs, a fit whose statistics would not fit in the device's memory
        (`gaussian.fit_bytes`: the float64 scatter and the precision, positions x d^2 each, on a grid of
        out_size / the first layer's stride per side); returns the bytes needed. Under torchrun, CPU
        processes on one machine each hold the whole statistics."""
        side = -(-self.config.out_size // self.extractor.strides[0])  # the patch grid's side, rounded up
        precision = self.stored_dtype
        each = fit_bytes(side * side, self.d, precision)
        copies = distributed.local_world_size() if self.device.type == "cpu" else 1
        available = available_memory_bytes(self.device)
        if available is not None and each * copies > available:
            times = f" in each of {copies} processes" if copies > 1 else ""
            raise PadimError(f"the fit needs about {each * copies / 1e9:.1f} GB of memory for its Gaussian "
                             f"statistics ({side}x{side} positions, d={self.d}: a float64 scatter and a "
                             f"{str(precision).removeprefix('torch.')} precision of d^2 numbers per position{times}) "
                             f"but {self.device} has {available / 1e9:.1f} GB available: lower --image-size or "
                             "--crop, or --d (the need grows with the square of each)")
        return each * copies

    def _new_stats(self) -> GaussianStats:
        return GaussianStats(self.grid[0] * self.grid[1], self.d, self.device, chunk=self.config.position_chunk,
                             dtype=self.config.stats_dtype)

    def _images_per_update(self) -> int:
        """Images per Gaussian update: one product over many images reads and writes M2 once for all
        of them. On a GPU 256 (its float64 products run 64 x 64 tiles, which 32 images leave idle), as
        far as 2 GiB of buffered float32 embeddings allow; on the CPU 128 within 512 MiB (10-20 %
        faster than one batch of 32 on 2 cores)."""
        most, budget = (256, 2**31) if self.device.type == "cuda" else (128, 2**29)
        per_image = self.grid[0] * self.grid[1] * self.d * 4  # bytes of one image's float32 embedding
        return max(self.config.batch_size, min(most, budget // per_image))

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if self.precision is None:
            raise PadimError("the model is not fitted: call fit() or Padim.load() first")

    def _score_layers(self, layers: list[torch.Tensor], out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.reducer(layers)  # (B, d, h, w)
        if tuple(emb.shape[-2:]) != self.grid:
            raise PadimError(f"images give a {tuple(emb.shape[-2:])} patch grid but the model was fitted on "
                             f"{self.grid}: use {self.config.out_size}px images")
        dist = mahalanobis(emb, self.mean, self.precision, chunk=self.config.position_chunk)  # (B, h, w)
        maps = anomaly_maps(dist, out_size, self.config.sigma, self.config.interpolation)  # (B, S, S)
        b = maps.shape[0]
        # maps and scores leave the device together: one copy per batch, no other synchronisation
        both = torch.cat([maps.flatten(1), image_scores(maps)[:, None]], 1).float().cpu()  # (B, S*S + 1)
        bad = ~torch.isfinite(both).all(1)  # (B,): a NaN or inf is never reported as a score
        if bad.any():
            raise NonFiniteMapError(int(bad.nonzero()[0, 0]))
        return both[:, :-1].reshape(b, out_size, out_size), both[:, -1]

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, S, S) -> (maps (B, S, S), scores (B,)), float32 on the CPU."""
        self._check_fitted()
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise PadimError(f"predict expects uint8 images of shape (B, 3, S, S), got {images.dtype} "
                             f"{tuple(images.shape)}")
        return self._score_layers(self.forward_layers(images), self.config.out_size)

    def predict_dataset(self, data, progress: bool = True) -> dict:
        """Maps and scores for every item of a dataset or FeatureCache, with its labels, masks and paths."""
        self._check_fitted()
        out = {"maps": [], "scores": [], "labels": [], "masks": [], "paths": []}
        for layers, batch in self.layer_batches(data, progress, "predict"):
            try:
                maps, scores = self._score_layers(layers, self.config.out_size)
            except NonFiniteMapError as e:
                paths = batch.get("path")
                raise NonFiniteMapError(e.index, paths[e.index] if paths else None) from None
            out["maps"].append(maps)
            out["scores"].append(scores)
            out["labels"] += [int(v) for v in batch.get("label", [-1] * len(scores))]
            if "mask" in batch:
                out["masks"].append(batch["mask"])
            out["paths"] += list(batch.get("path", [""] * len(scores)))
        out["maps"] = torch.cat(out["maps"])  # (N, S, S)
        out["scores"] = torch.cat(out["scores"])  # (N,)
        out["labels"] = torch.tensor(out["labels"])  # (N,)
        out["masks"] = torch.cat(out["masks"]) if out["masks"] else None  # (N, S, S) uint8
        return out

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write mean, precision, channel indices and config to one .safetensors file, atomically, with the
        sha256 of it all (`file_digest`), which `load` compares."""
        self._check_fitted()
        path = Path(path)
        tensors = {"mean": self.mean.contiguous().cpu(), "precision": self.precision.contiguous().cpu()}
        tensors.update({k: v.cpu() for k, v in self.reducer.state().items()})
        meta = {"format": "padim_utils", "format_version": FORMAT_VERSION, "padim_utils_version": __version__,
                "config": self.config.to_json(), "grid": json.dumps(list(self.grid)), "n_train": str(self.n_train)}
        meta[DIGEST_KEY] = file_digest(meta, tensors)
        with atomic_path(path) as tmp:
            try:
                save_file(tensors, str(tmp), metadata=meta)
            except Exception as e:  # safetensors wraps I/O errors ("... (os error 28)") in its own type
                raise PadimError(f"cannot write {path}: {_io_error_text(e)}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "Padim":
        """Rebuild a fitted model from `save`'s file, checked whole: its metadata, the shapes, dtypes and
        structure a fit gives its tensors (`_check_tensors`), then the digest written at save. A file that
        fails any check is refused in one line."""
        path = Path(path)
        if not path.is_file():
            raise PadimError(f"model file not found: {path}")
        meta, tensors = read_safetensors(path, "padim model file")
        if meta.get("format") != "padim_utils":
            raise PadimError(f"{path} is not a padim model file (no padim_utils metadata)")
        if meta.get("format_version") not in READABLE_FORMATS:
            raise PadimError(f"{path} was written by padim_utils {meta.get('padim_utils_version', '?')} in model "
                             f"format {meta.get('format_version')}; this padim_utils {__version__} reads format "
                             f"{FORMAT_VERSION}: re-fit the model with `padim fit`")
        config, grid, n_train = _read_metadata(path, meta)
        resolve_device(device or config.device)  # a device problem is not the file's
        try:
            model = cls(config, device=device)
        except PadimError as e:
            raise PadimError(f"{path}: {e}") from None
        _check_tensors(path, tensors, model, grid)
        if grid != model.config_grid:  # the more telling reason first; the digest catches every other edit
            raise PadimError(f"{path}: the model's grid {list(grid)} does not fit its config's "
                             f"{config.out_size}px images (they give {list(model.config_grid)}): re-fit the model")
        _check_digest(path, meta, tensors)
        model.reducer.load_state(tensors)
        model.mean = tensors["mean"].to(model.device)
        model.precision = tensors["precision"].to(model.device)
        model.grid = grid
        model.n_train = n_train
        return model


def _geometries(data) -> list[Geometry]:
    """The geometries a dataset's images are read with, looking through Subsets (shards) and ConcatDatasets."""
    if isinstance(data, Subset):
        return _geometries(data.dataset)
    if isinstance(data, ConcatDataset):
        return [g for part in data.datasets for g in _geometries(part)]
    geometry = getattr(data, "geometry", None)
    return [geometry] if isinstance(geometry, Geometry) else []


class NonFiniteMapError(PadimError):
    """An anomaly map holds NaN or inf: never reported as a score."""

    def __init__(self, index: int, path: str | None = None):
        self.index = index
        what = f"image {path}" if path else f"image {index} of the batch"
        super().__init__(f"the anomaly map of {what} holds NaN or infinite values; no score is reported "
                         "(check the model file, or use dtype=float32)")


def _io_error_text(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    m = re.search(r"os error (\d+)", str(e))
    return os.strerror(int(m.group(1))) if m else " ".join(str(e).split())


def _config_field_types() -> dict[str, tuple]:
    """What JSON may hold for each config field: the type of its default (int for float fields too)."""
    out = {}
    for f in dataclasses.fields(PadimConfig):
        default = f.default
        if f.name == "layers":
            out[f.name] = (list, type(None))
        elif f.name == "crop":
            out[f.name] = (int, type(None))
        elif isinstance(default, bool):
            out[f.name] = (bool,)
        elif isinstance(default, float):
            out[f.name] = (int, float)
        else:
            out[f.name] = (type(default),)
    return out


#: The EfficientNet-B5 default layers of model files written before `interpolation` existed (the paper's
#: numbers read 0-based; see `backbones`); the default is now block6, block19, block25.
_OLD_EFFB5_LAYERS = ["block7", "block20", "block26"]


def _upgrade_config(raw: dict) -> dict:
    """A config from a model file written before the `interpolation` or `stats_dtype` fields: what
    those versions did."""
    if "stats_dtype" not in raw:
        raw = {**raw, "stats_dtype": "float64"}  # their products were float64 on every device
    if "interpolation" in raw:
        return raw
    raw = {**raw, "interpolation": "bilinear"}  # they resized images and upsampled maps bilinearly
    if raw.get("backbone") == "efficientnet_b5" and "layers" in raw and raw["layers"] is None:
        raw["layers"] = list(_OLD_EFFB5_LAYERS)  # and took these layers for B5 by default
    return raw


def _read_metadata(path: Path, meta: dict) -> tuple[PadimConfig, tuple[int, int], int]:
    """The config, patch grid and training-set size from a model file's metadata, every field checked."""
    for key in ("config", "grid", "n_train"):
        if key not in meta:
            raise PadimError(f"{path}: the model metadata has no {key!r} field")
    try:
        raw = json.loads(meta["config"])
    except ValueError:
        raise PadimError(f"{path}: the model's config metadata is not JSON") from None
    if not isinstance(raw, dict):
        raise PadimError(f"{path}: the model's config metadata is not a JSON object")
    raw = _upgrade_config(raw)
    types = _config_field_types()
    missing = sorted(set(types) - set(raw))
    if missing:
        raise PadimError(f"{path}: the model's config has no {', '.join(missing)}")
    for key, value in raw.items():
        allowed = types.get(key)
        if allowed is None:
            continue  # from_dict names unknown options below
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            raise PadimError(f"{path}: config {key}={value!r} has the wrong type "
                             f"(expected {' or '.join(t.__name__ for t in allowed)})")
        if isinstance(value, float) and not math.isfinite(value):
            raise PadimError(f"{path}: config {key}={value!r} is not a finite number")
    if raw["layers"] is not None and not all(isinstance(v, str) for v in raw["layers"]):
        raise PadimError(f"{path}: config layers={raw['layers']!r} must be a list of layer names")
    try:
        config = PadimConfig.from_dict(raw)
    except PadimError as e:
        raise PadimError(f"{path}: {e}") from None
    try:
        grid = json.loads(meta["grid"])
    except ValueError:
        grid = None
    if not (isinstance(grid, list) and len(grid) == 2 and all(type(v) is int and v > 0 for v in grid)):
        raise PadimError(f"{path}: the model's grid metadata {meta['grid']!r} is not two positive integers")
    n_train = meta["n_train"]
    if not (n_train.isdigit() and int(n_train) >= 2):
        raise PadimError(f"{path}: the model's n_train metadata {n_train!r} is not a count of at least 2 images")
    return config, (grid[0], grid[1]), int(n_train)


def _check_tensors(path: Path, tensors: dict, model: "Padim", grid: tuple[int, int]) -> None:
    """Shapes, dtypes and finiteness of the saved tensors against the metadata, and the structure a fit
    gives them: channel indices strictly increasing, a precision with a positive diagonal, PCA directions
    orthonormal, mean and precision in the dtype the config's fit stores."""
    d, positions = model.d, grid[0] * grid[1]
    expected = {"mean": (positions, d), "precision": (positions, d, d)}
    if model.reducer.kind == "random":
        expected["channel_index"] = (d,)
    elif model.reducer.kind == "pca":
        expected["pca_projection"] = (model.reducer.n_channels, d)
    store = model.stored_dtype
    for name, shape in expected.items():
        t = tensors.get(name)
        if t is None:
            raise PadimError(f"{path}: the model file has no {name!r} tensor (reduction={model.config.reduction})")
        if tuple(t.shape) != shape:
            raise PadimError(f"{path}: tensor {name!r} has shape {tuple(t.shape)} but the metadata "
                             f"(d={d}, grid={list(grid)}) needs {shape}")
        if name == "channel_index":
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise PadimError(f"{path}: tensor 'channel_index' holds {t.dtype}, not integers")
            n = model.reducer.n_channels
            if d and (int(t.min()) < 0 or int(t.max()) >= n):
                raise PadimError(f"{path}: tensor 'channel_index' holds channels outside 0..{n - 1} "
                                 f"({model.config.backbone} has {n} channels)")
            if t.unique().numel() != d:
                raise PadimError(f"{path}: tensor 'channel_index' names a channel twice")
            if not bool((t[1:] > t[:-1]).all()):
                raise PadimError(f"{path}: tensor 'channel_index' is not in increasing order, as a fit "
                                 "stores it; re-fit the model")
        else:
            if not t.dtype.is_floating_point:
                raise PadimError(f"{path}: tensor {name!r} holds {t.dtype}, not floating-point numbers")
            if name != "pca_projection" and t.dtype != store:
                raise PadimError(f"{path}: tensor {name!r} holds {t.dtype} but a fit with "
                                 f"dtype={model.config.dtype} stores {store}; re-fit the model")
            if not torch.isfinite(t).all():
                raise PadimError(f"{path}: tensor {name!r} holds NaN or infinite values; re-fit the model")
    _check_structure(path, tensors)


def _check_structure(path: Path, tensors: dict) -> None:
    """What every fit gives its precision matrices (the inverse of covariance + eps * I: positive diagonal)
    and its PCA directions (orthonormal columns); their symmetry is `_check_symmetric`'s."""
    precision = tensors["precision"]  # (P, d, d)
    if not bool((precision.diagonal(dim1=-2, dim2=-1) > 0).all()):
        raise PadimError(f"{path}: tensor 'precision' has a diagonal entry <= 0, which no fit gives "
                         "(an inverse covariance is positive definite); re-fit the model")
    w = tensors.get("pca_projection")
    if w is not None and w.numel():
        gram = w.double().T @ w.double()  # (d, d): the identity for orthonormal directions
        if not torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-3):
            raise PadimError(f"{path}: tensor 'pca_projection' does not hold orthonormal directions, as a "
                             "PCA fit does; re-fit the model")


def file_digest(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of a model file's metadata (all but the digest itself) and of every tensor's name, dtype,
    shape and bytes: written by `Padim.save`, compared by `Padim.load`, so that any change to the file
    (a flipped bit in a tensor or in the config) is found. safetensors itself stores no checksum.

    >>> t = {"mean": torch.zeros(2, 3)}
    >>> file_digest({"n_train": "5"}, t) == file_digest({"n_train": "5", DIGEST_KEY: "x"}, t)
    True
    >>> file_digest({"n_train": "5"}, t) == file_digest({"n_train": "6"}, t)
    False
    """
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != DIGEST_KEY):
        h.update(f"{key}={meta[key]}\0".encode("utf-8", "surrogateescape"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _check_symmetric(path: Path, precision: torch.Tensor) -> None:
    """Every precision matrix symmetric, as an inverse covariance is (to 1e-4 of its largest entry: a GPU's
    inverse may differ from its transpose in the last bits), chunk by chunk of positions."""
    for s in range(0, precision.shape[0], 256):  # no second copy of a large precision
        p = precision[s : s + 256]  # (p, d, d)
        if not torch.equal(p, p.mT) and not bool(((p - p.mT).abs() <= 1e-4 * p.abs().amax(dim=(-2, -1),
                                                                                        keepdim=True)).all()):
            raise PadimError(f"{path}: tensor 'precision' is not symmetric, as an inverse covariance is; "
                             "re-fit the model")


def _check_digest(path: Path, meta: dict[str, str], tensors: dict) -> None:
    """A format-2 file carries `file_digest` of its contents, which must match them: the file is then the
    fit's own, byte for byte. A format-1 file (before the digest) is checked for symmetry instead."""
    if meta.get("format_version") == "1":
        _check_symmetric(path, tensors["precision"])
        return
    stored = meta.get(DIGEST_KEY)
    if stored is None:
        raise PadimError(f"{path}: the model metadata has no {DIGEST_KEY!r} field, which padim_utils writes "
                         "with every model; the file was changed or damaged: re-fit the model")
    if file_digest(meta, tensors) != stored:
        raise PadimError(f"{path}: the model's tensors or metadata differ from what was saved (their sha256 does "
                         "not match the one written at save): the file was changed or damaged; re-fit the model")
