"""`padim download`: fetch a dataset from its official address, check it, extract it atomically.

    download("btad")                       # -> data/btad/01, 02, 03
    download("mvtec", category="bottle")   # the full archive, only bottle/ extracted

Steps, each safe to interrupt:

1. The archive is fetched to ``<data home>/downloads/<file>.part`` over HTTP; a
   rerun resumes it with a ``Range`` request (servers that ignore ``Range`` make it
   start over). Only a complete file is renamed to ``<file>``: a ``.part`` the
   server calls complete (416) is kept only if it has the size the server names.
2. Its SHA-256 is compared with the sum in ``downloads.json`` (beside this
   module), or, where that is ``null``, with the sum another tool publishes
   (``published_sha256``); a mismatch moves the archive to ``<file>.bad``. With
   neither, the download is *unverified* and the computed sum is printed.
3. It is extracted into a hidden temporary folder next to the dataset folder; a
   single top-level folder in the archive is stripped; each category folder is
   then renamed into ``<root>``. A half-extracted archive is never under ``<root>``,
   and a tar archive must end in tar's end-of-archive marker: one cut at a member
   boundary, or with a damaged header, is refused (tarfile would stop there silently).

Offline, a failed transfer or a checksum mismatch raise one :class:`PadimError`
line saying what to download by hand and where to put it (putting the archive at
``<data home>/downloads/<file>`` and rerunning skips the transfer). The licence is
printed first: MVTec AD and VisA are for non-commercial use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import PadimError
from ..files import check_output_dir
from .mvtec import data_home
from .registry import DATA_FOLDERS

__all__ = ["SOURCES_FILE", "sources", "download", "fetch", "extract", "sha256sum"]

SOURCES_FILE = Path(__file__).with_name("downloads.json")
CHUNK = 1 << 20
TIMEOUT_S = 60


def sources() -> dict[str, dict[str, Any]]:
    """Dataset name -> its download record (url, filename, sha256, licence, page, size, keep)."""
    data = json.loads(SOURCES_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def sha256sum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _by_hand(src: dict[str, Any], archive: Path) -> str:
    where = src.get("url") or src.get("page")
    return f"download {src['filename']} by hand from {where} and put it at {archive}, then rerun"


def fetch(url: str, dest: str | os.PathLike, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous partial download.

    Raises ``OSError`` / ``urllib.error.URLError`` on network problems (the ``.part``
    file stays, for the next call to resume).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send from there: complete only at the file's size
            if _range_total(exc.headers.get("Content-Range")) == have:
                os.replace(part, dest)
                return dest
            part.unlink()  # larger than the file, or of a size the server does not say: start over
            return fetch(url, dest, progress=progress, timeout=timeout)
        raise
    with response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress
        ) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise urllib.error.ContentTooShortError(f"got {size} of {total} bytes", None)
    os.replace(part, dest)
    return dest


def _range_total(content_range: str | None) -> int | None:
    """The file size in a Content-Range header ("bytes */1234" or "bytes 0-9/1234"), else None."""
    total = (content_range or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise PadimError(f"refusing to extract {archive}: it holds the unsafe path {name!r}")


def _archive_kind(archive: Path) -> str:
    """"zip" for a .zip name or a file starting as a zip does, else "tar" (a damaged zip is still a zip)."""
    try:
        with open(archive, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise PadimError(f"cannot read {archive}: {exc.strerror or exc}") from None
    return "zip" if archive.name.lower().endswith(".zip") or head.startswith(b"PK") else "tar"


def _check_tar_end(t: tarfile.TarFile, archive: Path) -> None:
    """After the last member tarfile found, a tar archive holds only zeros, at least tar's two-block
    end-of-archive marker. tarfile ends its member list silently at a damaged header (then data
    follows) or at a cut (then nothing does): either would extract part of the dataset."""
    t.fileobj.seek(t.offset)
    zeros = 0
    for block in iter(lambda: t.fileobj.read(CHUNK), b""):
        if block.strip(b"\0"):
            raise PadimError(f"cannot extract {archive}: a damaged tar header at byte {t.offset} of the archive "
                             f"(after {len(t.getmembers())} members); delete it and download again")
        zeros += len(block)
    if zeros < 2 * tarfile.BLOCKSIZE:
        raise PadimError(f"cannot extract {archive}: the archive ends after {len(t.getmembers())} members without "
                         "tar's end-of-archive marker (cut short); delete it and download again")


def extract(archive: str | os.PathLike, into: str | os.PathLike) -> Path:
    """Extract a .zip / .tar(.gz/.xz/.bz2) archive into the folder ``into``; return the content folder.

    A single top-level folder in the archive is stepped into (so ``btad.zip``'s
    ``BTech_Dataset_transformed/01`` gives ``01``).
    """
    archive, into = Path(archive), Path(into)
    kind = _archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), archive)
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), archive)
                _check_tar_end(t, archive)
                t.extractall(into, filter="data")
    except tarfile.ReadError as exc:
        # tarfile.open tries every compression and lists each one's failure: one line says it better
        text = " ".join(str(exc).split())
        if text.startswith("file could not be opened successfully"):
            text = "not a readable .tar, .tar.gz, .tar.xz or .tar.bz2 archive (damaged or cut short?)"
        raise PadimError(f"cannot extract {archive}: {text}; delete it and download again") from None
    except zipfile.BadZipFile as exc:
        text = " ".join(str(exc).split()) or "not a zip archive"
        raise PadimError(f"cannot extract {archive}: a damaged or incomplete zip archive ({text}); delete it and "
                         "download again") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise PadimError(f"cannot extract {archive}: {text}; delete it and download again") from None
    entries = [p for p in into.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return into


def download(dataset: str, root: str | os.PathLike | None = None, category: str | None = None,
             progress: bool = True, source: dict[str, Any] | None = None, timeout: float = TIMEOUT_S) -> Path:
    """Download, check and extract ``dataset`` (mvtec, btad, visa, stc) into ``root``; return ``root``.

    ``root`` defaults to the dataset's folder under the data home (``data/mvtec_ad``
    ...). ``category`` extracts only that category (the archive is still the whole
    dataset). ``source`` replaces the dataset's record from ``downloads.json``
    (tests use a local server). Categories already present under ``root`` are kept.
    """
    known = sources()
    if dataset not in known:
        raise PadimError(f"unknown dataset {dataset!r} for download; choose one of {', '.join(known)}")
    src = dict(known[dataset], **(source or {}))
    root = Path(root) if root is not None else data_home() / DATA_FOLDERS[dataset]
    archive = root.parent / "downloads" / src["filename"]
    check_output_dir(root, "--root")  # before any work: a file, a read-only folder, ... is one line
    check_output_dir(archive.parent, "the downloads folder")
    print(f"{src['name']} ({src['size']}): licence {src['licence']}; see {src['page']}")

    if not archive.is_file():
        if not src.get("url"):
            raise PadimError(f"{src['name']} has no direct download address: {_by_hand(src, archive)}")
        try:
            fetch(src["url"], archive, progress=progress, timeout=timeout)
        except (urllib.error.URLError, OSError, socket.timeout, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            text = " ".join(str(reason).split()) or type(exc).__name__
            raise PadimError(f"cannot download {src['url']} ({text}): rerun to resume, or "
                             f"{_by_hand(src, archive)}") from None
    digest = sha256sum(archive)
    expected = src.get("sha256") or src.get("published_sha256")
    if expected:
        whose = "" if src.get("sha256") else f" (the sum {src.get('published_by') or 'its publisher'} publishes)"
        if digest != expected:
            bad = archive.with_name(archive.name + ".bad")
            os.replace(archive, bad)
            raise PadimError(f"checksum mismatch for {archive.name}: sha256 {digest}, expected {expected}{whose} "
                             f"(moved to {bad}); {_by_hand(src, archive)}")
        print(f"sha256 verified: {digest}{whose}")
    else:
        print(f"UNVERIFIED download: no expected sha256 for {archive.name}; its sha256 is {digest}")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.extract-", dir=root.parent))
    try:
        content = extract(archive, tmp)
        names = sorted(p.name for p in content.iterdir())
        if category is not None:
            if category not in names:
                raise PadimError(f"category {category!r} not in {archive.name}; it holds: {', '.join(names)}")
            names = [n for n in names if n == category or n in src.get("keep", [])]
        root.mkdir(parents=True, exist_ok=True)
        moved, kept = [], []
        for name in names:
            target = root / name
            if target.exists():
                kept.append(name)
                continue
            os.rename(content / name, target)  # same file system: atomic, one folder at a time
            moved.append(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{src['name']} in {root}: {len(moved)} new entr{'y' if len(moved) == 1 else 'ies'}"
          + (f", kept the existing {', '.join(kept)}" if kept else ""))
    return root
