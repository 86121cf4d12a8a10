"""Tests for padim_utils.datasets.download against a local HTTP server on 127.0.0.1: resume, checksums, atomic extraction."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from padim_utils.datasets.registry import BTADDataset
from padim_utils.datasets.download import download, extract, fetch, sources
from padim_utils.errors import PadimError


class _Server:
    """Serves ``files`` (name -> bytes) with Range support; ``cut`` = bytes to send before dropping a response."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.size_on_416 = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):  # RFC 9110: 416 names the file's size, unless told not to
                        self.send_response(416)
                        if server.size_on_416:
                            self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[: server.cut], None  # drop the connection once
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def server():
    with _Server() as s:
        yield s


def _btad_archive(products=("01", "02"), fmt: str = "zip") -> bytes:
    """fmt: "zip", "tar" (gzip-compressed) or "plain tar" (uncompressed, as VisA's archive)."""
    """A tiny BTAD layout inside a top-level BTech_Dataset_transformed/ folder, as the real btad.zip."""
    files = {}
    for p in products:
        for split, kind in (("train", "ok"), ("test", "ok"), ("test", "ko")):
            for i in range(2):
                buf = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 40 * i + 10, np.uint8)).save(buf, format="BMP")
                files[f"BTech_Dataset_transformed/{p}/{split}/{kind}/{i:04d}.bmp"] = buf.getvalue()
        for i in range(2):
            buf = io.BytesIO()
            Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(buf, format="PNG")
            files[f"BTech_Dataset_transformed/{p}/ground_truth/ko/{i:04d}.png"] = buf.getvalue()
    out = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(out, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=out, mode="w" if fmt == "plain tar" else "w:gz") as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _source(server, name: str, data: bytes, sha: str | None = "right") -> dict:
    server.files[name] = data
    return {"url": f"{server.url}/{name}", "filename": name,
            "sha256": hashlib.sha256(data).hexdigest() if sha == "right" else sha, "published_sha256": None}


def test_sources_file_lists_every_dataset():
    src = sources()
    assert set(src) == {"mvtec", "btad", "visa", "stc"}
    for name, s in src.items():
        assert s["licence"] and s["page"].startswith("http") and s["filename"] and s["size"]
        assert s["url"] is None or s["url"].startswith("https://")
        assert s["sha256"] is None or len(s["sha256"]) == 64
        assert s["published_sha256"] is None or (len(s["published_sha256"]) == 64 and s["published_by"])
    assert "non-commercial" in src["mvtec"]["licence"] and "non-commercial" in src["visa"]["licence"]


def test_download_extract_and_licence(server, tmp_path, capsys):
    root = tmp_path / "data" / "btad"
    src = _source(server, "btad.zip", _btad_archive())
    assert download("btad", root, progress=False, source=src) == root
    out = capsys.readouterr().out
    assert "CC BY-SA 4.0" in out and "sha256 verified" in out
    assert sorted(p.name for p in root.iterdir()) == ["01", "02"]
    assert len(BTADDataset(root, "02", "test", image_size=32, crop=None)) == 4
    assert (tmp_path / "data" / "downloads" / "btad.zip").is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["btad", "downloads"]  # no temp folder left
    # a second run reuses the archive and keeps what is there
    n = len(server.requests)
    download("btad", root, progress=False, source=src)
    assert len(server.requests) == n and "kept the existing 01, 02" in capsys.readouterr().out


def test_category_only_and_unverified(server, tmp_path, capsys):
    root = tmp_path / "btad"
    src = _source(server, "btad.tar.gz", _btad_archive(fmt="tar"), sha=None)
    download("btad", root, category="02", progress=False, source=src)
    assert [p.name for p in root.iterdir()] == ["02"]
    out = capsys.readouterr().out
    digest = hashlib.sha256(server.files["btad.tar.gz"]).hexdigest()
    assert f"UNVERIFIED download: no expected sha256 for btad.tar.gz; its sha256 is {digest}" in out
    with pytest.raises(PadimError, match="category '07' not in btad.tar.gz; it holds: 01, 02"):
        download("btad", root, category="07", progress=False, source=src)


