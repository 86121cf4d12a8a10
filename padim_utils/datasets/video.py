"""Video files in and out, with PyAV (ffmpeg inside its wheel): count, decode, encode, re-encode.

Some original ShanghaiTech Campus videos are reported to decode badly with some ffmpeg builds (anomalib
re-encodes them, :func:`reencode_video` does the same); a video that PyAV cannot read, or that ends
before the frame count its container announces (a truncated file), raises a one-line
:class:`padim_utils.errors.PadimError` naming it. ``av`` is imported where a video is opened, so the
rest of the package runs without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import PadimError
from ..extras import optional

__all__ = ["VIDEO_EXT", "count_frames", "read_video", "write_video", "reencode_video", "sample_indices"]

#: The videos' file name ending (STC's training videos are MPEG-4 AVI).
VIDEO_EXT = ".avi"


def _av():
    return optional("av")  # the `video` extra; absent: one line naming its install


def _video_error(path: Path, exc: BaseException) -> PadimError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return PadimError(f"cannot read video {path}: {text}")


def count_frames(path: str | os.PathLike) -> int:
    """Number of video frames in a file (its packets are counted, nothing is decoded).

    A video that ends before the frame count its container announces (a truncated copy, a
    download cut short) is refused with a PadimError naming it, rather than read as a short video.
    """
    av = _av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PadimError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            announced = int(stream.frames or 0)  # from the container's header; 0 where it gives none
            packets = [packet.size for packet in container.demux(stream) if packet.dts is not None]
    except PadimError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _video_error(path, exc) from None
    if len(packets) < announced:
        raise PadimError(f"video {path} ends early: its container announces {announced} frames but only "
                         f"{len(packets)} are in the file (truncated? copy or download it again)")
    return sum(1 for size in packets if size)  # empty packets repeat a frame: the decoder gives nothing for them


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Decode frames of a video as RGB uint8 arrays ``(H, W, 3)``: ``{frame index: array}``.

    ``indices`` None decodes every frame; otherwise only those frames are kept
    (decoding still runs from the start: videos are read sequentially). A frame
    index the video does not reach raises PadimError.
    """
    av = _av()
    path = Path(path)
    wanted = None if indices is None else set(int(i) for i in indices)
    out: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PadimError(f"cannot read video {path}: it has no video stream")
            last = max(wanted) if wanted else None
            for i, frame in enumerate(container.decode(video=0)):
                if wanted is None or i in wanted:
                    out[i] = frame.to_ndarray(format="rgb24")
                if last is not None and i >= last:
                    break
    except PadimError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _video_error(path, exc) from None
    if not out and (wanted is None or wanted):
        raise PadimError(f"cannot read video {path}: no frame could be decoded")
    if wanted is not None and len(out) < len(wanted):
        missing = sorted(wanted - set(out))
        raise PadimError(f"cannot read video {path}: frame {missing[0]} not reached ({len(out)} of "
                         f"{len(wanted)} wanted frames decoded; padim_utils.datasets.video.reencode_video can rewrite it)")
    return out


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 as an MPEG-4 (part 2) AVI, as the STC videos are.

    At least one frame; H and W must be even (yuv420p); ``fps`` a whole number >= 1. Anything else is one
    PadimError line before anything is written. Written to a temporary name, then renamed.
    """
    av = _av()
    path = Path(path)
    frames = _checked_frames(path, frames, fps)
    h, w = frames.shape[1:3]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with av.open(str(tmp), "w", format="avi") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.bit_rate = 8_000_000
            for arr in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except (av.FFmpegError, OSError) as exc:
        raise PadimError(f"cannot write video {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _checked_frames(path: Path, frames, fps) -> np.ndarray:
    """`frames` as a (T >= 1, H, W, 3) uint8 array with H and W even, and `fps` >= 1; else one PadimError line."""
    try:
        arr = np.asarray(frames)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged lists, tensors on a GPU
        raise PadimError(f"cannot write video {path}: frames must be one (T, H, W, 3) array ({exc})") from None
    if arr.size == 0 and arr.ndim < 4 or arr.ndim == 4 and len(arr) == 0:
        raise PadimError(f"cannot write video {path}: no frames (a video needs at least one)")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise PadimError(f"cannot write video {path}: frames must be RGB frames of shape (T, H, W, 3), got shape "
                         f"{arr.shape}")
    if arr.dtype != np.uint8:
        raise PadimError(f"cannot write video {path}: frames must be uint8 (0-255), got {arr.dtype}")
    h, w = arr.shape[1:3]
    if h < 2 or w < 2 or h % 2 or w % 2:
        raise PadimError(f"cannot write video {path}: frames must have an even height and width, got {h}x{w}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise PadimError(f"cannot write video {path}: fps must be a whole number >= 1, got {fps!r}")
    return arr


def reencode_video(src: str | os.PathLike, dst: str | os.PathLike, fps: int = 25) -> Path:
    """Decode ``src`` frame by frame and write it again as MPEG-4 AVI at ``dst`` (streamed, one frame in memory).

    For original STC videos that a decoder reads badly (anomalib re-encodes them too):
    ``reencode_video("01_001.avi", "fixed/01_001.avi")``, then use the fixed file in
    ``training/videos``. Written to a temporary name, then renamed.
    """
    av = _av()
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with av.open(str(src)) as inp, av.open(str(tmp), "w", format="avi") as out:
            if not inp.streams.video:
                raise PadimError(f"cannot read video {src}: it has no video stream")
            stream = None
            for frame in inp.decode(video=0):
                arr = frame.to_ndarray(format="rgb24")
                if stream is None:
                    h, w = arr.shape[0] - arr.shape[0] % 2, arr.shape[1] - arr.shape[1] % 2
                    stream = out.add_stream("mpeg4", rate=fps)
                    stream.width, stream.height, stream.pix_fmt, stream.bit_rate = w, h, "yuv420p", 8_000_000
                new = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")
                for packet in stream.encode(new):
                    out.mux(packet)
            if stream is None:
                raise PadimError(f"cannot read video {src}: no frame could be decoded")
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, dst)
    except PadimError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _video_error(src, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def sample_indices(n_frames: int, k: int | None) -> np.ndarray:
    """``k`` frame indices spread uniformly over ``0 .. n_frames - 1`` (first and last included).

    ``k`` None or ``k >= n_frames``: every frame. ``k == 1``: the middle frame.
    Deterministic: the same video always gives the same frames.

    >>> sample_indices(10, 4)       # 0 .. 9 in 3 equal steps of 3, rounded
    array([0, 3, 6, 9])
    >>> sample_indices(10, 1)       # the middle frame
    array([4])
    >>> sample_indices(3, None)     # every frame
    array([0, 1, 2])
    """
    if k is None or k >= n_frames:
        return np.arange(n_frames)
    if k == 1:
        return np.array([(n_frames - 1) // 2])
    pos = np.arange(k) * (n_frames - 1) / (k - 1)
    return np.floor(pos + 0.5).astype(np.int64)  # distinct, as the spacing is >= 1

