"""MVTec AD's folder layout, the one the other datasets follow, and your own folder of images.

MVTec AD layout (one folder per category)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect_type>/*.png          (defect_type "good" = normal)
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png   (none for test/good)

Both datasets here read their files as every dataset does (:mod:`padim_utils.datasets.images`: the
geometry, image modes, EXIF orientation, masks as ``value > 0``) and give the items of
:class:`padim_utils.datasets.base.ImageDataset`. Build them with the model config's geometry::

    train = MVTecDataset("data/mvtec_ad", "bottle", "train", geometry=cfg.geometry)
    train = MVTecDataset("data/mvtec_ad", "bottle", "train", image_size=256, crop=224)   # the same
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from ..config import Geometry
from ..errors import PadimError
from .base import CategoryDataset, ImageDataset
from .images import IMAGE_EXTENSIONS, find_image, list_images, list_other_files, subfolders

__all__ = [
    "MASK_SUFFIX",
    "MVTecDataset",
    "ImageFolderDataset",
    "data_home",
    "list_categories",
]

#: Mask file name: ``<image stem>`` + this suffix, under ``ground_truth/<defect_type>``.
MASK_SUFFIX = "_mask"


def data_home() -> Path:
    """Where datasets live: ``$PADIM_DATA`` if set (and not empty), else ``./data``.

    ``./data`` is relative to the *current working directory*; the returned path is
    absolute so that a later ``os.chdir`` does not change its meaning.
    """
    env = os.environ.get("PADIM_DATA", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd() / "data"


def list_categories(root: str | os.PathLike) -> list[str]:
    """Sub-folders of ``root`` that look like MVTec categories (have ``train/`` or ``test/``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        name
        for name in subfolders(root)
        if (root / name / "train").is_dir() or (root / name / "test").is_dir()
    ]


class MVTecDataset(CategoryDataset):
    """One split of one MVTec AD category.

    Parameters
    ----------
    root:
        Folder holding the category folders (e.g. ``data/mvtec_ad``).
    category:
        Category folder name, e.g. ``"bottle"``.
    split:
        ``"train"`` (only ``train/good``) or ``"test"`` (every ``test/<defect_type>``).
    image_size, crop, interpolation (or geometry):
        Square resize (``"bicubic"`` or ``"bilinear"``) then optional centre crop
        (see :mod:`padim_utils.datasets.images`).

    Items are dicts: ``image`` uint8 ``(3, S, S)``, ``mask`` uint8 ``(S, S)`` in {0, 1}
    (all zero for good images), ``label`` int (0 good, 1 defect), ``defect_type`` str,
    ``path`` str; ``S`` is :attr:`out_size`.

    The folder layout is checked when the dataset is built (folders present, images
    present, one mask per defective test image); the image files themselves are only
    decoded in ``__getitem__`` (or all at once, quickly, by :meth:`check_files`).
    Subclasses for other layouts (BTAD) override :meth:`scan_train` and :meth:`scan_test`.
    """

    def __init__(self, root: str | os.PathLike, category: str, split: str = "train", image_size: int = 256,
                 crop: int | None = 224, interpolation: str = "bicubic", *, geometry: Geometry | None = None) -> None:
        super().__init__(root, category, split, geometry, image_size=image_size, crop=crop, interpolation=interpolation)
        if not self.root.exists():
            raise PadimError(f"dataset root folder not found: {self.root}")
        if not self.root.is_dir():
            raise PadimError(f"dataset root is not a folder: {self.root}")
        self.category_dir = self.root / self.category
        if not self.category or not self.category_dir.is_dir():
            available = list_categories(self.root)
            listed = ", ".join(available) if available else "none (no sub-folder has train/ or test/)"
            raise PadimError(
                f"category {self.category!r} not found in {self.root}; available categories: {listed}"
            )
        if split == "train":
            self.scan_train()
        else:
            self.scan_test()

    # -- layout scanning ---------------------------------------------------- #
    def scan_train(self) -> None:
        """Find the training images (a subclass for another layout overrides this and `scan_test`)."""
        self.add_good_folder(self.category_dir / "train" / "good",
                         "expected <root>/<category>/train/good with normal images")

    def add_good_folder(self, folder: Path, expected: str) -> None:
        """Every image of ``folder`` as a normal one; PadimError where there is no folder or no image."""
        if not folder.is_dir():
            raise PadimError(f"missing folder {folder} ({expected})")
        images = list_images(folder)
        if not images:
            raise PadimError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        for p in images:
            self.add_item(p, 0, "good")

    def scan_test(self) -> None:
        test = self.category_dir / "test"
        if not test.is_dir():
            raise PadimError(f"missing folder {test} (expected <root>/<category>/test/<defect_type>)")
        gt = self.category_dir / "ground_truth"
        for defect_type in subfolders(test):
            for p in list_images(test / defect_type):
                if defect_type == "good":
                    self.add_item(p, 0, defect_type)
                    continue
                mask = find_image([gt / defect_type], [f"{p.stem}{MASK_SUFFIX}"])
                self.add_defect(p, defect_type, mask, expected=gt / defect_type / f"{p.stem}{MASK_SUFFIX}.png")
        if not self.paths:
            raise PadimError(
                f"no images in {test}/<defect_type>/ (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )

    def __repr__(self) -> str:
        return self.describe({"root": str(self.root), "category": self.category, "split": self.split})


class ImageFolderDataset(ImageDataset):
    """Your own images: every image file in a folder (sorted), or one image file.

    Same geometry and item dict as :class:`MVTecDataset`, with ``label`` -1
    (unknown), an all-zero ``mask`` and ``defect_type`` ``"unknown"``. Images are read
    as every loader reads them (:func:`padim_utils.datasets.images.load_rgb`, EXIF
    orientation applied).

    A folder's files that are not images by their name (``.webp``, ``.gif``, ...) are listed in
    :attr:`skipped`, and so are those named in ``exclude`` (file names of the folder, e.g. the heat
    maps an earlier ``padim predict`` wrote there), which are left out.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_size: int = 256,
        crop: int | None = 224,
        recursive: bool = False,
        interpolation: str = "bicubic",
        *,
        geometry: Geometry | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        super().__init__(geometry, image_size=image_size, crop=crop, interpolation=interpolation)
        self.root = Path(path)
        self.skipped: list[Path] = []
        if not self.root.exists():
            if os.path.islink(self.root):
                raise PadimError(f"input path is a broken link or a symlink loop: {self.root}")
            raise PadimError(f"input path not found: {self.root}")
        if self.root.is_dir():
            files = list_images(self.root, recursive=recursive)
            self.skipped = [p for p in files if p.name in exclude]
            files = [p for p in files if p.name not in exclude]
            if not recursive:
                self.skipped = sorted(self.skipped + list_other_files(self.root))
            if not files:
                raise PadimError(
                    f"no images in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)})"
                )
        else:
            if not self.root.name.lower().endswith(IMAGE_EXTENSIONS):
                raise PadimError(
                    f"not an image file: {self.root} (expected one of {', '.join(IMAGE_EXTENSIONS)})"
                )
            files = [self.root]
        for p in files:
            self.add_item(p, -1, "unknown")

    def __repr__(self) -> str:
        return self.describe({"path": str(self.root)})
