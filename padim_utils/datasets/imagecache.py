"""Decoded images kept on disk at the size the network sees, so that repeated fits never decode twice.

At MVTec AD's real resolution (700-1024 px PNGs) decoding and resizing cost far more than the
network: about 25 ms of CPU per image, against 0.07 ms to read back 196 KB of raw pixels. Seeds,
ablations and `reproduce` fit the same images many times; this cache decodes each once.

Opt-in: set `PADIM_CACHE=DIR` (the command line's `--cache DIR` sets it), or call `set_cache_dir`.
Every dataset that decodes through `images.load_resized` (MVTec AD, your own folder, BTAD, VisA)
then uses it, in this process and in loader workers alike.

An entry is keyed by what decides its pixels, so a stale image is never served:
  * the file's content (its content digest, `files.new_digest`: a file rewritten in place, even with the
    same size and time, gets a new entry; a copy elsewhere shares the entry),
  * the geometry (image size, crop, interpolation) and whether EXIF orientation is applied,
  * this module's `FORMAT` (bumped whenever decoding changes).
The file is read once: the bytes the key is computed from are the bytes decoded, so a file that
changes meanwhile cannot leave an entry whose key and pixels disagree.
Entries are written atomically (a crash leaves no half entry) under DIR/<2 hex>/<key>.u8: a
36-byte header (magic, original width and height, side S, and a checksum of the key, these and the
pixels) and the (3, S, S) uint8 pixels. An entry that does not read back whole, or whose checksum
differs (pixels overwritten in place, another entry copied over it), is decoded again and rewritten. Nothing is ever evicted: delete DIR
to reclaim the space (about 150-200 KB per image and geometry).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..files import atomic_path, new_digest

FORMAT = 2
_MAGIC = b"PDC2"
_SIZES = struct.Struct("<III")  # original width, original height, side S
_HEADER = struct.Struct(f"<4s{_SIZES.size}s20s")  # magic, the sizes, checksum of the sizes and the pixels

def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Cache decoded images in `path` from now on, in this process and the loader workers and
    subprocesses it starts (it sets PADIM_CACHE); None turns the cache off."""
    if path is None:
        os.environ.pop("PADIM_CACHE", None)
    else:
        os.environ["PADIM_CACHE"] = str(Path(path).expanduser().absolute())


def cache_dir() -> Path | None:
    """The cache folder in use (PADIM_CACHE), or None: no caching."""
    env = os.environ.get("PADIM_CACHE", "").strip()
    return Path(env).expanduser().absolute() if env else None


def entry_key(content: bytes, geometry: str) -> str:
    """The entry name of an image file's `content` decoded with `geometry` (a string naming it)."""
    h = new_digest()
    h.update(content)
    h.update(f"|{geometry}|format={FORMAT}".encode())
    return h.hexdigest()


def _checksum(key: str, sizes: bytes, pixels) -> bytes:
    """Digest of an entry's key, sizes and pixels: another entry's file copied over this one fails it too."""
    h = new_digest()
    h.update(key.encode())
    h.update(sizes)
    h.update(pixels)
    return h.digest()


def cached(path: str | os.PathLike, geometry: str,
           decode: Callable[[bytes | None], tuple[torch.Tensor, tuple[int, int]]]) -> tuple[torch.Tensor, tuple[int, int]]:
    """(image (3, S, S) uint8, original (width, height)) of the file at `path`: from the cache when
    it holds this content and geometry, else `decode(content)` (the bytes the key was computed from) and
    store. Without a cache: `decode(None)` (it reads the file)."""
    root = cache_dir()
    if root is None:
        return decode(None)
    try:
        content = Path(path).read_bytes()
    except OSError:
        return decode(None)  # decode() names the unreadable file in its error
    key = entry_key(content, geometry)
    entry = root / key[:2] / f"{key}.u8"
    hit = _read(entry)
    if hit is not None:
        return hit
    image, size = decode(content)
    _write(entry, image, size)
    return image, size


def _read(entry: Path) -> tuple[torch.Tensor, tuple[int, int]] | None:
    try:
        raw = entry.read_bytes()
    except OSError:
        return None
    if len(raw) < _HEADER.size:
        return None
    magic, sizes, checksum = _HEADER.unpack_from(raw)
    width, height, side = _SIZES.unpack(sizes)
    if magic != _MAGIC or len(raw) != _HEADER.size + 3 * side * side:
        return None  # not ours, or cut short: decode again
    pixels = memoryview(raw)[_HEADER.size :]
    if _checksum(entry.stem, sizes, pixels) != checksum:
        return None  # overwritten or damaged: decode again
    image = np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size).reshape(3, side, side)
    return torch.from_numpy(image.copy()), (width, height)


def _write(entry: Path, image: torch.Tensor, size: tuple[int, int]) -> None:
    """Store one entry; a cache that cannot be written (full disk, read-only) is skipped silently,
    as the image is already decoded."""
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2] or image.dtype != torch.uint8:
        return  # only square uint8 RGB images are cached
    sizes = _SIZES.pack(size[0], size[1], image.shape[1])
    pixels = image.contiguous().numpy().tobytes()
    try:
        with atomic_path(entry) as tmp:
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, sizes, _checksum(entry.stem, sizes, pixels)))
                f.write(pixels)
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        pass


__all__ = ["FORMAT", "cache_dir", "cached", "entry_key", "set_cache_dir"]
