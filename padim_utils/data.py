"""Image loading for PaDiM: the MVTec AD folder layout and plain folders of images.

MVTec AD layout (one folder per category)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect_type>/*.png          (defect_type "good" = normal)
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png   (none for test/good)

Geometry
--------
Every image (and mask) goes through the same two steps:

1. a *square* resize to ``image_size x image_size`` (PIL; images with the
   dataset's ``interpolation``, ``"bicubic"`` or ``"bilinear"``, which PIL
   antialiases when shrinking; masks always with nearest), then
2. a centre crop to ``crop x crop`` when ``crop`` is not None, with the offset
   ``int(round((image_size - crop) / 2))`` (the same rounding as torchvision's
   ``CenterCrop``).

The paper resizes to 256 x 256 (bicubic) and centre-crops 224 x 224; anomalib's
PaDiM resizes to 256 x 256 (bilinear, antialiased) without a crop (``crop=None``).
Build a dataset with the model config's ``image_size``, ``crop`` and
``interpolation``: ``Padim`` refuses a dataset whose geometry or interpolation
differs from its config. The square resize differs from torchvision's
``Resize(256)`` (shorter side to 256, aspect ratio kept) only for non-square
images; MVTec AD images are all square, so on MVTec the two are the same, and for
your own non-square pictures the square resize keeps the whole field of view (at
the price of a slight stretch) instead of cutting the edges.

Pixel values stay ``uint8`` in ``[0, 255]``: ImageNet normalisation happens later,
on the device, so the loader stays cheap and the tensors stay small.

Image modes: everything is converted to 8-bit RGB. Grey (``L``, ``1``), palette
(``P``), ``CMYK`` ... use PIL's ``convert("RGB")``; alpha (``RGBA``, ``LA``) is
dropped (as ``Image.open(p).convert("RGB")`` does in torchvision/anomalib); 16-bit
grey (``I;16``) is scaled by 1/257 so 65535 becomes 255; 32-bit ``I`` is treated as
16-bit when it holds values above 255; float ``F`` in [0, 1] is scaled by 255.
EXIF orientation (phone photos) is applied to every image and mask, by every
loader: they all read through :func:`read_image` (via :func:`load_rgb`), so the
same file gives the same tensor whatever dataset class opens it.
Masks are binarised as ``value > 0`` (after conversion to one grey band), then
resized with nearest, so they only ever hold 0 and 1.

Every problem a user can fix raises :class:`padim_utils.errors.PadimError` with a
single line naming the file, folder or option at fault.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from padim_utils import imagecache
from padim_utils.config import INTERPOLATIONS, MIN_IMAGE_SIZE
from padim_utils.errors import PadimError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MVTecDataset",
    "ImageFolderDataset",
    "collate",
    "data_home",
    "list_categories",
    "list_images",
    "load_rgb",
    "load_mask",
    "load_resized",
    "read_image",
    "check_image_file",
    "resize_crop",
    "resize_crop_images",
    "crop_offset",
    "resample_filter",
]

#: File name endings recognised as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Mask file name: ``<image stem>`` + this suffix, under ``ground_truth/<defect_type>``.
MASK_SUFFIX = "_mask"

SPLITS = ("train", "test")

# What PIL raises on broken files: UnidentifiedImageError and "truncated" are
# OSError, a broken PNG chunk is SyntaxError, some decoders raise ValueError,
# struct.error or EOFError, and huge images raise DecompressionBombError.
_READ_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def data_home() -> Path:
    """Where datasets live: ``$PADIM_DATA`` if set (and not empty), else ``./data``.

    ``./data`` is relative to the *current working directory*; the returned path is
    absolute so that a later ``os.chdir`` does not change its meaning.
    """
    env = os.environ.get("PADIM_DATA", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd() / "data"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (see :data:`IMAGE_EXTENSIONS`), sorted by name.

    Hidden files (name starting with ".") are skipped. With ``recursive=True``
    sub-folders are searched too, sorted by relative path.
    """
    folder = Path(folder)
    if recursive:
        found = [p for p in folder.rglob("*") if p.is_file() and _is_image_name(p.name)]
        return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
    return [folder / n for n in sorted(_scan(folder, _is_image_name, "file"))]