def test_resume_after_a_dropped_connection(server, tmp_path):
    data = bytes(range(256)) * 4000  # ~1 MB
    server.files["big.bin"] = data
    server.cut = 300_000
    dest = tmp_path / "big.bin"
    with pytest.raises(OSError):
        fetch(f"{server.url}/big.bin", dest, progress=False, timeout=5)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    fetch(f"{server.url}/big.bin", dest, progress=False, timeout=5)
    assert server.requests[-1] == ("big.bin", "bytes=300000-")
    assert dest.read_bytes() == data and not part.exists()


def test_resume_through_download(server, tmp_path, capsys):
    data = _btad_archive()
    src = _source(server, "btad.zip", data)
    server.cut = len(data) // 2
    root = tmp_path / "btad"
    with pytest.raises(PadimError) as info:
        download("btad", root, progress=False, source=src, timeout=5)
    msg = str(info.value)
    assert "\n" not in msg and "rerun to resume" in msg and "by hand" in msg
    assert not root.exists()
    download("btad", root, progress=False, source=src, timeout=5)
    assert server.requests[-1][1] == f"bytes={len(data) // 2}-"
    assert sorted(p.name for p in root.iterdir()) == ["01", "02"]


def test_bad_checksum(server, tmp_path):
    src = _source(server, "btad.zip", _btad_archive(), sha="0" * 64)
    root = tmp_path / "btad"
    with pytest.raises(PadimError) as info:
        download("btad", root, progress=False, source=src)
    msg = str(info.value)
    assert "\n" not in msg and "checksum mismatch for btad.zip" in msg and "by hand" in msg
    assert str(tmp_path / "downloads" / "btad.zip") in msg
    assert not root.exists() and not (tmp_path / "downloads" / "btad.zip").exists()


