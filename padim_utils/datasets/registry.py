"""Every dataset PaDiM is run on, behind one factory: MVTec AD, Rd-MVTec AD, STC, BTAD, VisA, your own folders.

    train = open_dataset("btad", "data/btad", "01", "train", image_size=256, crop=224, interpolation="bicubic")

All of them are a :class:`padim_utils.datasets.base.ImageDataset`: its items (``image``
uint8 (3, S, S), ``mask`` uint8 (S, S) in {0, 1}, ``label``, ``defect_type``,
``path``) and its attributes (``paths``, ``labels``, ``defect_types``, ``geometry``,
``image_size``, ``crop``, ``interpolation``, ``out_size``); BTAD, VisA and folders have ``has_masks``
(False when there is no ground truth to compute pixel metrics with).

Layouts
-------
mvtec     ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``
rd-mvtec  the MVTec AD layout, randomly rotated and cropped (:mod:`padim_utils.datasets.rd_mvtec`)
stc       ShanghaiTech Campus (:mod:`padim_utils.datasets.stc`); the "category" is the scene id
btad      ``<root>/<product>/{train/ok, test/ok, test/ko, ground_truth/ko/<stem>.png|.bmp}``, products 01-03
visa      ``<root>/split_csv/1cls.csv`` (columns object,split,label,image,mask; label normal/anomaly) and
          the files it names, relative to ``<root>``: ``<object>/Data/Images/{Normal,Anomaly}/*.JPG``,
          ``<object>/Data/Masks/Anomaly/*.png``. VisA masks hold 0 for normal pixels and non-zero values
          for anomalous ones (not 255: the official ``prepare_data.py`` binarises them with ``!= 0``);
          here ``value > 0`` is anomalous.
folder    your own images: ``normal_dir`` (training), ``test_dir/good/`` (also ``normal/`` or ``ok/``) and
          ``test_dir/<defect>/``, optional ``mask_dir/<defect>/<stem>[_mask].<ext>`` (``mask_dir/<stem>...``
          where there is a single defect folder)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ..config import Geometry
from ..errors import PadimError
from ..paper import MVTEC_OBJECTS, MVTEC_TEXTURES
from .base import CategoryDataset, changed_keywords
from .images import IMAGE_EXTENSIONS, find_image, list_images, subfolders
from .mvtec import MVTecDataset, data_home, list_categories
from .rd_mvtec import RdMVTecDataset
from .stc import STCDataset, stc_scenes

__all__ = [
    "MVTEC_TEXTURES",
    "MVTEC_OBJECTS",
    "MVTEC_CATEGORIES",
    "BTAD_PRODUCTS",
    "VISA_CATEGORIES",
    "DATASET_NAMES",
    "DATA_FOLDERS",
    "BTADDataset",
    "VisADataset",
    "FolderDataset",
    "mvtec_categories",
    "open_dataset",
    "dataset_categories",
    "default_root",
]

# MVTEC_TEXTURES and MVTEC_OBJECTS (as the paper's tables group them) come from padim_utils.paper.
#: All 15 MVTec AD categories, textures first (the paper's table order).
MVTEC_CATEGORIES = MVTEC_TEXTURES + MVTEC_OBJECTS
BTAD_PRODUCTS = ("01", "02", "03")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
                   "pcb2", "pcb3", "pcb4", "pipe_fryum")
DATASET_NAMES = ("mvtec", "rd-mvtec", "stc", "btad", "visa", "folder")
#: Folder of each dataset under the data home (``$PADIM_DATA``, default ``./data``).
DATA_FOLDERS = {"mvtec": "mvtec_ad", "rd-mvtec": "mvtec_ad", "stc": "stc", "btad": "btad", "visa": "visa"}
VISA_SPLIT_CSV = Path("split_csv") / "1cls.csv"
NORMAL_FOLDERS = ("good", "normal", "ok")


def mvtec_categories(group: str | None = None) -> tuple[str, ...]:
    """MVTec AD categories: all 15 (``group=None``), ``"textures"`` or ``"objects"``.

    >>> mvtec_categories("textures")
    ('carpet', 'grid', 'leather', 'tile', 'wood')
    """
    groups = {None: MVTEC_CATEGORIES, "textures": MVTEC_TEXTURES, "objects": MVTEC_OBJECTS}
    try:
        return groups[group]
    except KeyError:
        raise PadimError(f"unknown MVTec AD group {group!r}: expected None, 'textures' or 'objects'") from None


def default_root(name: str) -> Path:
    """Where dataset ``name`` lives under the data home, e.g. ``data/btad``."""
    if name not in DATA_FOLDERS:
        raise PadimError(f"dataset {name!r} has no default folder; give its root")
    return data_home() / DATA_FOLDERS[name]


def _looked_for() -> str:
    return ", ".join(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- #
# BTAD
# --------------------------------------------------------------------------- #
class BTADDataset(MVTecDataset):
    """One split of one BTAD product (``"01"``, ``"02"``, ``"03"``).

    ``train/ok`` are the training images; ``test/ok`` (label 0, defect_type
    ``"good"``) and ``test/ko`` (label 1, ``"ko"``) the test images; the mask of
    ``test/ko/<stem>.<ext>`` is ``ground_truth/ko/<stem>.png`` or ``.bmp`` (the
    products differ). Geometry and items as :class:`MVTecDataset`.
    """

    has_masks = True

    def scan_train(self) -> None:
        self.add_good_folder(self.category_dir / "train" / "ok",
                             "expected <root>/<product>/train/ok with normal images")

    def scan_test(self) -> None:
        test = self.category_dir / "test"
        if not test.is_dir():
            raise PadimError(f"missing folder {test} (expected <root>/<product>/test/ok and test/ko)")
        for p in list_images(test / "ok") if (test / "ok").is_dir() else []:
            self.add_item(p, 0, "good")
        gt = self.category_dir / "ground_truth" / "ko"
        for p in list_images(test / "ko") if (test / "ko").is_dir() else []:
            self.add_defect(p, "ko", find_image([gt], [p.stem]), expected=f"{gt / p.stem}.png (or .bmp)")
        if not self.paths:
            raise PadimError(f"no images in {test}/ok or {test}/ko (looked for {_looked_for()})")

    def __repr__(self) -> str:
        return self.describe({"root": str(self.root), "product": self.category, "split": self.split})


# --------------------------------------------------------------------------- #
# datasets given as lists of files (VisA, your own folders)
# --------------------------------------------------------------------------- #
class VisADataset(CategoryDataset):
    """One split of one VisA object, as the official 1-class split file lists it.

    ``split_csv`` defaults to ``<root>/split_csv/1cls.csv``. Rows labelled
    ``normal`` get label 0 / ``"good"``, ``anomaly`` rows label 1 / ``"anomaly"``
    and their mask (pixel value > 0 is anomalous, see the module docstring).
    """

    has_masks = True

    def __init__(self, root: str | os.PathLike, category: str, split: str = "train", image_size: int = 256,
                 crop: int | None = 224, split_csv: str | os.PathLike | None = None,
                 interpolation: str = "bicubic", *, geometry: Geometry | None = None) -> None:
        super().__init__(root, category, split, geometry, image_size=image_size, crop=crop,
                         interpolation=interpolation)
        if not self.root.is_dir():
            raise PadimError(f"dataset root folder not found: {self.root}")
        self.split_csv = Path(split_csv) if split_csv is not None else self.root / VISA_SPLIT_CSV
        rows = _read_visa_csv(self.split_csv)
        objects = sorted({r["object"] for r in rows})
        if self.category not in objects:
            raise PadimError(f"object {self.category!r} not in {self.split_csv}; available: {', '.join(objects)}")
        _check_no_overlap(rows, self.category, self.split_csv)
        for n, r in enumerate(rows, start=2):
            if r["object"] != self.category or r["split"] != split:
                continue
            if r["label"] not in ("normal", "anomaly"):
                raise PadimError(f"{self.split_csv} line {n}: label must be normal or anomaly, got {r['label']!r}")
            image = self.root / r["image"]
            if not image.is_file():
                raise PadimError(f"image listed in {self.split_csv} line {n} not found: {image}")
            if r["label"] == "normal":
                self.add_item(image, 0, "good")
                continue
            if not r["mask"]:
                raise PadimError(f"{self.split_csv} line {n}: anomalous image {image} has no mask")
            self.add_defect(image, "anomaly", self.root / r["mask"], expected=self.root / r["mask"])
        if not self.paths:
            raise PadimError(f"no {split} rows for object {self.category!r} in {self.split_csv}")

    def __repr__(self) -> str:
        return self.describe({"root": str(self.root), "object": self.category, "split": self.split})


def _check_no_overlap(rows: list[dict[str, str]], category: str, path: Path) -> None:
    """PadimError where the split file lists an image of ``category`` both as train and as test: the model
    would be evaluated on images it was fitted on (line numbers count the header as line 1)."""
    first: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for n, r in enumerate(rows, start=2):
        if r["object"] == category and r["split"] in first:
            first[r["split"]].setdefault(os.path.normpath(r["image"]), n)
    both = sorted(set(first["train"]) & set(first["test"]), key=lambda k: first["test"][k])
    if both:
        image = both[0]
        raise PadimError(f"{path} lists {len(both)} image(s) of {category!r} both as train and as test, e.g. {image} "
                         f"(lines {first['train'][image]} and {first['test'][image]}): a test on training images "
                         "would say nothing; fix the split file")


def _read_visa_csv(path: Path) -> list[dict[str, str]]:
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is dropped, not read as part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            need = ["object", "split", "label", "image", "mask"]
            if not set(need) <= set(fields):
                raise PadimError(f"{path} must have the columns {','.join(need)}, has {','.join(fields) or 'none'}")
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except FileNotFoundError:
        raise PadimError(f"VisA split file not found: {path} (expected <root>/{VISA_SPLIT_CSV.as_posix()})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PadimError(f"cannot read VisA split file {path}: {' '.join(str(exc).split())}") from None


class FolderDataset(CategoryDataset):
    """Your own images.

    ``split="train"``: every image in ``normal_dir``. ``split="test"``: the
    sub-folders of ``test_dir``: ``good/`` (or ``normal/``, ``ok/``) hold normal
    images (label 0), every other sub-folder anomalous ones (label 1, defect_type
    the folder name). With ``mask_dir``, the mask of ``test_dir/<defect>/<stem>.<ext>``
    is ``mask_dir/<defect>/<stem>[_mask].<ext>`` (any image format, ``value > 0`` is
    anomalous); masks directly in ``mask_dir`` are accepted only where ``test_dir`` has
    a single defect folder, so a defect never borrows another's mask of the same name.
    A defect image without its mask is an error; without ``mask_dir`` (no pixel masks)
    :attr:`has_masks` is False and only image-level metrics can be computed.
    """

    def __init__(self, normal_dir: str | os.PathLike | None = None, test_dir: str | os.PathLike | None = None,
                 mask_dir: str | os.PathLike | None = None, split: str = "train", image_size: int = 256,
                 crop: int | None = 224, name: str = "folder", interpolation: str = "bicubic", *,
                 geometry: Geometry | None = None) -> None:
        super().__init__(Path(normal_dir or "."), name, split, geometry, image_size=image_size, crop=crop,
                         interpolation=interpolation)
        self.normal_dir = None if normal_dir is None else Path(normal_dir)
        self.test_dir = None if test_dir is None else Path(test_dir)
        self.mask_dir = None if mask_dir is None else Path(mask_dir)
        self.has_masks = self.mask_dir is not None
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            raise PadimError(f"mask_dir not found: {self.mask_dir}")
        if split == "train":
            folder = self._need_dir(self.normal_dir, "normal_dir")
            images = list_images(folder)
            if not images:
                raise PadimError(f"no images in normal_dir {folder} (looked for {_looked_for()})")
            for p in images:
                self.add_item(p, 0, "good")
            return
        folder = self._need_dir(self.test_dir, "test_dir")
        subs = subfolders(folder)
        if not subs:
            raise PadimError(f"test_dir {folder} has no sub-folders: put normal test images in {folder}/good and "
                             f"anomalous ones in {folder}/<defect>")
        defects = [sub for sub in subs if sub.lower() not in NORMAL_FOLDERS]
        for sub in subs:
            normal = sub not in defects
            masks = None if normal or self.mask_dir is None else self._mask_folder(sub, defects)
            for p in list_images(folder / sub):
                if normal:
                    self.add_item(p, 0, "good")
                    continue
                if masks is None:
                    self.add_item(p, 1, sub)
                    continue
                self.add_defect(p, sub, find_image([masks], [p.stem, f"{p.stem}_mask"]),
                                expected=f"{masks / p.stem}[_mask].png (give no mask_dir if your data has no pixel masks)")
        if not self.paths:
            raise PadimError(f"no images in the sub-folders of test_dir {folder} (looked for {_looked_for()})")

    def _mask_folder(self, defect: str, defects: list[str]) -> Path:
        """Where the masks of ``test_dir/<defect>`` are: ``mask_dir/<defect>``; ``mask_dir`` itself only when
        ``test_dir`` has a single defect folder (else two defects' images of the same name would share a mask)."""
        own = self.mask_dir / defect
        if own.is_dir():
            return own
        if len(defects) == 1:
            return self.mask_dir
        raise PadimError(f"no mask folder for defect {defect!r}: expected {own} (with several defect folders, "
                         f"{', '.join(defects)}, each has its masks in mask_dir/<defect>; give no mask_dir if your "
                         "data has no pixel masks)")

    @staticmethod
    def _need_dir(path: Path | None, option: str) -> Path:
        if path is None:
            raise PadimError(f"{option} is required for this split of the folder dataset")
        if not path.is_dir():
            raise PadimError(f"{option} not found: {path}")
        return path

    def __repr__(self) -> str:
        return self.describe({"normal_dir": str(self.normal_dir), "test_dir": str(self.test_dir),
                              "mask_dir": str(self.mask_dir), "split": self.split})


# --------------------------------------------------------------------------- #
# the factory
# --------------------------------------------------------------------------- #
_OPTIONS = {
    "mvtec": (),
    "rd-mvtec": ("seed",),
    "stc": ("frames_per_video", "train_codec"),
    "btad": (),
    "visa": ("split_csv",),
    "folder": ("normal_dir", "test_dir", "mask_dir"),
}


_CLASSES = {"mvtec": MVTecDataset, "rd-mvtec": RdMVTecDataset, "stc": STCDataset, "btad": BTADDataset,
            "visa": VisADataset}


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise PadimError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def open_dataset(name: str, root: str | os.PathLike | None, category: str, split: str = "train",
                 image_size: int = 256, crop: int | None = 224, interpolation: str = "bicubic", *,
                 geometry: Geometry | None = None, **options: Any):
    """One split of one category of dataset ``name`` (see :data:`DATASET_NAMES` and the module docstring).

    ``root`` None means the dataset's folder under the data home (:func:`default_root`).
    ``geometry`` (or ``image_size``, ``crop``, ``interpolation``): the model config's
    (``open_dataset(..., geometry=cfg.geometry)``).
    Options: rd-mvtec ``seed``; stc ``frames_per_video`` (training frames per video,
    None = all) and ``train_codec`` ("match" or "none", see `padim_utils.datasets.stc.STCDataset`); visa ``split_csv``; folder ``normal_dir``, ``test_dir``, ``mask_dir``
    (``root`` and ``category`` only name it). Options left at None are ignored.
    """
    _check_name(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise PadimError(f"option(s) {', '.join(unknown)} do not apply to dataset {name} (its options: {allowed})")
    sizes = {"image_size": image_size, "crop": crop, "interpolation": interpolation}
    if geometry is not None:  # with the keywords changed from this function's defaults: the dataset checks they agree
        sizes = dict(changed_keywords(open_dataset, **sizes), geometry=geometry)
    if name == "folder":
        return FolderDataset(split=split, name=category or "folder", **sizes, **options)
    root = default_root(name) if root is None else Path(root)
    return _CLASSES[name](root, category, split, **sizes, **options)


def dataset_categories(name: str, root: str | os.PathLike | None = None, **options: Any) -> list[str]:
    """The categories (STC: scenes, BTAD: products, VisA: objects) found under ``root``."""
    _check_name(name)
    if name == "folder":
        return ["folder"]
    root = default_root(name) if root is None else Path(root)
    if name == "stc":
        return stc_scenes(root)
    if name == "visa":
        csv_path = options.get("split_csv") or root / VISA_SPLIT_CSV
        return sorted({r["object"] for r in _read_visa_csv(Path(csv_path))})
    return list_categories(root)