def _scan(folder: Path, keep, kind: str) -> list[str]:
    """Names in `folder` accepted by `keep(name)` that are a `kind` ("file" or "dir"), following links.

    A link that cannot be followed (a symlink loop, a permission problem) is a PadimError naming it,
    not a traceback; a dangling link is skipped, like a missing file.
    """
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if keep(e.name)]
    except OSError as exc:
        raise PadimError(f"cannot list folder {folder}: {exc.strerror or _one_line(exc)}") from None
    names = []
    for e in entries:
        try:
            ok = e.is_file() if kind == "file" else e.is_dir()
        except OSError as exc:  # ELOOP: "Too many levels of symbolic links"
            raise PadimError(f"cannot read {Path(folder) / e.name}: {exc.strerror or _one_line(exc)}") from None
        if ok:
            names.append(e.name)
    return names


def _subfolders(folder: Path) -> list[str]:
    return sorted(_scan(folder, lambda name: not name.startswith("."), "dir"))


def list_categories(root: str | os.PathLike) -> list[str]:
    """Sub-folders of ``root`` that look like MVTec categories (have ``train/`` or ``test/``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        name
        for name in _subfolders(root)
        if (root / name / "train").is_dir() or (root / name / "test").is_dir()
    ]


def crop_offset(image_size: int, crop: int | None) -> int:
    """Top/left offset of the centre crop (torchvision's rounding)."""
    if crop is None or crop >= image_size:
        return 0
    return int(round((image_size - crop) / 2.0))


def resize_crop(img: Image.Image, image_size: int, crop: int | None, resample: int) -> Image.Image:
    """Square resize to ``image_size`` then centre crop to ``crop`` (if not None)."""
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), resample)
    if crop is not None and crop < image_size:
        off = crop_offset(image_size, crop)
        img = img.crop((off, off, off + crop, off + crop))
    return img


#: PIL's filter for each config `interpolation` (PIL antialiases both when shrinking).
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def _check_interpolation(interpolation: Any) -> str:
    if interpolation not in INTERPOLATIONS:
        raise PadimError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return interpolation


def resample_filter(interpolation: str) -> int:
    """PIL's resampling filter for `interpolation` ("bicubic" or "bilinear")."""
    return _RESAMPLE[_check_interpolation(interpolation)]


def _check_geometry(image_size: Any, crop: Any) -> tuple[int, int | None]:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise PadimError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if crop is not None:
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < MIN_IMAGE_SIZE:
            raise PadimError(f"crop must be an integer >= {MIN_IMAGE_SIZE} or None, got {crop!r}")
        if crop > image_size:
            raise PadimError(f"crop ({crop}) must not be larger than image_size ({image_size})")
        crop = int(crop)
    return int(image_size), crop


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        if np.nanmax(arr, initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr)
    else:
        arr = arr.astype(np.float64)
        if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _sixteen_bit_to_l(img)
    return img.convert("RGB")