def test_interrupted_extraction_leaves_no_dataset(server, tmp_path):
    data = _btad_archive(fmt="tar")
    src = _source(server, "btad.tar.gz", data[: len(data) * 2 // 3], sha=None)  # truncated archive
    root = tmp_path / "btad"
    with pytest.raises(PadimError, match="cannot extract"):
        download("btad", root, progress=False, source=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]  # no dataset, no temp folder


def test_offline_and_no_address(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = {"url": f"http://127.0.0.1:{port}/btad.zip", "filename": "btad.zip", "sha256": None}
    with pytest.raises(PadimError) as info:
        download("btad", tmp_path / "btad", progress=False, source=src, timeout=5)
    msg = str(info.value)
    assert "\n" not in msg and "cannot download" in msg and f"put it at {tmp_path / 'downloads' / 'btad.zip'}" in msg
    with pytest.raises(PadimError, match="no direct download address: download shanghaitech.tar.gz by hand"):
        download("stc", tmp_path / "stc", progress=False)
    with pytest.raises(PadimError, match="unknown dataset 'kitti'"):
        download("kitti", tmp_path)


def test_extract_refuses_unsafe_paths(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(PadimError, match="unsafe path"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


# ---------------------------------------------------------------------------- bad --root, damaged archives
def _cli_error(capsys, argv) -> str:
    from padim_utils.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padim: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_root_that_is_a_file_is_refused_before_any_work(server, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    src = _source(server, "btad.zip", _btad_archive())
    import padim_utils.datasets.download as dl

    monkeypatch.setattr(dl, "sources", lambda: {"btad": {**dl.json.loads(dl.SOURCES_FILE.read_text())["btad"],
                                                         **src}})
    err = _cli_error(capsys, ["download", "btad", "--root", str(tmp_path / "afile"), "--quiet"])
    assert f"--root {tmp_path / 'afile'} exists and is not a folder" in err  # before: FileExistsError
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing fetched


def test_root_in_a_read_only_folder_is_refused_before_any_work(server, tmp_path, monkeypatch):
    import errno
    import os

    from padim_utils import files

    src = _source(server, "btad.zip", _btad_archive())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)  # the probe file cannot be created: read-only
    with pytest.raises(PadimError, match=r"^cannot write to .*Read-only file system") as info:
        download("btad", tmp_path / "btad", progress=False, source=src)
    assert "\n" not in str(info.value)
    assert server.requests == [] and list(tmp_path.iterdir()) == []  # checked before the download started


def test_root_under_a_pseudo_file_system(server, tmp_path):
    src = _source(server, "btad.zip", _btad_archive())
    with pytest.raises(PadimError, match="cannot write") as info:  # before: OSError from mkdir
        download("btad", Path("/proc/padim-btad"), progress=False, source=src)
    assert "\n" not in str(info.value) and server.requests == []


@pytest.mark.parametrize("name, cut", [("btad.zip", 2 / 3), ("btad.zip", 0.1), ("btad.tar.gz", 2 / 3)])
def test_a_damaged_archive_is_one_clear_line(tmp_path, name, cut):
    data = _btad_archive(fmt="zip" if name.endswith(".zip") else "tar")
    archive = tmp_path / name
    archive.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(PadimError) as info:
        extract(archive, tmp_path / "out")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot extract {archive}: ") and "download again" in msg
    assert "method" not in msg  # before, for a zip: "- method gz: ReadError(...) - method bz2: ..." (tar's attempts)
    if name.endswith(".zip"):
        assert "a damaged or incomplete zip archive" in msg


# ---------------------------------------------------------------------------- incomplete downloads are never done
def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getmembers()


@pytest.mark.parametrize("damage", ["cut at a member boundary", "a damaged header"])
def test_an_incomplete_plain_tar_is_refused_and_nothing_is_extracted(server, tmp_path, damage):
    data = _btad_archive(fmt="plain tar")
    members = _members(data)
    header = members[len(members) // 2].offset  # the header of a member half-way, on a 512-byte block
    if damage == "cut at a member boundary":
        data = data[:header]  # tarfile reads the first half of the members as if that were all
    else:
        data = data[:header + 148] + b"XXXXXXXX" + data[header + 156:]  # the header's checksum field
    assert 0 < len(_members(data)) < len(members)  # what tarfile alone makes of it, without an error
    root = tmp_path / "visa"
    src = _source(server, "VisA.tar", data, sha=None)
    with pytest.raises(PadimError) as info:
        download("visa", root, progress=False, source=src)
    msg = str(info.value)
    expected = ("without tar's end-of-archive marker (cut short)" if damage.startswith("cut")
                else f"a damaged tar header at byte {header}")
    assert expected in msg and f"after {len(members) // 2} members" in msg and "\n" not in msg
    assert not root.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_a_whole_plain_tar_extracts(server, tmp_path):
    root = tmp_path / "btad"
    download("btad", root, progress=False, source=_source(server, "btad.tar", _btad_archive(fmt="plain tar")))
    assert sorted(p.name for p in root.iterdir()) == ["01", "02"]
    assert len(list(root.rglob("*.bmp"))) == 12


def test_the_published_checksum_is_compared_where_none_is_verified(server, tmp_path, capsys):
    data = _btad_archive()
    src = {**_source(server, "btad.zip", data, sha=None), "published_sha256": hashlib.sha256(data).hexdigest(),
           "published_by": "anomalib"}
    download("btad", tmp_path / "ok", progress=False, source=src)
    assert f"sha256 verified: {src['published_sha256']} (the sum anomalib publishes)" in capsys.readouterr().out
    other = {**src, "filename": "btad2.zip", "url": f"{server.url}/btad2.zip", "published_sha256": "ab" * 32}
    server.files["btad2.zip"] = data
    with pytest.raises(PadimError, match=f"checksum mismatch for btad2.zip: sha256 {hashlib.sha256(data).hexdigest()}, "
                                         f"expected {'ab' * 32} \\(the sum anomalib publishes\\)"):
        download("btad", tmp_path / "bad", progress=False, source=other)
    assert not (tmp_path / "bad").exists() and (tmp_path / "downloads" / "btad2.zip.bad").is_file()


@pytest.mark.parametrize("stale, size_on_416, requests", [
    (b"x" * 100, True, 2),  # larger than the file: 416, then the whole file again
    (b"x" * 100, False, 2),  # a 416 without the file's size: the same
    (b"", True, 1),  # exactly the file's size: complete, kept
])
def test_a_stale_part_is_complete_only_at_the_files_size(server, tmp_path, stale, size_on_416, requests):
    data = bytes(range(256)) * 40
    server.files["a.bin"] = data
    server.size_on_416 = size_on_416
    part = tmp_path / "a.bin.part"
    part.write_bytes(data + stale if stale else data)
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False, timeout=5)
    assert (tmp_path / "a.bin").read_bytes() == data and not part.exists()
    assert len(server.requests) == requests and server.requests[0] == ("a.bin", f"bytes={len(data) + len(stale)}-")
