"""Every dataset PaDiM is run on, behind one factory: MVTec AD, Rd-MVTec AD, STC, BTAD, VisA, your own folders.

    train = open_dataset("btad", "data/btad", "01", "train", image_size=256, crop=224, interpolation="bicubic")

All of them give the items of :class:`padim_utils.data.MVTecDataset` (``image``
uint8 (3, S, S), ``mask`` uint8 (S, S) in {0, 1}, ``label``, ``defect_type``,
``path``) and its attributes (``paths``, ``labels``, ``defect_types``,
``image_size``, ``crop``, ``interpolation``, ``out_size``), plus ``has_masks`` (False when there is no
ground truth to compute pixel metrics with).

Layouts
-------
mvtec     ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``
rd-mvtec  the MVTec AD layout, randomly rotated and cropped (:mod:`padim_utils.rd_mvtec`)
stc       ShanghaiTech Campus (:mod:`padim_utils.stc`); the "category" is the scene id
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
from typing import Any, Sequence

from .data import (
    IMAGE_EXTENSIONS,
    MVTecDataset,
    _check_geometry,
    _check_interpolation,
    _subfolders,
    data_home,
    list_categories,
    list_images,
)
from .errors import PadimError

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

#: MVTec AD texture categories, as the paper's tables group them.
MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
#: MVTec AD object categories.
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
                 "transistor", "zipper")
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
    """MVTec AD categories: all 15 (``group=None``), ``"textures"`` or ``"objects"``."""
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


def _find_file(folders: Sequence[Path], stems: Sequence[str]) -> Path | None:
    for folder in folders:
        for stem in stems:
            for ext in IMAGE_EXTENSIONS:
                for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                    if cand.is_file():
                        return cand
    return None


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

    def _scan_train(self) -> None:
        ok = self.category_dir / "train" / "ok"
        if not ok.is_dir():
            raise PadimError(f"missing folder {ok} (expected <root>/<product>/train/ok with normal images)")
        images = list_images(ok)
        if not images:
            raise PadimError(f"no images in {ok} (looked for {_looked_for()})")
        for p in images:
            self._add(p, 0, "good", None)

    def _scan_test(self) -> None:
        test = self.category_dir / "test"
        if not test.is_dir():
            raise PadimError(f"missing folder {test} (expected <root>/<product>/test/ok and test/ko)")
        for p in list_images(test / "ok") if (test / "ok").is_dir() else []:
            self._add(p, 0, "good", None)
        gt = self.category_dir / "ground_truth" / "ko"
        for p in list_images(test / "ko") if (test / "ko").is_dir() else []:
            mask = _find_file([gt], [p.stem])
            if mask is None:
                raise PadimError(f"missing mask for defect image {p}: expected {gt / p.stem}.png (or .bmp)")
            self._add(p, 1, "ko", mask)
        if not self.paths:
            raise PadimError(f"no images in {test}/ok or {test}/ko (looked for {_looked_for()})")

    def __repr__(self) -> str:
        return (f"BTADDataset(root={str(self.root)!r}, product={self.category!r}, split={self.split!r}, "
                f"n={len(self)}, image_size={self.image_size}, crop={self.crop}, "
                f"interpolation={self.interpolation!r})")


# --------------------------------------------------------------------------- #
# datasets given as lists of files (VisA, your own folders)
# --------------------------------------------------------------------------- #
class _ListedDataset(MVTecDataset):
    """MVTecDataset's items and checks for files listed by a subclass (no MVTec folder scan)."""

    has_masks = True

    def _start(self, root: Path, category: str, split: str, image_size: Any, crop: Any, interpolation: Any) -> None:
        if split not in ("train", "test"):
            raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
        self.image_size, self.crop = _check_geometry(image_size, crop)
        self.interpolation = _check_interpolation(interpolation)
        self.root, self.category, self.split = Path(root), str(category), split
        self.category_dir = self.root
        self.paths, self.labels, self.defect_types, self.mask_paths = [], [], [], []


