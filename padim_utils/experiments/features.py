"""A feature cache: the backbone's layer outputs for a whole dataset, computed once.

The backbone's forward pass is the slow part of PaDiM; everything after it
(reduction to d channels, the Gaussians, eps, the blur sigma) is cheap. To
study those choices (course notebooks 02-05, the ablations of 08) compute
the layer outputs once and re-fit from them in seconds:

    cache = FeatureCache.compute(train_set, cfg)         # one forward pass per image
    Padim(cfg.replace(d=50)).fit(cache)                  # no backbone pass
    Padim(cfg.replace(reduction="pca")).fit(cache)
    cache.save("build/cache/bottle_train.safetensors")   # and FeatureCache.load(...)

A cache holds, for N images, one float32 tensor per hooked layer
[(N, C_i, h_i, w_i)] on the CPU, and each image's label, mask, defect type and
path; it answers to the same `fit` / `predict_dataset` calls as a dataset.
Memory: EfficientNet-Lite0 at 256 px keeps 24x64x64 + 40x32x32 + 112x16x16
floats = 0.67 MB per image; ResNet18 at 224 px 1.8 MB; Wide-ResNet50-2 7.2 MB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..backbones import default_layers, embed
from ..config import Geometry, PadimConfig
from ..errors import PadimError
from ..files import atomic_path, new_digest, read_safetensors
from ..model import Padim  # the model owns the forward pass (device, dtype, normalisation)

__all__ = ["FeatureCache", "FORMAT"]

#: The file format's name in a saved cache's metadata (the name it has had since the first saved cache).
FORMAT = "padim_utils.features"


@dataclass
class FeatureCache:
    """Layer outputs of a backbone for every image of a dataset (see the module docstring)."""

    backbone: str
    layer_names: tuple[str, ...]
    out_size: int  # side of the images the backbone saw
    layers: list[torch.Tensor]  # [(N, C_i, h_i, w_i)] float32, CPU
    labels: torch.Tensor  # (N,) int64: 1 defect, 0 good, -1 unknown
    masks: torch.Tensor | None  # (N, S, S) uint8 in {0, 1}, or None
    paths: list[str] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    interpolation: str | None = None  # how the images were resized ("bicubic", "bilinear"); None: not recorded
    image_size: int | None = None  # the square resize before the crop; None: not recorded (older caches)
    crop: int | None = None  # the centre crop (None: none), where image_size is recorded

    # ------------------------------------------------------------------ building
    @classmethod
    def compute(cls, dataset: Dataset, config: PadimConfig, device: str | None = None,
                progress: bool = True) -> "FeatureCache":
        """Run `config`'s backbone once over `dataset` and keep every layer output."""
        model = Padim(config.replace(reduction="none"), device=device)
        parts: list[list[torch.Tensor]] = []
        labels, masks, paths, kinds = [], [], [], []
        for layers, batch in model.layer_batches(dataset, progress, f"features {config.backbone}"):
            parts.append([f.cpu() for f in layers])  # [(B, C_i, h_i, w_i)]
            n = len(batch["image"])
            labels += [int(v) for v in batch.get("label", [-1] * n)]
            if "mask" in batch:
                masks.append(batch["mask"])
            paths += list(batch.get("path", [""] * n))
            kinds += list(batch.get("defect_type", ["unknown"] * n))
        if not parts:
            raise PadimError("the dataset is empty: no features to compute")
        return cls(
            backbone=config.backbone,
            layer_names=tuple(model.extractor.layers),
            out_size=config.out_size,
            layers=[torch.cat(p) for p in zip(*parts)],
            labels=torch.tensor(labels, dtype=torch.int64),
            masks=torch.cat(masks) if masks else None,
            paths=paths,
            defect_types=kinds,
            interpolation=config.interpolation,
            image_size=config.image_size,
            crop=config.crop,
        )

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self.layers[0].shape[0])

    @property
    def channels(self) -> list[int]:
        return [int(f.shape[1]) for f in self.layers]

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the patch grid: the first layer's."""
        return tuple(self.layers[0].shape[-2:])

    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.layers)

    def batches(self, batch_size: int) -> Iterator[tuple[list[torch.Tensor], dict]]:
        """(layer outputs [(B, C_i, h_i, w_i)], {"label", "mask", "path"}) per batch of images."""
        for s in range(0, len(self), batch_size):
            meta = {"label": self.labels[s : s + batch_size], "path": self.paths[s : s + batch_size]}
            if self.masks is not None:
                meta["mask"] = self.masks[s : s + batch_size]
            yield [f[s : s + batch_size] for f in self.layers], meta

    def embeddings(self, index=None) -> torch.Tensor:
        """Full PaDiM embeddings (N, C, h, w): every layer upsampled to the first grid and concatenated."""
        layers = self.layers if index is None else [f[index] for f in self.layers]
        return embed(layers)

    def subset(self, index) -> "FeatureCache":
        """The cache of some of the images (a slice, a list of indices or a bool mask)."""
        idx = torch.arange(len(self))[index]
        return FeatureCache(self.backbone, self.layer_names, self.out_size, [f[idx] for f in self.layers],
                            self.labels[idx], None if self.masks is None else self.masks[idx],
                            [self.paths[i] for i in idx.tolist()], [self.defect_types[i] for i in idx.tolist()],
                            self.interpolation, self.image_size, self.crop)

    def check_config(self, config: PadimConfig) -> None:
        """PadimError unless `config` asks for this backbone, these layers and this geometry (image size,
        interpolation and, where recorded, the resize and crop)."""
        layers = tuple(config.layers) if config.layers is not None else default_layers(config.backbone)
        if config.backbone != self.backbone or layers != self.layer_names:
            raise PadimError(f"the feature cache holds {self.backbone} {list(self.layer_names)} but the config asks "
                             f"for {config.backbone} {list(layers)}: compute a new cache")
        if config.out_size != self.out_size:
            raise PadimError(f"the feature cache was computed on {self.out_size}px images but the config expects "
                             f"{config.out_size}px: compute a new cache")
        if self.interpolation is not None and config.interpolation != self.interpolation:
            raise PadimError(f"the feature cache was computed on images resized {self.interpolation} but the config "
                             f"says interpolation={config.interpolation!r}: compute a new cache")
        if self.image_size is not None:
            mine = Geometry(self.image_size, self.crop, self.interpolation or config.interpolation)
            if not mine.same_pixels(config.geometry):
                raise PadimError(f"the feature cache was computed on images of {mine!r} but the config's geometry is "
                                 f"{config.geometry!r}: compute a new cache")

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache to one .safetensors file, atomically, with a checksum of its tensors and metadata."""
        tensors = {f"layer{i}": f.contiguous() for i, f in enumerate(self.layers)}
        tensors["labels"] = self.labels.contiguous()
        if self.masks is not None:
            tensors["masks"] = self.masks.contiguous()
        meta = {"format": FORMAT, "backbone": self.backbone, "out_size": str(self.out_size),
                "layer_names": json.dumps(list(self.layer_names)), "paths": json.dumps(self.paths),
                "defect_types": json.dumps(self.defect_types)}
        if self.interpolation is not None:
            meta["interpolation"] = self.interpolation
        if self.image_size is not None:
            meta["geometry"] = json.dumps([self.image_size, self.crop])
        meta["checksum"] = _checksum(meta, tensors)
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureCache":
        """Read a cache written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise PadimError(f"feature cache not found: {path}")
        meta, tensors = read_safetensors(path, "feature cache")
        try:
            if meta.get("format") != FORMAT:
                raise ValueError(f"no {FORMAT} metadata")
            if "checksum" in meta and meta["checksum"] != _checksum(meta, tensors):
                raise ValueError("its checksum differs from its content: the file is damaged")
            names = json.loads(meta["layer_names"])
            image_size, crop = json.loads(meta.get("geometry", "[null, null]"))
            return cls(meta["backbone"], tuple(names), int(meta["out_size"]),
                       [tensors[f"layer{i}"] for i in range(len(names))], tensors["labels"], tensors.get("masks"),
                       json.loads(meta["paths"]), json.loads(meta["defect_types"]),
                       meta.get("interpolation", "bilinear"), image_size, crop)  # caches before the field: bilinear
        except Exception as e:  # safetensors' own errors, KeyError, JSON errors
            raise PadimError(f"{path} is not a readable feature cache ({type(e).__name__}: {e})") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n} {tuple(f.shape[1:])}" for n, f in zip(self.layer_names, self.layers))
        return (f"FeatureCache({self.backbone}, n={len(self)}, {self.out_size}px, layers: {shapes}, "
                f"{self.nbytes() / 2**20:.1f} MiB)")


def _checksum(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """Content digest (`files.new_digest`) of a cache file's metadata (but the checksum) and tensors' bytes."""
    h = new_digest()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
