"""padim_utils.files: atomic writes with the umask's modes, write errors and output paths as one line."""

import errno
import os
import stat

import pytest

from padim_utils import files
from padim_utils.errors import PadimError
from padim_utils.files import check_output_dir, check_output_file, write_json, write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_text(tmp_path / "a.txt", "hello\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    # as an ordinary file written with open() would get
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_replacing_a_file_keeps_no_temp_and_the_umask_mode(tmp_path, umask):
    umask(0o022)
    write_json(tmp_path / "r.json", {"a": 1})
    write_json(tmp_path / "r.json", {"a": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system")])
def test_write_error_becomes_one_line_and_leaves_no_temp(tmp_path, monkeypatch, code, text):
    def full(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(type(tmp_path), "write_text", full)
    with pytest.raises(PadimError) as info:
        write_text(tmp_path / "out.txt", "x")
    assert str(info.value) == f"cannot write {tmp_path / 'out.txt'}: {text}"
    assert list(tmp_path.iterdir()) == []


def test_temp_file_creation_error_becomes_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(PadimError, match="cannot write .*out.txt: Read-only file system"):
        write_text(tmp_path / "out.txt", "x")


def test_check_output_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert check_output_file(tmp_path / "new" / "m.safetensors", "--out") == tmp_path / "new" / "m.safetensors"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    check_output_file(tmp_path / "afile", "--out")  # an existing file is replaced
    with pytest.raises(PadimError, match=r"^--out .* is a folder; name a file"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(PadimError, match=r"^--out is empty"):
        check_output_file("", "--out")
    with pytest.raises(PadimError, match=r"afile is not a folder"):
        check_output_file(tmp_path / "afile" / "sub" / "m.safetensors", "--out")
    with pytest.raises(PadimError, match=r"not a regular file"):
        check_output_file("/dev/null", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no probe left


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_output_on_a_pseudo_file_system():
    with pytest.raises(PadimError, match=r"^cannot write to the folder of --out /proc/padim.json"):
        check_output_file("/proc/padim.json", "--out")
    with pytest.raises(PadimError, match=r"^cannot write to --out /proc"):
        check_output_dir("/proc", "--out")


def test_check_output_on_a_read_only_file_system(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(PadimError, match=r"^cannot write to the folder of --out .*: Read-only file system$"):
        check_output_file(tmp_path / "m.safetensors", "--out")


def test_check_output_dir(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert check_output_dir(tmp_path / "a" / "b", "--figures") == tmp_path / "a" / "b"
    check_output_dir(tmp_path, "--figures")
    with pytest.raises(PadimError, match=r"^--figures .*afile exists and is not a folder"):
        check_output_dir(tmp_path / "afile", "--figures")
    with pytest.raises(PadimError, match=r"^--figures is empty"):
        check_output_dir(" ", "--figures")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_publish_replaces_only_its_own_files_even_after_a_crash_half_way(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")

    def run(tag, names):
        stage = tmp_path / f"stage-{tag}"
        stage.mkdir()
        for name in names:
            (stage / name).write_text(tag)
        return files.publish(stage, out, last="scores.csv")

    def visible():
        return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))

    run("1", ["a.png", "b.png", "scores.csv"])
    assert visible() == ["a.png", "b.png", "notes.txt", "scores.csv"]
    real, calls = os.replace, []

    def crash_on_third(*args, **kwargs):  # 1: the manifest, 2: the first file moved in, 3: the second
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "replace", crash_on_third)
    with pytest.raises(PadimError, match=f"cannot write to --out {out}: Input/output error"):
        run("2", ["c.png", "d.png", "scores.csv"])
    monkeypatch.setattr(os, "replace", real)
    assert visible() == ["c.png", "notes.txt"]  # run 1 gone, part of run 2 in, no scores.csv: no complete run
    run("3", ["a.png", "scores.csv"])  # replaces what is left of run 2, never the user's notes
    assert visible() == ["a.png", "notes.txt", "scores.csv"]
    assert {p.name: p.read_text() for p in out.iterdir() if p.suffix != ".txt" and not p.name.startswith(".")} \
        == {"a.png": "3", "scores.csv": "3"}
    (out / "a.png").write_text("changed by hand")  # no longer what run 3 wrote: the user's now
    with pytest.raises(PadimError, match="holds a.png, which no earlier run wrote there"):
        run("4", ["a.png", "scores.csv"])
    assert (out / "a.png").read_text() == "changed by hand" and (out / "scores.csv").read_text() == "3"
