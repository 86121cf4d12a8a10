"""`ImageDataset`: what every dataset of the package shares: one geometry, lists of files, items as dicts.

A dataset is a list of images, each with a label, a defect type and, where there is one, a mask::

    paths         ["data/mvtec_ad/bottle/test/broken_large/000.png", ...]
    labels        [1, ...]                  0 normal, 1 anomalous, -1 unknown (your own images)
    defect_types  ["broken_large", ...]     "good" for normal images
    mask_paths    ["data/mvtec_ad/bottle/ground_truth/broken_large/000_mask.png", ...]  (None: no mask file)

and item ``i`` is the dict ``{"image", "mask", "label", "defect_type", "path"}``: ``image`` uint8
``(3, S, S)``, ``mask`` uint8 ``(S, S)`` in {0, 1} (all zero without a mask), ``S`` the geometry's
``out_size``. A subclass only finds its files (:meth:`ImageDataset.add_item` for each); those whose
images are not files (video frames, randomly rotated crops) also override ``__getitem__``.

The geometry (:class:`padim_utils.config.Geometry`: square resize, centre crop, interpolation) is
given once, as ``geometry=cfg.geometry`` or as the ``image_size``, ``crop``, ``interpolation``
keywords, and checked once, by ``Geometry``:

>>> from padim_utils.datasets import ImageFolderDataset
>>> ImageFolderDataset("no/such/folder", image_size=256, crop=300)
Traceback (most recent call last):
padim_utils.errors.PadimError: crop (300) must not be larger than image_size (256)
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..config import Geometry
from ..errors import PadimError
from .images import (check_image_file, image_tensor, load_mask, load_resized, load_rgb, mask_tensor, resample_filter,
                     resize_crop)

__all__ = ["SPLITS", "ImageDataset", "CategoryDataset", "check_split", "changed_keywords"]

SPLITS = ("train", "test")
#: The keywords a dataset takes the geometry as, besides ``geometry=``.
GEOMETRY_KEYWORDS = ("image_size", "crop", "interpolation")


def check_split(split: Any) -> str:
    """``split`` if it is "train" or "test", else one PadimError line.

    >>> check_split("val")
    Traceback (most recent call last):
    padim_utils.errors.PadimError: unknown split 'val': expected 'train' or 'test'
    """
    if split not in SPLITS:
        raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
    return split


def changed_keywords(function, **keywords: Any) -> dict[str, Any]:
    """The ``keywords`` whose values differ from ``function``'s defaults for them: those a caller changed.

    >>> def resize(image_size=256, crop=224): ...
    >>> changed_keywords(resize, image_size=256, crop=None)
    {'crop': None}
    """
    params = inspect.signature(function).parameters
    return {k: v for k, v in keywords.items() if k not in params or v != params[k].default}


class ImageDataset(torch.utils.data.Dataset):
    """The base of every dataset: its geometry, its lists of files and the item each index gives.

    ``geometry``: a :class:`padim_utils.config.Geometry`; or, without it, the ``image_size``, ``crop``
    and ``interpolation`` keywords (a subclass's defaults are its own). Giving both is an error where
    they disagree.
    """

    #: True: items hold images at :attr:`out_size`. False: at their decoded size, for
    #: `padim_utils.datasets.images.resize_crop_images` on the device (``Padim(resize_on_device=True)``
    #: sets it on a copy). Datasets whose items are not resized image files (STC's video frames,
    #: Rd-MVTec's rotated crops) always resize on load.
    resize_on_load: bool = True

    def __init__(self, geometry: Geometry | None = None, *, image_size: int = 256, crop: int | None = 224,
                 interpolation: str = "bicubic") -> None:
        self.geometry = self._checked_geometry(geometry, image_size=image_size, crop=crop,
                                               interpolation=interpolation)
        self.paths: list[str] = []
        self.labels: list[int] = []
        self.defect_types: list[str] = []
        self.mask_paths: list[str | None] = []

    def _checked_geometry(self, geometry: Geometry | None, **keywords: Any) -> Geometry:
        if geometry is None:
            return Geometry(**keywords)
        if not isinstance(geometry, Geometry):
            raise PadimError(f"geometry must be a padim_utils.config.Geometry, got {type(geometry).__name__}")
        given = changed_keywords(type(self).__init__, **keywords)  # against this dataset's own defaults
        clash = [k for k, v in given.items() if v != getattr(geometry, k)]
        if clash:
            raise PadimError(f"give the geometry either as geometry= or as {', '.join(GEOMETRY_KEYWORDS)}: "
                             f"geometry={geometry} but {', '.join(f'{k}={keywords[k]!r}' for k in clash)}")
        return geometry

    # -- the geometry -------------------------------------------------------- #
    @property
    def image_size(self) -> int:
        """Side of the square resize."""
        return self.geometry.image_size

    @property
    def crop(self) -> int | None:
        """Side of the centre crop (None: no crop)."""
        return self.geometry.crop

    @property
    def interpolation(self) -> str:
        """How images are resized: "bicubic" or "bilinear" (masks: always nearest)."""
        return self.geometry.interpolation

    @property
    def out_size(self) -> int:
        """Side of the returned square images: ``crop`` if set, else ``image_size``."""
        return self.geometry.out_size

    # -- the lists ----------------------------------------------------------- #
    def add_item(self, path: str | os.PathLike, label: int, defect_type: str,
                 mask: str | os.PathLike | None = None) -> None:
        """Append one image (and its mask file, None for none) to the lists."""
        self.paths.append(str(path))
        self.labels.append(label)
        self.defect_types.append(defect_type)
        self.mask_paths.append(None if mask is None else str(mask))

    def add_defect(self, path: str | os.PathLike, defect_type: str, mask: str | os.PathLike | None,
                   expected: str | os.PathLike) -> None:
        """Append a defective image and its mask file; PadimError where the mask is missing (None, or no such
        file), saying where it was ``expected``."""
        if mask is None or not Path(mask).is_file():
            raise PadimError(f"missing mask for defect image {path}: expected {expected}")
        self.add_item(path, 1, defect_type, mask)

    def __len__(self) -> int:
        return len(self.paths)

    # -- reading ------------------------------------------------------------- #
    def load_image(self, path: str | os.PathLike, exif_transpose: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
        """(image (3, S, S) uint8, original (width, height)) of an image file, through the decoded-image
        cache when one is set (`imagecache`); at the original size when :attr:`resize_on_load` is False."""
        if not self.resize_on_load:
            img = load_rgb(path, exif_transpose=exif_transpose)
            return image_tensor(img), img.size
        return load_resized(path, self.image_size, self.crop, self.interpolation, exif_transpose)

    def resize_image(self, img: Image.Image) -> torch.Tensor:
        """An RGB image at its own size -> uint8 (3, S, S), resized and cropped with this geometry."""
        return image_tensor(resize_crop(img, self.image_size, self.crop, resample_filter(self.interpolation)))

    def open_mask(self, mask_path: str | os.PathLike, image_path: str | os.PathLike,
                  image_size: tuple[int, int]) -> Image.Image:
        """The 0/1 mask image of an image file of (width, height) ``image_size``; PadimError where the
        mask's size differs."""
        mask = load_mask(mask_path)
        _check_mask_size(mask_path, mask.size, image_path, image_size)
        return mask

    def resize_mask(self, mask: Image.Image | None) -> torch.Tensor:
        """A 0/1 mask image at its image's size -> uint8 (S, S), resized with nearest and cropped as the
        images are; None -> all zero."""
        s = self.out_size
        if mask is None:
            return torch.zeros((s, s), dtype=torch.uint8)
        return mask_tensor(resize_crop(mask, self.image_size, self.crop, Image.NEAREST))

    def item(self, index: int, image: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        """The item dict of ``index`` with its ``image`` and ``mask`` tensors."""
        return {"image": image, "mask": mask, "label": self.labels[index], "defect_type": self.defect_types[index],
                "path": self.paths[index]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]  # IndexError for out-of-range, as a list
        image, size = self.load_image(Path(path))
        mask_path = self.mask_paths[index]
        mask = None if mask_path is None else self.open_mask(mask_path, path, size)
        return self.item(index, image, self.resize_mask(mask))

    def describe(self, fields: dict[str, Any], after: dict[str, Any] | None = None) -> str:
        """``Name(<fields>, n=<len>, image_size=..., crop=..., interpolation=..., <after>)``: a dataset's repr."""
        fields = {**fields, "n": len(self), **self.geometry.as_kwargs(), **(after or {})}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def check_files(self) -> None:
        """Check every image and mask file before any model runs (milliseconds a file, see
        :func:`padim_utils.datasets.images.check_image_file`): each decodes, and each mask has its image's
        size. PadimError naming the first file at fault; what ``__getitem__`` would find only during the
        fit or the prediction."""
        for path, mask_path in zip(self.paths, self.mask_paths):
            size = check_image_file(path)
            if mask_path is not None:
                _check_mask_size(mask_path, check_image_file(mask_path, "mask"), path, size)


def _check_mask_size(mask_path, mask_size: tuple[int, int], path, size: tuple[int, int]) -> None:
    if mask_size != size:
        raise PadimError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {path} is "
                         f"{size[0]}x{size[1]}")


class CategoryDataset(ImageDataset):
    """One split ("train" or "test") of one category of a dataset on disk: :attr:`root`, :attr:`category`,
    :attr:`split` and :attr:`category_dir` (the category's folder; ``root`` where the files are listed
    rather than foldered by category). The split is checked first, then the geometry."""

    def __init__(self, root: str | os.PathLike, category: str, split: str, geometry: Geometry | None = None, *,
                 image_size: int = 256, crop: int | None = 224, interpolation: str = "bicubic") -> None:
        check_split(split)
        super().__init__(geometry, image_size=image_size, crop=crop, interpolation=interpolation)
        self.root = Path(root)
        self.category = str(category)
        self.split = split
        self.category_dir = self.root
