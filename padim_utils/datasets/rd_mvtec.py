"""Rd-MVTec AD: MVTec AD made non-aligned, as Defard et al. (2020, Sec. 4.1) define it.

Every train and test image (and its mask) gets a random rotation in
[-10°, +10°] and a random crop from 256 x 256 to 224 x 224; the paper reports
the mean over 5 such random preprocessings (``RD_SEEDS``). Per image:

1. square resize to ``image_size`` (256) with the dataset's ``interpolation``
   (the config's; bicubic as in the paper by default), nearest for the mask;
2. rotation by ``angle`` degrees about the image centre (counter-clockwise for a
   positive angle, PIL's convention), the same interpolation / nearest, corners
   filled with black (mask: 0, i.e. normal);
3. crop ``crop x crop`` (224) at ``(top, left)``, uniform over every position that
   fits.

``angle``, ``top`` and ``left`` are drawn from a generator seeded by
``(seed, category, split, index)`` (see :func:`rd_params`), so a dataset is
the same for the same seed whatever order its items are read in, and two seeds
give two different preprocessings. Image and mask go through the same geometric
transform: masks stay aligned with their images (tests check it pixel for pixel).
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np
from PIL import Image

from ..config import Geometry
from ..errors import PadimError
from .images import image_tensor, load_rgb, mask_tensor, resample_filter
from .mvtec import MVTecDataset

__all__ = ["RD_SEEDS", "MAX_ANGLE", "RdMVTecDataset", "rd_params", "rd_transform"]

#: The paper averages 5 random preprocessings; these are the seeds ``padim`` uses for them.
RD_SEEDS = (0, 1, 2, 3, 4)
#: Largest rotation, in degrees.
MAX_ANGLE = 10.0


def rd_params(seed: int, index: int, image_size: int = 256, crop: int = 224, category: str = "",
              split: str = "", max_angle: float = MAX_ANGLE) -> tuple[float, int, int]:
    """``(angle, top, left)`` of one image: angle uniform in [-max_angle, max_angle], crop offsets uniform.

    >>> rd_params(0, 7) == rd_params(0, 7)           # the same image, the same transform, in any order
    True
    >>> angle, top, left = rd_params(0, 7)
    >>> abs(angle) <= MAX_ANGLE and 0 <= top <= 256 - 224 and 0 <= left <= 256 - 224
    True
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(category.encode()), zlib.crc32(split.encode()), int(index)])
    angle = float(rng.uniform(-max_angle, max_angle))
    top, left = (int(v) for v in rng.integers(0, image_size - crop + 1, size=2))
    return angle, top, left


def rd_transform(image: Image.Image, mask: Image.Image | None, angle: float, top: int, left: int, crop: int,
                 image_resample: int = Image.BICUBIC) -> tuple[Image.Image, Image.Image | None]:
    """Rotate by ``angle`` about the centre, then crop ``crop x crop`` at ``(top, left)``; the mask alike (nearest)."""
    box = (left, top, left + crop, top + crop)
    fill = (0,) * len(image.getbands())
    image = image.rotate(angle, resample=image_resample, fillcolor=fill).crop(box)
    if mask is not None:
        mask = mask.rotate(angle, resample=Image.NEAREST, fillcolor=0).crop(box)
    return image, mask


class RdMVTecDataset(MVTecDataset):
    """One split of one MVTec AD category, randomly rotated and cropped (see the module docstring).

    Same folder layout, checks, attributes and items as :class:`MVTecDataset`;
    :attr:`out_size` is ``crop`` (224). ``seed`` picks the random preprocessing.
    Images are always resized as they are read (``resize_on_load`` is not looked at).
    """

    def __init__(self, root: str | os.PathLike, category: str, split: str = "train", image_size: int = 256,
                 crop: int | None = 224, seed: int = 0, max_angle: float = MAX_ANGLE,
                 interpolation: str = "bicubic", *, geometry: Geometry | None = None) -> None:
        if (crop if geometry is None else getattr(geometry, "crop", crop)) is None:
            raise PadimError("Rd-MVTec needs a crop size (the paper: 256 -> 224), got crop=None")
        super().__init__(root, category, split, image_size=image_size, crop=crop, interpolation=interpolation,
                         geometry=geometry)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PadimError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 <= float(max_angle) <= 180:
            raise PadimError(f"max_angle must be between 0 and 180 degrees, got {max_angle!r}")
        self.seed = int(seed)
        self.max_angle = float(max_angle)

    def params(self, index: int) -> tuple[float, int, int]:
        """``(angle, top, left)`` of item ``index``."""
        return rd_params(self.seed, index, self.image_size, self.crop, self.category, self.split, self.max_angle)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        index = range(len(self))[index]  # negative indices name the same item
        img = load_rgb(path)
        size = img.size
        resample = resample_filter(self.interpolation)
        img = img.resize((self.image_size, self.image_size), resample)
        mask_path = self.mask_paths[index]
        mask = None
        if mask_path is not None:
            mask = self.open_mask(mask_path, path, size).resize((self.image_size, self.image_size), Image.NEAREST)
        img, mask = rd_transform(img, mask, *self.params(index), self.crop, image_resample=resample)
        return self.item(index, image_tensor(img), self.resize_mask(None) if mask is None else mask_tensor(mask))

    def __repr__(self) -> str:
        return self.describe({"root": str(self.root), "category": self.category, "split": self.split},
                             {"seed": self.seed})