def _open(path: Path | io.BytesIO, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise PadimError(f"{what} not found: {path}") from None
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot read {what} {path}: {_one_line(exc)}") from None


def read_image(path: str | os.PathLike, what: str = "image", exif_transpose: bool = True) -> Image.Image:
    """Open an image file as PIL shows it: decoded, EXIF orientation applied (phone photos).

    The one reading function behind every loader (images and masks), so a rotated
    JPEG reads the same whatever dataset class opens it; PadimError naming the file
    if it cannot be read.
    """
    path = Path(path)
    img = _open(path, what)
    if not exif_transpose:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot apply the EXIF orientation of {what} {path}: {_one_line(exc)}") from None


def decode_image(data: bytes, what: str = "image") -> Image.Image:
    """Decode an image file held in memory (e.g. a JPEG written to a buffer) as :func:`read_image`
    decodes files, with the same one-line PadimError if it cannot be read."""
    return _open(io.BytesIO(data), what)


def check_image_file(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` shows it (EXIF orientation applied), after
    checking that the whole file decodes: cheap enough to run over a dataset before any model runs (a
    JPEG is decoded at 1/8 scale, a PNG's chunks are checksummed without inflating them; about a
    millisecond a file). PadimError naming a missing, truncated or corrupt file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.format == "PNG":  # a PNG's getexif() would inflate it: read an eXIf chunk seen so far
                exif = Image.Exif()
                if "exif" in im.info:
                    exif.load(im.info["exif"])
            else:
                exif = im.getexif()
            if exif.get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that turn the picture by 90 degrees
                width, height = height, width
            if im.format == "PNG":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()
    except FileNotFoundError:
        raise PadimError(f"{what} not found: {path}") from None
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot read {what} {path}: {_one_line(exc)}") from None
    return width, height


def load_rgb(path: str | os.PathLike, exif_transpose: bool = True) -> Image.Image:
    """Open any image file as an 8-bit RGB PIL image (EXIF orientation applied); PadimError naming
    the file if unreadable. Every loader reads its images through this function."""
    path = Path(path)
    img = read_image(path, "image", exif_transpose=exif_transpose)
    try:
        return _to_rgb(img)
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot convert image {path} (mode {img.mode}) to RGB: {_one_line(exc)}") from None


def load_mask(path: str | os.PathLike) -> Image.Image:
    """Open a mask file as a PIL ``L`` image holding 0/1 (``value > 0`` -> 1)."""
    path = Path(path)
    img = read_image(path, "mask")
    try:
        if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("L"))
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot convert mask {path} (mode {img.mode}) to grey: {_one_line(exc)}") from None
    return Image.fromarray((arr > 0).astype(np.uint8), mode="L")


def _image_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.array(img, dtype=np.uint8)  # writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- #
# datasets
# --------------------------------------------------------------------------- #
class _GeometryMixin:
    image_size: int
    crop: int | None
    interpolation: str  # "bicubic" or "bilinear": how images are resized
    #: False: items hold the decoded images at their own size, for `resize_crop_images` on the device
    resize_on_load: bool = True

    @property
    def out_size(self) -> int:
        """Side of the returned square images: ``crop`` if set, else ``image_size``."""
        return self.crop if self.crop is not None else self.image_size

    def _load_image(self, path: Path, exif_transpose: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
        """(image (3, S, S) uint8, original (width, height)), through the decoded-image cache when one
        is set (`imagecache`); at the original size when `resize_on_load` is False."""
        if not self.resize_on_load:
            img = load_rgb(path, exif_transpose=exif_transpose)
            return _image_tensor(img), img.size
        return load_resized(path, self.image_size, self.crop, self.interpolation, exif_transpose)


def load_resized(path: str | os.PathLike, image_size: int, crop: int | None, interpolation: str,
                 exif_transpose: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
    """(image (3, S, S) uint8 as the network sees it, original (width, height)) of an image file:
    decoded (:func:`load_rgb`), resized and cropped (:func:`resize_crop`); from the decoded-image
    cache when one is set (:mod:`padim_utils.imagecache`)."""

    def decode() -> tuple[torch.Tensor, tuple[int, int]]:
        img = load_rgb(path, exif_transpose=exif_transpose)
        size = img.size
        return _image_tensor(resize_crop(img, image_size, crop, resample_filter(interpolation))), size

    geometry = f"size={image_size},crop={crop},{interpolation},exif={bool(exif_transpose)}"
    return imagecache.cached(path, geometry, decode)


def resize_crop_images(images: torch.Tensor, image_size: int, crop: int | None, interpolation: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, S, S): :func:`resize_crop` on a batch of tensors, on their device.

    The square resize is ``F.interpolate(antialias=True)``, whose filters follow PIL's when shrinking,
    rounded back to uint8: it equals PIL's resize to within 1 grey level (7 % of the pixels differ by
    1 for a 900 -> 256 px bicubic resize; tests/test_data.py checks). Used to resize on the GPU."""
    _check_interpolation(interpolation)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise PadimError(f"resize_crop_images expects uint8 images (B, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (image_size, image_size):
        x = torch.nn.functional.interpolate(images.float(), size=(image_size, image_size), mode=interpolation,
                                            antialias=True, align_corners=False)
        images = x.round_().clamp_(0, 255).to(torch.uint8)
    if crop is not None and crop < image_size:
        off = crop_offset(image_size, crop)
        images = images[..., off : off + crop, off : off + crop]
    return images.contiguous()


class MVTecDataset(_GeometryMixin, torch.utils.data.Dataset):
    """One split of one MVTec AD category.

    Parameters
    ----------
    root:
        Folder holding the category folders (e.g. ``data/mvtec_ad``).
    category:
        Category folder name, e.g. ``"bottle"``.
    split:
        ``"train"`` (only ``train/good``) or ``"test"`` (every ``test/<defect_type>``).
    image_size, crop, interpolation:
        Square resize (``"bicubic"`` or ``"bilinear"``) then optional centre crop
        (see the module docstring).

    Items are dicts: ``image`` uint8 ``(3, S, S)``, ``mask`` uint8 ``(S, S)`` in {0, 1}
    (all zero for good images), ``label`` int (0 good, 1 defect), ``defect_type`` str,
    ``path`` str; ``S`` is :attr:`out_size`.

    The folder layout is checked when the dataset is built (folders present, images
    present, one mask per defective test image); the image files themselves are only
    decoded in ``__getitem__``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        category: str,
        split: str = "train",
        image_size: int = 256,
        crop: int | None = 224,
        interpolation: str = "bicubic",
    ) -> None:
        if split not in SPLITS:
            raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
        self.image_size, self.crop = _check_geometry(image_size, crop)
        self.interpolation = _check_interpolation(interpolation)
        self.root = Path(root)
        self.category = str(category)
        self.split = split

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

        self.paths: list[str] = []
        self.labels: list[int] = []
        self.defect_types: list[str] = []
        self.mask_paths: list[str | None] = []

        if split == "train":
            self._scan_train()
        else:
            self._scan_test()

    # -- layout scanning ---------------------------------------------------- #
    def _scan_train(self) -> None:
        good = self.category_dir / "train" / "good"
        if not good.is_dir():
            raise PadimError(f"missing folder {good} (expected <root>/<category>/train/good with normal images)")
        images = list_images(good)
        if not images:
            raise PadimError(f"no images in {good} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        for p in images:
            self._add(p, 0, "good", None)

    def _scan_test(self) -> None:
        test = self.category_dir / "test"
        if not test.is_dir():
            raise PadimError(f"missing folder {test} (expected <root>/<category>/test/<defect_type>)")
        gt = self.category_dir / "ground_truth"
        for defect_type in _subfolders(test):
            for p in list_images(test / defect_type):
                if defect_type == "good":
                    self._add(p, 0, defect_type, None)
                    continue
                mask = self._find_mask(gt / defect_type, p)
                if mask is None:
                    expected = gt / defect_type / f"{p.stem}{MASK_SUFFIX}.png"
                    raise PadimError(f"missing mask for defect image {p}: expected {expected}")
                self._add(p, 1, defect_type, mask)
        if not self.paths:
            raise PadimError(
                f"no images in {test}/<defect_type>/ (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )

    @staticmethod
    def _find_mask(folder: Path, image: Path) -> Path | None:
        base = f"{image.stem}{MASK_SUFFIX}"
        first = folder / f"{base}.png"
        if first.is_file():
            return first
        for ext in IMAGE_EXTENSIONS:  # tolerate masks saved in another format
            for cand in (folder / f"{base}{ext}", folder / f"{base}{ext.upper()}"):
                if cand.is_file():
                    return cand
        return None

    def check_files(self) -> None:
        """Check every image and mask file before any model runs (milliseconds a file, see
        :func:`check_image_file`): each decodes, and each mask has its image's size. PadimError naming
        the first file at fault; what ``__getitem__`` would find only during the fit or the prediction."""
        for path, mask_path in zip(self.paths, self.mask_paths):
            size = check_image_file(path)
            if mask_path is not None:
                mask_size = check_image_file(mask_path, "mask")
                if mask_size != size:
                    raise PadimError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {path} is "
                                     f"{size[0]}x{size[1]}")

    def _add(self, path: Path, label: int, defect_type: str, mask: Path | None) -> None:
        self.paths.append(str(path))
        self.labels.append(label)
        self.defect_types.append(defect_type)
        self.mask_paths.append(None if mask is None else str(mask))

    # -- Dataset protocol ---------------------------------------------------- #
    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]  # IndexError for out-of-range, as a list
        image, size = self._load_image(Path(path))
        s = self.out_size
        mask_path = self.mask_paths[index]
        if mask_path is None:
            mask = torch.zeros((s, s), dtype=torch.uint8)
        else:
            m = load_mask(mask_path)
            if m.size != size:
                raise PadimError(
                    f"mask {mask_path} is {m.size[0]}x{m.size[1]} but its image {path} is {size[0]}x{size[1]}"
                )
            m = resize_crop(m, self.image_size, self.crop, Image.NEAREST)
            mask = torch.from_numpy(np.array(m, dtype=np.uint8))
        return {
            "image": image,
            "mask": mask,
            "label": self.labels[index],
            "defect_type": self.defect_types[index],
            "path": path,
        }

    def __repr__(self) -> str:
        return (
            f"MVTecDataset(root={str(self.root)!r}, category={self.category!r}, split={self.split!r}, "
            f"n={len(self)}, image_size={self.image_size}, crop={self.crop}, interpolation={self.interpolation!r})"
        )


class ImageFolderDataset(_GeometryMixin, torch.utils.data.Dataset):
    """Your own images: every image file in a folder (sorted), or one image file.

    Same geometry and item dict as :class:`MVTecDataset`, with ``label`` -1
    (unknown), an all-zero ``mask`` and ``defect_type`` ``"unknown"``. Images are read
    as every loader reads them (:func:`load_rgb`, EXIF orientation applied).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_size: int = 256,
        crop: int | None = 224,
        recursive: bool = False,
        interpolation: str = "bicubic",
    ) -> None:
        self.image_size, self.crop = _check_geometry(image_size, crop)
        self.interpolation = _check_interpolation(interpolation)
        self.root = Path(path)
        if not self.root.exists():
            if os.path.islink(self.root):
                raise PadimError(f"input path is a broken link or a symlink loop: {self.root}")
            raise PadimError(f"input path not found: {self.root}")
        if self.root.is_dir():
            files = list_images(self.root, recursive=recursive)
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
        self.paths: list[str] = [str(p) for p in files]
        self.labels: list[int] = [-1] * len(self.paths)
        self.defect_types: list[str] = ["unknown"] * len(self.paths)
        self.mask_paths: list[str | None] = [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image, _ = self._load_image(Path(path))
        s = self.out_size
        return {
            "image": image,
            "mask": torch.zeros((s, s), dtype=torch.uint8),
            "label": -1,
            "defect_type": "unknown",
            "path": path,
        }

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(path={str(self.root)!r}, n={len(self)}, "
            f"image_size={self.image_size}, crop={self.crop}, interpolation={self.interpolation!r})"
        )


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch a list of item dicts (usable as ``DataLoader(collate_fn=collate)``).

    Tensors are stacked (``image`` -> ``(B, 3, S, S)``, ``mask`` -> ``(B, S, S)``),
    ints/bools/floats become a 1-D tensor (``label`` -> int64 ``(B,)``), strings and
    anything else become lists.
    """
    if len(batch) == 0:
        raise ValueError("collate() got an empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        first = values[0]
        if isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise PadimError(f"the {key}s of one batch differ in size ({', '.join(map(str, sorted(shapes)))}): "
                                 "resizing on the device needs images of one size; resize on load instead")
            out[key] = torch.stack(values)
        elif isinstance(first, (bool, np.bool_)):
            out[key] = torch.tensor([bool(v) for v in values], dtype=torch.bool)
        elif isinstance(first, (int, np.integer)):
            out[key] = torch.tensor([int(v) for v in values], dtype=torch.int64)
        elif isinstance(first, (float, np.floating)):
            out[key] = torch.tensor([float(v) for v in values], dtype=torch.float32)
        else:
            out[key] = list(values)
    return out

