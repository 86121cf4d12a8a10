"""Reading images: every file a dataset opens goes through this module, so the same file gives the same
tensor whatever dataset class reads it.

Geometry
--------
Every image (and mask) goes through the same two steps (:class:`padim_utils.config.Geometry`):

1. a *square* resize to ``image_size x image_size`` (PIL; images with the
   dataset's ``interpolation``, ``"bicubic"`` or ``"bilinear"``, which PIL
   antialiases when shrinking; masks always with nearest), then
2. a centre crop to ``crop x crop`` when ``crop`` is not None, with the offset
   ``int(round((image_size - crop) / 2))`` (the same rounding as torchvision's
   ``CenterCrop``).

The paper resizes to 256 x 256 (bicubic) and centre-crops 224 x 224; anomalib's
PaDiM resizes to 256 x 256 (bilinear, antialiased) without a crop (``crop=None``).
Build a dataset with the model config's geometry (``geometry=cfg.geometry``):
``Padim`` refuses a dataset whose geometry or interpolation differs from its
config. The square resize differs from torchvision's ``Resize(256)`` (shorter
side to 256, aspect ratio kept) only for non-square images; MVTec AD images are
all square, so on MVTec the two are the same, and for your own non-square
pictures the square resize keeps the whole field of view (at the price of a
slight stretch) instead of cutting the edges.

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

from . import imagecache
from ..config import check_interpolation
from ..errors import PadimError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_other_files",
    "list_images",
    "subfolders",
    "find_image",
    "read_image",
    "decode_image",
    "check_image_file",
    "load_rgb",
    "load_mask",
    "image_tensor",
    "mask_tensor",
    "crop_offset",
    "resample_filter",
    "resize_crop",
    "load_resized",
    "resize_crop_images",
    "collate",
]

#: File name endings recognised as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

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
# finding files
# --------------------------------------------------------------------------- #
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


def list_other_files(folder: str | os.PathLike) -> list[Path]:
    """The files in ``folder`` that :func:`list_images` leaves out for their name (not hidden, not one of
    :data:`IMAGE_EXTENSIONS`: ``.webp``, ``.gif``, ``notes.txt``), sorted by name."""
    folder = Path(folder)
    return [folder / n for n in sorted(_scan(folder, lambda n: not n.startswith(".") and not _is_image_name(n),
                                             "file"))]


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


def subfolders(folder: str | os.PathLike) -> list[str]:
    """Names of the sub-folders of ``folder`` (links followed, hidden ones skipped), sorted."""
    return sorted(_scan(Path(folder), lambda name: not name.startswith("."), "dir"))


def find_image(folders: Sequence[Path], stems: Sequence[str]) -> Path | None:
    """The first ``<folder>/<stem><ext>`` that is a file, for each folder, stem and image extension in turn
    (``.png`` first, each extension also in capitals); None where there is none. How masks are found.

    >>> find_image([Path("/nowhere")], ["000_mask"]) is None
    True
    """
    for folder in folders:
        for stem in stems:
            for ext in IMAGE_EXTENSIONS:
                for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                    if cand.is_file():
                        return cand
    return None


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #
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


def _open(path: Path | io.BytesIO, what: str, data: bytes | None = None) -> Image.Image:
    """Decode `path`, or `data` (its bytes, already read) where given; errors name `path`."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise PadimError(f"{what} not found: {path}") from None
    except _READ_ERRORS as exc:
        raise PadimError(f"cannot read {what} {path}: {_one_line(exc)}") from None


def read_image(path: str | os.PathLike, what: str = "image", exif_transpose: bool = True,
               data: bytes | None = None) -> Image.Image:
    """Open an image file as PIL shows it: decoded, EXIF orientation applied (phone photos).

    The one reading function behind every loader (images and masks), so a rotated
    JPEG reads the same whatever dataset class opens it; PadimError naming the file
    if it cannot be read. `data`: the file's bytes, already read (decoded instead of reading it again).
    """
    path = Path(path)
    img = _open(path, what, data)
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


def load_rgb(path: str | os.PathLike, exif_transpose: bool = True, data: bytes | None = None) -> Image.Image:
    """Open any image file as an 8-bit RGB PIL image (EXIF orientation applied); PadimError naming
    the file if unreadable. Every loader reads its images through this function. `data`: the file's
    bytes, already read."""
    path = Path(path)
    img = read_image(path, "image", exif_transpose=exif_transpose, data=data)
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


