"""`PadimConfig`: the one frozen settings object passed to every step.

Every knob of PaDiM (Defard et al., 2020, arXiv 2011.08785) lives here, so a
fitted model can be rebuilt from its JSON and an ablation is one `replace()`:

    cfg = preset("paper_r18")                  # the paper's ResNet18 setting
    cfg = cfg.replace(d=50, reduction="pca")   # an ablation

Presets
-------
paper_r18     ResNet18, layers 1-3 (448 channels), random d=100, 256 -> crop 224, bicubic
paper_wr50    Wide-ResNet50-2, layers 1-3 (1792 channels), random d=550, bicubic
paper_effb5   EfficientNet-B5, the paper's layers 7, 20, 26 (counted from 1: block6, block19, block25,
              40+128+176 = 344 channels), all channels kept (reduction="none": the paper's B5
              model has no "Rd" suffix), bicubic
offline_lite0 EfficientNet-Lite0 (weights ship with pip, no internet), d=100, no crop, bilinear
quick         offline_lite0 on 64x64 images, for tests and PADIM_QUICK=1

Interpolation: the paper resizes images and upsamples anomaly maps bicubically,
so the dataclass default and the paper presets say "bicubic". The public
implementations (anomalib among them) use bilinear (antialiased) resizing and
bilinear map upsampling; offline_lite0 and quick are anomalib's no-crop
variant, so they say "bilinear" (the course's and the README's reference
numbers were measured that way).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from dataclasses import dataclass

import torch

from .errors import PadimError
from .paper import PAPER_D

REDUCTIONS = ("random", "pca", "none")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64", "bfloat16", "float16")
STATS_DTYPES = ("auto", "float64", "float32")
INTERPOLATIONS = ("bicubic", "bilinear")
#: Smallest image side the pipeline accepts: a stride-16 layer then still has a 2 x 2 grid.
MIN_IMAGE_SIZE = 32
#: What quick mode (PADIM_QUICK=1, tests) shrinks the embedded dataset to; the "quick" preset matches it.
QUICK_DATA = {"image_size": 64, "n_train": 8}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (any case); unset -> `default`."""
    value = os.environ.get(name)
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise PadimError(f"{name}={value!r} is not a yes/no value; use 1 or 0")


def check_device(device) -> str:
    """`device` if it is one of DEVICES (auto, cpu, cuda), else one PadimError line.

    >>> check_device("gpu")
    Traceback (most recent call last):
    padim_utils.errors.PadimError: device must be one of auto, cpu, cuda, got 'gpu'
    """
    if device not in DEVICES:
        raise PadimError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def check_interpolation(interpolation) -> str:
    """`interpolation` if it is one of INTERPOLATIONS, else one PadimError line."""
    if interpolation not in INTERPOLATIONS:
        raise PadimError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return interpolation


def _whole(value) -> bool:  # an int (numpy's too), not a bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Geometry:
    """How an image reaches the network: square resize to `image_size`, centre crop to `crop` (None: no
    crop), with `interpolation` ("bicubic", the paper; "bilinear", anomalib). Checked once, here.

    >>> Geometry(256, 224).out_size
    224
    >>> Geometry(256, None, "bilinear").as_kwargs()
    {'image_size': 256, 'crop': None, 'interpolation': 'bilinear'}
    >>> Geometry(256, 300)
    Traceback (most recent call last):
    padim_utils.errors.PadimError: crop (300) must not be larger than image_size (256)
    """

    image_size: int = 256
    crop: int | None = 224
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        size, crop = self.image_size, self.crop
        if not _whole(size) or size < MIN_IMAGE_SIZE:
            raise PadimError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {size!r}")
        if crop is not None:
            if not _whole(crop) or crop < MIN_IMAGE_SIZE:
                raise PadimError(f"crop must be an integer >= {MIN_IMAGE_SIZE} or None, got {crop!r}")
            if crop > size:
                raise PadimError(f"crop ({crop}) must not be larger than image_size ({size})")
            object.__setattr__(self, "crop", int(crop))
        object.__setattr__(self, "image_size", int(size))
        check_interpolation(self.interpolation)

    @property
    def out_size(self) -> int:
        """Side of the images the network sees (and of the anomaly maps)."""
        return self.crop if self.crop is not None else self.image_size

    def as_kwargs(self) -> dict:
        """`image_size`, `crop`, `interpolation` as keyword arguments (a dataset's, `resize_crop_images`')."""
        return {"image_size": self.image_size, "crop": self.crop, "interpolation": self.interpolation}

    def same_pixels(self, other: "Geometry") -> bool:
        """Whether `other` gives every image the same pixels: the same resize, output side and interpolation
        (a crop to the whole image is no crop).

        >>> Geometry(64, 64, "bilinear").same_pixels(Geometry(64, None, "bilinear"))
        True
        >>> Geometry(128, 64, "bilinear").same_pixels(Geometry(64, None, "bilinear"))
        False
        """
        return (self.image_size, self.out_size, self.interpolation) == (other.image_size, other.out_size,
                                                                        other.interpolation)


