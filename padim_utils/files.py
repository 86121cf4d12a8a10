"""Safe file writing: nothing half-written is left behind by a crash, Ctrl-C or SIGTERM.

* `atomic_path` writes to a temporary file beside the target and renames it into
  place; the file gets the mode an ordinary new file gets (0666 minus the umask).
* `check_output_file` / `check_output_dir` check an output path before the work
  starts (not a folder where a file is wanted, a writable parent, ...).
* Every `OSError` at write time (disk full, read-only file system, ...) becomes one
  `PadimError` line naming the file.
* `read_safetensors` reads a model or feature file back, or says in one line why it cannot.
* `new_digest` / `file_digest`: the content digest behind every cache and saved result (BLAKE2b).
* `publish` moves one run's files from a staging folder into an output folder that other files
  share: it replaces only what an earlier run wrote there (listed in the folder's manifest, unchanged
  since), never a file of the user's, and two runs publishing at once go one after the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs publishing into one folder at once may then mix
    fcntl = None

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


# ---------------------------------------------------------------------------- one run's files in a shared folder
#: The hidden file in an output folder listing what the last run wrote there: {"files": {name: [size, mtime_ns]}}.
MANIFEST = ".padim-manifest.json"


def _stamp(path: Path) -> list[int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if os.path.isfile(path) and not os.path.islink(path) else None


def run_files(folder: str | os.PathLike) -> set[str]:
    """The names of the files an earlier run wrote into `folder` (its manifest) that are still as it wrote
    them (same size and modification time): those `publish` may replace. A file changed since is the user's."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(listed, dict):
        return set()
    return {name for name, stamp in listed.items()
            if isinstance(name, str) and name == Path(name).name and not name.startswith(".")
            and _stamp(folder / name) == stamp}


def foreign_names(folder: str | os.PathLike) -> set[str]:
    """The names in `folder` (lower-cased: a case-insensitive disk takes A.png for a.png) that no run
    wrote: the user's files, which `publish` never replaces."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    ours = run_files(folder)
    return {n.lower() for n in names if n not in ours and not n.startswith(".")}


def check_names_free(folder: Path, names, taken: set[str], option: str = "--out") -> None:
    """PadimError where one of `names` is a file of the user's in `folder` (`taken`: `foreign_names`)."""
    clash = sorted(n for n in names if n.lower() in taken)
    if clash:
        raise PadimError(f"{option} {folder} holds {clash[0]}, which no earlier run wrote there (or which changed "
                         f"since: see {MANIFEST}); it is never replaced: move it away or choose another folder")


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block is done (a handful of renames)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive advisory lock on `folder` for the block (flock on the folder itself: nothing is left
    behind); without locks (Windows, some network disks) the block runs unlocked."""
    fd = None
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
    try:
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def publish(stage: str | os.PathLike, folder: str | os.PathLike, last: str, option: str = "--out") -> list[str]:
    """Move every file of the folder `stage` into `folder` as one run's outputs; returns their names.

    Under a lock on `folder` (another run publishing there waits) and with Ctrl-C held: a file of the
    user's (not in the manifest, or changed since) under one of the names is an error and nothing moves;
    then the manifest lists the earlier run's files and the new ones, the earlier run's files go (`last`
    first: a folder without it holds no complete run), the new ones move in (`last` last), and the manifest
    lists the new ones. A crash half-way leaves every file of ours listed, for the next run to replace.
    """
    stage, folder = Path(stage), Path(folder)
    names = sorted(p.name for p in stage.iterdir())
    new = {n: _stamp(stage / n) for n in names}  # a rename keeps size and modification time
    try:
        with signals_held(), _locked(folder):
            check_names_free(folder, names, foreign_names(folder), option)
            old = {n: _stamp(folder / n) for n in run_files(folder)}
            write_json(folder / MANIFEST, {"files": {**old, **new}})
            for name in sorted(old, key=lambda n: n != last):
                (folder / name).unlink(missing_ok=True)
            for name in sorted(names, key=lambda n: n == last):
                os.replace(stage / name, folder / name)
            write_json(folder / MANIFEST, {"files": new})
    except OSError as e:
        raise PadimError(f"cannot write to {option} {folder}: {os_error_text(e)}") from None
    return names