def image_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as the uint8 tensor (3, H, W) the network's loader batches (a copy, channels first).

    >>> image_tensor(Image.new("RGB", (4, 2), (255, 0, 7))).shape
    torch.Size([3, 2, 4])
    """
    arr = np.array(img, dtype=np.uint8)  # writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def mask_tensor(mask: Image.Image) -> torch.Tensor:
    """A 0/1 mask image (:func:`load_mask`) as a uint8 tensor (H, W)."""
    return torch.from_numpy(np.array(mask, dtype=np.uint8))


# --------------------------------------------------------------------------- #
# resizing and cropping
# --------------------------------------------------------------------------- #
def crop_offset(image_size: int, crop: int | None) -> int:
    """Top/left offset of the centre crop (torchvision's rounding).

    >>> crop_offset(256, 224)      # 16 pixels cut on each side
    16
    >>> crop_offset(255, 224)      # an odd margin: round((255 - 224) / 2) = round(15.5), to even
    16
    >>> crop_offset(256, None)     # no crop
    0
    """
    if crop is None or crop >= image_size:
        return 0
    return int(round((image_size - crop) / 2.0))


def resize_crop(img: Image.Image, image_size: int, crop: int | None, resample: int) -> Image.Image:
    """Square resize to ``image_size`` then centre crop to ``crop`` (if not None).

    >>> resize_crop(Image.new("RGB", (640, 480)), 256, 224, Image.BICUBIC).size
    (224, 224)
    """
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), resample)
    if crop is not None and crop < image_size:
        off = crop_offset(image_size, crop)
        img = img.crop((off, off, off + crop, off + crop))
    return img


#: PIL's filter for each config `interpolation` (PIL antialiases both when shrinking).
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def resample_filter(interpolation: str) -> int:
    """PIL's resampling filter for `interpolation` ("bicubic" or "bilinear").

    >>> resample_filter("bilinear") == Image.BILINEAR
    True
    >>> resample_filter("nearest")
    Traceback (most recent call last):
    padim_utils.errors.PadimError: interpolation must be one of bicubic, bilinear, got 'nearest'
    """
    return _RESAMPLE[check_interpolation(interpolation)]


def load_resized(path: str | os.PathLike, image_size: int, crop: int | None, interpolation: str,
                 exif_transpose: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
    """(image (3, S, S) uint8 as the network sees it, original (width, height)) of an image file:
    decoded (:func:`load_rgb`), resized and cropped (:func:`resize_crop`); from the decoded-image
    cache when one is set (:mod:`padim_utils.datasets.imagecache`), which decodes the very bytes it keyed
    the entry by."""

    def decode(data: bytes | None) -> tuple[torch.Tensor, tuple[int, int]]:
        img = load_rgb(path, exif_transpose=exif_transpose, data=data)
        size = img.size
        return image_tensor(resize_crop(img, image_size, crop, resample_filter(interpolation))), size

    geometry = f"size={image_size},crop={crop},{interpolation},exif={bool(exif_transpose)}"
    return imagecache.cached(path, geometry, decode)


def resize_crop_images(images: torch.Tensor, image_size: int, crop: int | None, interpolation: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, S, S): :func:`resize_crop` on a batch of tensors, on their device.

    The square resize is ``F.interpolate(antialias=True)``, whose filters follow PIL's when shrinking,
    rounded back to uint8: it equals PIL's resize to within 1 grey level (7 % of the pixels differ by
    1 for a 900 -> 256 px bicubic resize; tests/test_data.py checks). Used to resize on the GPU."""
    check_interpolation(interpolation)
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


# --------------------------------------------------------------------------- #
# batching
# --------------------------------------------------------------------------- #
def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch a list of item dicts (usable as ``DataLoader(collate_fn=collate)``).

    Tensors are stacked (``image`` -> ``(B, 3, S, S)``, ``mask`` -> ``(B, S, S)``),
    ints/bools/floats become a 1-D tensor (``label`` -> int64 ``(B,)``), strings and
    anything else become lists.

    >>> item = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "label": 1, "path": "a.png"}
    >>> batch = collate([item, item])
    >>> batch["image"].shape, batch["label"], batch["path"]
    (torch.Size([2, 3, 8, 8]), tensor([1, 1]), ['a.png', 'a.png'])
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