@dataclass(frozen=True)
class PadimConfig:
    """All settings of a PaDiM run.

    Attributes
    ----------
    backbone : one of `padim_utils.backbones.available_backbones()`.
    layers : layer names to hook; `None` means the backbone's paper default.
    d : embedding size after reduction (ignored for reduction="none").
    reduction : "random" (the paper: a seeded random channel subset),
        "pca" (principal components of the training embeddings) or "none".
    image_size : images are resized to image_size x image_size ...
    crop : ... then center-cropped to crop x crop (None: no crop, anomalib's variant).
    interpolation : "bicubic" (the paper) or "bilinear" (anomalib): how images are
        resized (PIL, antialiased when shrinking; masks always nearest) and how
        the patch distances are upsampled to the anomaly map.
    eps : regulariser added to every covariance, Sigma + eps * I (paper: 0.01).
    sigma : std of the Gaussian blur applied to the upsampled map (paper: 4).
    batch_size : images per forward pass.
    device : "auto" (cuda when available), "cpu" or "cuda".
    dtype : dtype of the backbone forward pass and of the distance computation;
        the Gaussian statistics are always accumulated in float64.
    stats_dtype : arithmetic of the Gaussian statistics' products: "auto" (float64
        on the CPU and on data-centre GPUs, float32 products of float64-centred rows
        on GPUs whose float64 is 32-64x slower), "float64" or "float32"; equal to
        float64 within 1e-6 relative either way (`gaussian.scatter_dtype`).
    seed : seeds the random channel subset (a `torch.Generator`, never `random`).
    position_chunk : positions per chunk when inverting covariances and scoring,
        bounds memory to about position_chunk * d * d * 8 bytes.
    pretrained : False builds random-init backbones: shape tests only, never
        report accuracy from them.
    """

    backbone: str = "resnet18"
    layers: tuple[str, ...] | None = None
    d: int = 100
    reduction: str = "random"
    image_size: int = 256
    crop: int | None = 224
    interpolation: str = "bicubic"
    eps: float = 0.01
    sigma: float = 4.0
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    stats_dtype: str = "auto"
    seed: int = 0
    position_chunk: int = 512
    pretrained: bool = True

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.reduction not in REDUCTIONS:
            raise PadimError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise PadimError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.stats_dtype not in STATS_DTYPES:
            raise PadimError(f"stats_dtype must be one of {', '.join(STATS_DTYPES)}, got {self.stats_dtype!r}")
        if self.d < 1:
            raise PadimError(f"d must be a positive number of channels, got {self.d}")
        self.geometry  # checks image_size, crop and interpolation (one PadimError line)
        if not 0 < self.eps < float("inf"):  # written so that NaN fails too
            raise PadimError(f"eps must be positive (it keeps covariances invertible), got {self.eps}")
        if not 0 <= self.sigma < float("inf"):
            raise PadimError(f"sigma must be >= 0, got {self.sigma}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise PadimError(f"seed must be an integer from 0 to 2**64 - 1 (torch.Generator's range), got {self.seed!r}")
        if self.batch_size < 1 or self.position_chunk < 1:
            raise PadimError("batch_size and position_chunk must be positive")

    @property
    def geometry(self) -> Geometry:
        """`image_size`, `crop` and `interpolation` as one checked `Geometry`."""
        return Geometry(self.image_size, self.crop, self.interpolation)

    @property
    def out_size(self) -> int:
        """Side of the images the network sees (and of the anomaly maps)."""
        return self.geometry.out_size

    @property
    def torch_dtype(self):
        """The torch dtype named by `dtype`."""
        return getattr(torch, self.dtype)

    def replace(self, **changes) -> "PadimConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise PadimError(f"unknown config option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "PadimConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PadimError(f"unknown config option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


PRESETS: dict[str, PadimConfig] = {
    # Table 1 / Sec. 4 of the paper: R18, layers 1-3, 100 random channels.
    "paper_r18": PadimConfig(backbone="resnet18", d=PAPER_D["resnet18"]),
    # The paper's best model: Wide-ResNet50-2, 550 random channels out of 1792.
    "paper_wr50": PadimConfig(backbone="wide_resnet50_2", d=PAPER_D["wide_resnet50_2"]),
    # EfficientNet-B5, "layers 7 (level 2), 20 (level 4) and 26 (level 5)", all 344 channels (no "Rd").
    "paper_effb5": PadimConfig(backbone="efficientnet_b5", reduction="none", batch_size=16),
    # Weights ship with pip: works offline (tests, CI, workshops). Anomalib's no-crop, bilinear geometry.
    "offline_lite0": PadimConfig(backbone="efficientnet_lite0", d=100, crop=None, interpolation="bilinear"),
    # Tiny and fast: tests and PADIM_QUICK=1 notebooks.
    "quick": PadimConfig(backbone="efficientnet_lite0", d=32, image_size=QUICK_DATA["image_size"], crop=None,
                         interpolation="bilinear", batch_size=16),
}


def preset(name: str) -> PadimConfig:
    """Return a named preset (see the module docstring)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PadimError(f"unknown config preset {name!r}; choose one of {', '.join(PRESETS)}") from None
