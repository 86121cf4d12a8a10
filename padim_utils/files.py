"""Safe file writing: nothing half-written is left behind by a crash, Ctrl-C or SIGTERM.

* `atomic_path` writes to a temporary file beside the target and renames it into
  place; the file gets the mode an ordinary new file gets (0666 minus the umask).
* `check_output_file` / `check_output_dir` check an output path before the work
  starts (not a folder where a file is wanted, a writable parent, ...).
* Every `OSError` at write time (disk full, read-only file system, ...) becomes one
  `PadimError` line naming the file.
* `read_safetensors` reads a model or feature file back, or says in one line why it cannot.
* `new_digest` / `file_digest`: the content digest behind every cache and saved result (BLAKE2b).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open

from .errors import PadimError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` would give a new file now: 0o666 minus the umask."""
    return 0o666 & ~_umask()


def os_error_text(e: OSError) -> str:
    """One line for an OSError: its strerror (e.g. 'No space left on device'), else its text."""
    return e.strerror or " ".join(str(e).split()) or type(e).__name__


def _write_error(path: Path, e: OSError) -> PadimError:
    return PadimError(f"cannot write {path}: {os_error_text(e)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    The temporary file is removed on any error, Ctrl-C or SIGTERM (see `padim_utils.cli`).
    An `OSError` while creating, writing or renaming becomes a one-line `PadimError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        try:
            yield Path(tmp)
            os.chmod(tmp, file_mode())  # mkstemp makes 0600; a model or figure is an ordinary file
            os.replace(tmp, path)
        except OSError as e:
            raise _write_error(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str, errors: str = "strict") -> Path:
    """Write UTF-8 text atomically. errors="surrogateescape" writes file names that are not UTF-8
    back as the bytes they were read from."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=errors)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------- checks before the work
def _name(path: Path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _check_writable_folder(folder: Path, what: str) -> None:
    """`folder` exists and a file can be created in it (probed: catches read-only and pseudo file systems)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".padim-probe-", suffix=".tmp")
    except OSError as e:
        raise PadimError(f"cannot write to {what}: {folder}: {os_error_text(e)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _nearest_existing(path: Path, option: str | None) -> Path:
    """The first existing ancestor of `path` (itself excluded); it must be a folder."""
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise PadimError(f"cannot write {_name(path, option)}: {parent} is not a folder")
            return parent
    raise PadimError(f"cannot write {_name(path, option)}: no existing parent folder")  # pragma: no cover


def _check_not_empty(path, option: str | None, kind: str) -> Path:
    if path is None or str(path).strip() == "":
        raise PadimError(f"{option or 'the output path'} is empty: name a {kind} to write")
    return Path(path)


def check_output_file(path, option: str | None = None) -> Path:
    """Check, before the work starts, that `path` can be written as a regular file."""
    path = _check_not_empty(path, option, "file")
    if path.is_dir():
        raise PadimError(f"{_name(path, option)} is a folder; name a file to write")
    if os.path.lexists(path) and not path.is_file():
        raise PadimError(f"{_name(path, option)} exists and is not a regular file (a device, a pipe or a "
                         "broken link)")
    folder = _nearest_existing(path, option)
    _check_writable_folder(folder, f"the folder of {_name(path, option)}")
    return path


def check_output_dir(path, option: str | None = None) -> Path:
    """Check, before the work starts, that `path` is (or can be created as) a writable folder."""
    path = _check_not_empty(path, option, "folder")
    if path.is_dir():
        _check_writable_folder(path, _name(path, option))
        return path
    if os.path.lexists(path):
        raise PadimError(f"{_name(path, option)} exists and is not a folder")
    folder = _nearest_existing(path, option)
    _check_writable_folder(folder, f"the folder of {_name(path, option)}")
    return path


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict]:
    """(metadata, {name: tensor}) of a safetensors file; one PadimError line "<path> is not a readable <what>"
    where it cannot be read (safetensors raises its own error types for corrupt headers)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise PadimError(f"{path} is not a readable {what} ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- content digests
def new_digest():
    """A fresh hash of the package's content digests: BLAKE2b with a 20-byte (160-bit) digest. Every cache and
    saved result is keyed or checked by what it was computed from, read byte for byte (never names, sizes or
    modification times): decoded-image cache entries (their key and their checksum), feature files and
    `padim reproduce`'s saved results."""
    return hashlib.blake2b(digest_size=20)


def file_digest(path: str | os.PathLike) -> str:
    """The hex content digest (`new_digest`) of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, new_digest).hexdigest()