class VisADataset(_ListedDataset):
    """One split of one VisA object, as the official 1-class split file lists it.

    ``split_csv`` defaults to ``<root>/split_csv/1cls.csv``. Rows labelled
    ``normal`` get label 0 / ``"good"``, ``anomaly`` rows label 1 / ``"anomaly"``
    and their mask (pixel value > 0 is anomalous, see the module docstring).
    """

    def __init__(self, root: str | os.PathLike, category: str, split: str = "train", image_size: int = 256,
                 crop: int | None = 224, split_csv: str | os.PathLike | None = None,
                 interpolation: str = "bicubic") -> None:
        self._start(Path(root), category, split, image_size, crop, interpolation)
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
                self._add(image, 0, "good", None)
                continue
            if not r["mask"]:
                raise PadimError(f"{self.split_csv} line {n}: anomalous image {image} has no mask")
            mask = self.root / r["mask"]
            if not mask.is_file():
                raise PadimError(f"missing mask for defect image {image}: expected {mask}")
            self._add(image, 1, "anomaly", mask)
        if not self.paths:
            raise PadimError(f"no {split} rows for object {self.category!r} in {self.split_csv}")

    def __repr__(self) -> str:
        return (f"VisADataset(root={str(self.root)!r}, object={self.category!r}, split={self.split!r}, "
                f"n={len(self)}, image_size={self.image_size}, crop={self.crop}, "
                f"interpolation={self.interpolation!r})")


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


class FolderDataset(_ListedDataset):
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
                 crop: int | None = 224, name: str = "folder", interpolation: str = "bicubic") -> None:
        self._start(Path(normal_dir or "."), name, split, image_size, crop, interpolation)
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
                self._add(p, 0, "good", None)
            return
        folder = self._need_dir(self.test_dir, "test_dir")
        subs = _subfolders(folder)
        if not subs:
            raise PadimError(f"test_dir {folder} has no sub-folders: put normal test images in {folder}/good and "
                             f"anomalous ones in {folder}/<defect>")
        defects = [sub for sub in subs if sub.lower() not in NORMAL_FOLDERS]
        for sub in subs:
            normal = sub not in defects
            masks = None if normal or self.mask_dir is None else self._mask_folder(sub, defects)
            for p in list_images(folder / sub):
                if normal:
                    self._add(p, 0, "good", None)
                    continue
                mask = None
                if masks is not None:
                    mask = _find_file([masks], [p.stem, f"{p.stem}_mask"])
                    if mask is None:
                        raise PadimError(f"missing mask for defect image {p}: expected {masks / p.stem}[_mask].png "
                                         "(give no mask_dir if your data has no pixel masks)")
                self._add(p, 1, sub, mask)
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
        return (f"FolderDataset(normal_dir={str(self.normal_dir)!r}, test_dir={str(self.test_dir)!r}, "
                f"mask_dir={str(self.mask_dir)!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size}, crop={self.crop}, interpolation={self.interpolation!r})")


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


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise PadimError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def open_dataset(name: str, root: str | os.PathLike | None, category: str, split: str = "train",
                 image_size: int = 256, crop: int | None = 224, interpolation: str = "bicubic", **options: Any):
    """One split of one category of dataset ``name`` (see :data:`DATASET_NAMES` and the module docstring).

    ``root`` None means the dataset's folder under the data home (:func:`default_root`).
    ``image_size``, ``crop``, ``interpolation``: the geometry, as the model config's
    (``open_dataset(..., image_size=cfg.image_size, crop=cfg.crop, interpolation=cfg.interpolation)``).
    Options: rd-mvtec ``seed``; stc ``frames_per_video`` (training frames per video,
    None = all) and ``train_codec`` ("match" or "none", see `padim_utils.stc.STCDataset`); visa ``split_csv``; folder ``normal_dir``, ``test_dir``, ``mask_dir``
    (``root`` and ``category`` only name it). Options left at None are ignored.
    """
    _check_name(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise PadimError(f"option(s) {', '.join(unknown)} do not apply to dataset {name} (its options: {allowed})")
    geometry = {"image_size": image_size, "crop": crop, "interpolation": interpolation}
    if name == "folder":
        return FolderDataset(split=split, name=category or "folder", **geometry, **options)
    root = default_root(name) if root is None else Path(root)
    if name == "mvtec":
        return MVTecDataset(root, category, split, **geometry)
    if name == "rd-mvtec":
        from .rd_mvtec import RdMVTecDataset

        return RdMVTecDataset(root, category, split, **geometry, **options)
    if name == "stc":
        from .stc import STCDataset

        return STCDataset(root, category, split, **geometry, **options)
    if name == "btad":
        return BTADDataset(root, category, split, **geometry)
    return VisADataset(root, category, split, **geometry, **options)


def dataset_categories(name: str, root: str | os.PathLike | None = None, **options: Any) -> list[str]:
    """The categories (STC: scenes, BTAD: products, VisA: objects) found under ``root``."""
    _check_name(name)
    if name == "folder":
        return ["folder"]
    root = default_root(name) if root is None else Path(root)
    if name == "stc":
        from .stc import stc_scenes

        return stc_scenes(root)
    if name == "visa":
        csv_path = options.get("split_csv") or root / VISA_SPLIT_CSV
        return sorted({r["object"] for r in _read_visa_csv(Path(csv_path))})
    return list_categories(root)
