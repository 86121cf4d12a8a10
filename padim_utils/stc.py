"""ShanghaiTech Campus (STC) video anomaly data: loader, a synthetic generator, one experiment per scene.

Official layout (one folder, e.g. ``data/stc``)::

    <root>/training/videos/<scene>_<clip>.avi                 normal videos only
    <root>/testing/frames/<scene>_<clip>/<frame>.jpg          test clips, one image per frame
    <root>/testing/test_frame_mask/<scene>_<clip>.npy         (T,) 0/1 label per frame
    <root>/testing/test_pixel_mask/<scene>_<clip>.npy         (T, H, W) mask per frame (> 0 = anomalous)

``<scene>`` is ``01`` ... ``13``. PaDiM treats video frames as independent images
(Defard et al., 2020, Sec. 4.1 and Table 4): one model per scene, fitted on frames
of that scene's training videos, frames resized to 256 x 256 **without** a crop;
it reports frame-level AUROC (each frame's image score against its 0/1 label) and
pixel-level AUROC. The paper does not say how many training frames it used;
``frames_per_video`` samples that many frames uniformly (first and last included)
from every training video, ``None`` takes every frame.

Videos are decoded with PyAV (ffmpeg inside its wheel). Some original STC videos
are reported to decode badly with some ffmpeg builds (anomalib re-encodes them);
a video that PyAV cannot read, or that ends before the frame count its container
announces (a truncated file), raises a one-line :class:`PadimError` naming it.

The codec gap: training frames come out of a video decoder, test frames out of
JPEG files. On a static background the training frames differ only by the video
codec's noise, so a test JPEG of the same background looks anomalous to PaDiM.
By default (``train_codec="match"``) every decoded training frame is therefore
stored as the test frames are, with noise at that codec's error level
(:func:`match_test_codec`; chapter 07, "Which frames to train on", measures it).

Test frames are ordered by the number in their names (``0.jpg ... 10.jpg``), as
the rows of the masks are (:func:`order_frames`); :meth:`STCDataset.check_files`
checks every frame and mask before a model runs.

Memory: training frames are decoded one video at a time and only the sampled
frames of the most recently used video are kept (already resized), so a
``DataLoader`` that reads items in order (``shuffle=False``, what ``Padim`` does)
decodes each video once. Test frames are read from their JPEG files; pixel masks
are memory-mapped, so a clip's (T, H, W) array is never loaded at once.

Synthetic data: :func:`make_synthetic_stc` writes a small set in the official
layout (a static campus-like scene per scene id, pedestrians walking along a
path; test clips where a vehicle, a cyclist or a person on the lawn appears for a
while) with exact pixel masks, so tests and the course run without the real data.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .config import MIN_IMAGE_SIZE, PadimConfig
from .data import (_check_geometry, _check_interpolation, _image_tensor, _subfolders, check_image_file,
                   decode_image, list_images, load_rgb, read_image, resample_filter, resize_crop)
from .errors import PadimError
from .progress import progress_bar

__all__ = [
    "STCDataset",
    "STCClip",
    "ANOMALY_KINDS",
    "GENERATOR_VERSION",
    "make_synthetic_stc",
    "render_stc_clip",
    "run_stc",
    "sample_indices",
    "stc_scenes",
    "read_video",
    "write_video",
    "reencode_video",
    "count_frames",
    "TRAIN_CODECS",
    "jpeg_settings",
    "jpeg_round_trip",
    "match_test_codec",
    "check_count",
    "check_frame_size",
    "order_frames",
    "write_synthetic_folder",
]

GENERATOR_VERSION = 1
MARKER = ".synthetic.json"
VIDEO_EXT = ".avi"
ANOMALY_KINDS = ("vehicle", "cyclist", "off_path")
SPLITS = ("train", "test")


# --------------------------------------------------------------------------- #
# video decoding
# --------------------------------------------------------------------------- #
def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a pinned dependency
        raise PadimError("reading STC videos needs PyAV: pip install av") from None
    return av


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
                         f"{len(wanted)} wanted frames decoded; padim_utils.stc.reencode_video can rewrite it)")
    return out


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 as an MPEG-4 (part 2) AVI, as the STC videos are.

    H and W must be even (yuv420p). Written to a temporary name, then renamed.
    """
    av = _av()
    path = Path(path)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise PadimError(f"video frames must have an even height and width, got {h}x{w}")
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
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    """
    if k is None or k >= n_frames:
        return np.arange(n_frames)
    if k == 1:
        return np.array([(n_frames - 1) // 2])
    pos = np.arange(k) * (n_frames - 1) / (k - 1)
    return np.floor(pos + 0.5).astype(np.int64)  # distinct, as the spacing is >= 1


# --------------------------------------------------------------------------- #
# the codec gap between training videos and test JPEGs
# --------------------------------------------------------------------------- #
#: What :class:`STCDataset` does to decoded training frames: "match" (the default) stores them as the test
#: frames are stored, with noise at that codec's error level (:func:`match_test_codec`); "none": as decoded.
TRAIN_CODECS = ("match", "none")
#: Without JPEG test frames to copy, "match" adds noise at the error level of a JPEG of this quality.
FALLBACK_JPEG_QUALITY = 90


def jpeg_settings(image: str | os.PathLike) -> dict[str, Any] | None:
    """How a JPEG file was compressed: its quantisation tables, chroma subsampling and mode, ready to
    compress another picture the same way (:func:`jpeg_round_trip`); None for a file that is not a JPEG."""
    from PIL import JpegImagePlugin

    im = read_image(image, "test frame", exif_transpose=False)  # decoded; keeps the JPEG's tables
    if im.format != "JPEG":
        return None
    settings = {"qtables": im.quantization, "mode": im.mode}
    subsampling = JpegImagePlugin.get_sampling(im)
    if subsampling != -1:
        settings["subsampling"] = subsampling
    return settings


def jpeg_round_trip(frame: np.ndarray, settings: dict[str, Any] | None) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 compressed as JPEG with ``settings`` (:func:`jpeg_settings`; None: quality
    FALLBACK_JPEG_QUALITY) and decoded again, as RGB uint8."""
    img = Image.fromarray(frame)
    settings = dict(settings or {"quality": FALLBACK_JPEG_QUALITY})
    mode = settings.pop("mode", "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **settings)
    return np.asarray(decode_image(buf.getvalue(), "JPEG round trip").convert("RGB"))


def match_test_codec(frame: np.ndarray, settings: dict[str, Any] | None, rng: np.random.Generator) -> np.ndarray:
    """A decoded training frame (H, W, 3) uint8 made to look stored as the test frames are.

    Training frames come out of an MPEG-4 decoder, test frames out of JPEG files. Where the camera
    sees a static background, every training frame is the same picture up to the video codec's
    small noise, so PaDiM's Gaussian there is extremely narrow, and a test JPEG of the very same
    background, whose compression errors differ, lands far outside it. Two steps close that gap:

    1. a **codec-noise floor**: Gaussian noise whose standard deviation is the root-mean-square change
       that the test frames' compression makes to this frame (a few grey levels), so the training
       frames vary at least as much as two codecs' versions of one picture differ;
    2. JPEG compression with the test frames' own quantisation tables and chroma subsampling
       (``settings``, from :func:`jpeg_settings`), so the training frames carry the test frames' artefacts.

    ``settings`` None (test frames that are not JPEG files): step 1 only, with the error of a JPEG of
    quality FALLBACK_JPEG_QUALITY (90) as the noise's standard deviation.
    """
    once = jpeg_round_trip(frame, settings)
    sigma = float(np.sqrt(np.mean((once.astype(np.float32) - frame) ** 2)))  # the codec's error on this frame
    noise = rng.standard_normal(frame.shape, dtype=np.float32) * sigma
    noisy = np.clip(np.rint(frame + noise), 0, 255).astype(np.uint8)
    return noisy if settings is None else jpeg_round_trip(noisy, settings)


# --------------------------------------------------------------------------- #
# layout
# --------------------------------------------------------------------------- #
def _scene_of(name: str) -> str:
    return name.split("_", 1)[0]


def _videos(root: Path) -> list[Path]:
    folder = root / "training" / "videos"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == VIDEO_EXT and not p.name.startswith(".")
                  and "_" in p.stem)


def _clips(root: Path) -> list[str]:
    folder = root / "testing" / "frames"
    if not folder.is_dir():
        return []
    return [c for c in _subfolders(folder) if "_" in c]


def stc_scenes(root: str | os.PathLike) -> list[str]:
    """Scene ids (``"01"``, ``"02"``, ...) found in an STC-layout folder, from video and clip names."""
    root = Path(root)
    names = [p.stem for p in _videos(root)] + _clips(root)
    return sorted({_scene_of(n) for n in names})


#: A frame's number in its name: the last run of digits ("000.jpg", "12.jpg", "frame_0007.jpg").
_FRAME_NUMBER = re.compile(r"(.*?)(\d+)(\D*)", re.DOTALL)


def order_frames(frames: Sequence[Path], folder: Path) -> list[Path]:
    """A clip's frame files in the clip's order: by the number in their names, so ``0.jpg, 1.jpg, ...,
    10.jpg`` come in that order (sorting the names as strings would put ``10.jpg`` after ``1.jpg``).

    The rows of a clip's frame and pixel masks are in frame order: a PadimError naming the folder where
    that order cannot be read from the names (a name without a number, names that differ elsewhere
    than in their number, two files with the same number, a number missing between two others).
    """
    if not frames:
        raise PadimError(f"no frames in {folder}")
    keyed = []
    for path in frames:
        m = _FRAME_NUMBER.fullmatch(path.stem)
        if m is None:
            raise PadimError(f"cannot tell the frame order in {folder}: {path.name} has no frame number in its name")
        keyed.append((int(m[2]), m[1], m[3], path))
    patterns = sorted({(prefix, suffix) for _, prefix, suffix, _ in keyed})
    if len(patterns) > 1:
        examples = [next(p.name for _, a, b, p in keyed if (a, b) == pattern) for pattern in patterns[:2]]
        raise PadimError(f"cannot tell the frame order in {folder}: its frame names differ in more than their "
                         f"number ({examples[0]}, {examples[1]})")
    keyed.sort(key=lambda k: k[0])
    for (a, *_, pa), (b, *_, pb) in zip(keyed, keyed[1:]):
        if a == b:
            raise PadimError(f"cannot tell the frame order in {folder}: {pa.name} and {pb.name} have the same number")
        if b != a + 1:
            raise PadimError(f"frame numbers in {folder} jump from {a} ({pa.name}) to {b} ({pb.name}): a frame is "
                             "missing, so the mask rows cannot be matched with the frames")
    return [path for *_, path in keyed]


def check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PadimError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _scene_jpeg(root: Path, scene: str) -> tuple[Path | None, dict[str, Any] | None]:
    """The first test frame of ``scene`` and its JPEG settings; (None, None) without test frames,
    (frame, None) where they are not JPEG files."""
    frames_dir = root / "testing" / "frames"
    for clip in (c for c in _clips(root) if _scene_of(c) == scene):
        frames = list_images(frames_dir / clip)  # by name: any frame will do, a clip's frames share their settings
        if frames:
            check_image_file(frames[0], "frame")
            return frames[0], jpeg_settings(frames[0])
    return None, None


class STCDataset(torch.utils.data.Dataset):
    """Frames of one ShanghaiTech Campus scene, with the items of :class:`~padim_utils.data.MVTecDataset`.

    Parameters
    ----------
    root:
        Folder holding ``training/`` and ``testing/`` (see the module docstring).
    scene:
        Scene id, e.g. ``"01"`` (see :func:`stc_scenes`).
    split:
        ``"train"``: frames decoded from ``training/videos/<scene>_*.avi``;
        ``"test"``: the JPEG frames of ``testing/frames/<scene>_*/`` with their
        frame labels and pixel masks.
    image_size, crop, interpolation:
        Square resize (``"bicubic"`` or ``"bilinear"``) then optional centre crop,
        as in ``padim_utils.data``. The paper resizes STC frames to 256 without a
        crop: the defaults.
    frames_per_video:
        Training frames taken from each video, spread uniformly (see
        :func:`sample_indices`); ``None``: every frame (many thousands per
        scene on the real data). Ignored for the test split (every frame).
    train_codec:
        ``"match"`` (default): each decoded training frame is stored as the
        scene's test frames are (JPEG with their quantisation tables), after
        noise at that codec's error level (:func:`match_test_codec`), so that
        the codec gap between training videos and test JPEGs does not make a
        static background look anomalous. ``"none"``: frames as decoded.
        The test frame whose settings are copied is :attr:`codec_reference`.

    Items are dicts: ``image`` uint8 ``(3, S, S)``, ``mask`` uint8 ``(S, S)`` in
    {0, 1}, ``label`` int (the frame label), ``defect_type`` ``"good"`` or
    ``"anomaly"``, ``path`` str (``<video>.avi#<frame index>`` for training frames).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scene: str,
        split: str = "train",
        image_size: int = 256,
        crop: int | None = None,
        frames_per_video: int | None = None,
        progress: bool = False,
        interpolation: str = "bicubic",
        train_codec: str = "match",
    ) -> None:
        if split not in SPLITS:
            raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
        if train_codec not in TRAIN_CODECS:
            raise PadimError(f"train_codec must be one of {', '.join(TRAIN_CODECS)}, got {train_codec!r}")
        self.train_codec = train_codec
        self.image_size, self.crop = _check_geometry(image_size, crop)
        self.interpolation = _check_interpolation(interpolation)
        if frames_per_video is not None:
            frames_per_video = check_count("frames_per_video", frames_per_video, 1)
        self.frames_per_video = frames_per_video
        self.root = Path(root)
        self.scene = str(scene)
        self.split = split
        if not self.root.is_dir():
            raise PadimError(f"STC root folder not found: {self.root}")
        scenes = stc_scenes(self.root)
        if self.scene not in scenes:
            listed = ", ".join(scenes) if scenes else "none"
            raise PadimError(f"scene {self.scene!r} not found in {self.root}; available scenes: {listed}")

        self.paths: list[str] = []
        self.labels: list[int] = []
        self.defect_types: list[str] = []
        self._frames: list[tuple[Path, int]] = []  # train: (video, frame index)
        self._masks: list[tuple[Path, int] | None] = []  # test: (pixel mask .npy, row)
        self._clips: list[tuple[Path, list[Path]]] = []  # test: (pixel mask .npy, its frames in order)
        self._cache: tuple[Path, dict[int, torch.Tensor]] | None = None
        self.codec_reference: Path | None = None  # train, "match": the test frame whose JPEG settings are copied
        self._jpeg: dict[str, Any] | None = None
        if split == "train":
            self._scan_train(progress)
        else:
            self._scan_test()

    @property
    def out_size(self) -> int:
        """Side of the returned square images: ``crop`` if set, else ``image_size``."""
        return self.crop if self.crop is not None else self.image_size

    # -- layout scanning ---------------------------------------------------- #
    def _scan_train(self, progress: bool) -> None:
        folder = self.root / "training" / "videos"
        if not folder.is_dir():
            raise PadimError(f"missing folder {folder} (expected <root>/training/videos/<scene>_<clip>.avi)")
        videos = [p for p in _videos(self.root) if _scene_of(p.stem) == self.scene]
        if not videos:
            raise PadimError(f"no training videos for scene {self.scene} in {folder} "
                             f"(expected {self.scene}_<clip>{VIDEO_EXT})")
        if self.train_codec == "match":
            self.codec_reference, self._jpeg = _scene_jpeg(self.root, self.scene)
        for video in progress_bar(videos, f"index STC {self.scene}", progress, unit="video"):
            n = count_frames(video)
            if n == 0:
                raise PadimError(f"cannot read video {video}: it has no frames")
            for i in sample_indices(n, self.frames_per_video):
                self._frames.append((video, int(i)))
                self.paths.append(f"{video}#{int(i)}")
                self.labels.append(0)
                self.defect_types.append("good")
                self._masks.append(None)

    def _scan_test(self) -> None:
        testing = self.root / "testing"
        frames_dir = testing / "frames"
        if not frames_dir.is_dir():
            raise PadimError(f"missing folder {frames_dir} (expected <root>/testing/frames/<scene>_<clip>/)")
        clips = [c for c in _clips(self.root) if _scene_of(c) == self.scene]
        if not clips:
            raise PadimError(f"no test clips for scene {self.scene} in {frames_dir}")
        for clip in clips:
            frames = order_frames(list_images(frames_dir / clip), frames_dir / clip)
            labels = self._frame_labels(testing / "test_frame_mask" / f"{clip}.npy", len(frames))
            mask_file = testing / "test_pixel_mask" / f"{clip}.npy"
            masks = _load_npy(mask_file, "pixel mask", mmap=True)
            if masks.ndim != 3 or masks.shape[0] != len(frames):
                raise PadimError(f"pixel mask {mask_file} has shape {tuple(masks.shape)} but {frames_dir / clip} "
                                 f"holds {len(frames)} frames (expected ({len(frames)}, H, W))")
            self._clips.append((mask_file, frames))
            for i, (frame, label) in enumerate(zip(frames, labels)):
                self.paths.append(str(frame))
                self.labels.append(int(label))
                self.defect_types.append("anomaly" if label else "good")
                self._masks.append((mask_file, i))

    def check_files(self) -> None:
        """Check every test frame and pixel mask before any model runs: each frame decodes (about a
        millisecond, see :func:`padim_utils.data.check_image_file`), each clip's masks have its frames'
        height and width and hold no NaN, and some mask holds an anomalous pixel (else pixel AUROC and
        AU-PRO are undefined). PadimError naming the first file at fault. Training videos were already
        checked when the dataset was built (:func:`count_frames`)."""
        if self.split == "train":
            return
        anomalous = False
        for mask_file, frames in self._clips:
            masks = _load_npy(mask_file, "pixel mask", mmap=True)  # (T, H, W), memory-mapped
            if masks.dtype.kind not in "biuf":
                raise PadimError(f"pixel mask {mask_file} holds {masks.dtype} values; expected numbers "
                                 "(0 normal, > 0 anomalous)")
            for frame in frames:
                width, height = check_image_file(frame, "frame")
                if (height, width) != masks.shape[1:]:
                    raise PadimError(f"pixel mask {mask_file} is {masks.shape[2]}x{masks.shape[1]} (width x height) "
                                     f"but frame {frame} is {width}x{height}")
            for start in range(0, masks.shape[0], 64):  # 64 rows at a time: a clip's masks are never all in memory
                rows = np.asarray(masks[start : start + 64])
                if masks.dtype.kind == "f" and not np.isfinite(rows).all():
                    row = start + int(np.nonzero(~np.isfinite(rows).reshape(len(rows), -1).all(1))[0][0])
                    raise PadimError(f"pixel mask {mask_file} holds NaN or infinite values (row {row}, frame "
                                     f"{frames[row].name})")
                if not anomalous and (rows > 0).any():
                    anomalous = True
                    if masks.dtype.kind != "f":
                        break  # integers hold no NaN: nothing more to look at in this clip
        if not anomalous:
            raise PadimError(f"no pixel mask of scene {self.scene} in {self.root / 'testing' / 'test_pixel_mask'} "
                             "has an anomalous pixel: pixel AUROC and AU-PRO are undefined (they need anomalous "
                             "pixels)")

    @staticmethod
    def _frame_labels(path: Path, n_frames: int) -> np.ndarray:
        labels = _load_npy(path, "frame mask")
        if labels.ndim != 1 or labels.shape[0] != n_frames:
            raise PadimError(f"frame mask {path} has shape {labels.shape} but its clip has {n_frames} frames "
                             f"(expected ({n_frames},))")
        if not np.isin(labels, (0, 1)).all():
            raise PadimError(f"frame mask {path} holds values other than 0 and 1")
        return labels.astype(np.int64)

    # -- Dataset protocol ---------------------------------------------------- #
    def __len__(self) -> int:
        return len(self.paths)

    def _train_image(self, index: int) -> torch.Tensor:
        video, frame = self._frames[index]
        if self._cache is None or self._cache[0] != video:
            wanted = [i for v, i in self._frames if v == video]
            decoded = read_video(video, wanted)
            if self.train_codec == "match":  # the same noise for the same frame, whatever else is sampled
                decoded = {i: match_test_codec(a, self._jpeg, np.random.default_rng([zlib.crc32(video.name.encode()), i]))
                           for i, a in decoded.items()}
            resample = resample_filter(self.interpolation)
            tensors = {i: _image_tensor(resize_crop(Image.fromarray(a), self.image_size, self.crop, resample))
                       for i, a in decoded.items()}
            self._cache = (video, tensors)
        return self._cache[1][frame]

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]  # IndexError for out-of-range, as a list
        s = self.out_size
        if self.split == "train":
            image = self._train_image(index)
            mask = torch.zeros((s, s), dtype=torch.uint8)
        else:
            img = load_rgb(path)
            mask_file, row = self._masks[index]
            m = np.asarray(_load_npy(mask_file, "pixel mask", mmap=True)[row]) > 0  # (H, W)
            if m.shape != (img.size[1], img.size[0]):
                raise PadimError(f"pixel mask {mask_file} is {m.shape[1]}x{m.shape[0]} but frame {path} is "
                                 f"{img.size[0]}x{img.size[1]}")
            image = _image_tensor(resize_crop(img, self.image_size, self.crop, resample_filter(self.interpolation)))
            m = resize_crop(Image.fromarray(m.astype(np.uint8)), self.image_size, self.crop, Image.NEAREST)
            mask = torch.from_numpy(np.array(m, dtype=np.uint8))
        return {"image": image, "mask": mask, "label": self.labels[index],
                "defect_type": self.defect_types[index], "path": path}

    def __repr__(self) -> str:
        return (f"STCDataset(root={str(self.root)!r}, scene={self.scene!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size}, crop={self.crop}, interpolation={self.interpolation!r}, "
                f"frames_per_video={self.frames_per_video}, train_codec={self.train_codec!r})")


NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    """A NumPy array from a .npy file; PadimError saying what the file is when it is not one (text, ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)  # the magic and the header's start, where the dtype is
        if not head.startswith(NPY_MAGIC):
            raise PadimError(f"cannot read {what} {path}: not a NumPy .npy file, {_what_it_holds(head)}")
        if b"'descr': '|O'" in head:  # an object array: np.load would speak of pickles or memory maps
            raise PadimError(f"cannot read {what} {path}: it holds Python objects (pickled), not numbers")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise PadimError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PadimError(f"{what} {path} is a folder, not a .npy file") from None
    except (OSError, ValueError, EOFError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise PadimError(f"cannot read {what} {path}: {text}") from None


def _what_it_holds(head: bytes) -> str:
    """What the first bytes of a file that should be a .npy look like, for the error message."""
    if not head:
        return "it is empty"
    if head.startswith(b"PK"):
        return "it is a zip archive (an .npz? save one array with numpy.save)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "no NumPy header at its start (not written by numpy.save?)"
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        shown = " ".join(text.split())[:30]
        return f"it holds text ({shown!r}...); write it with numpy.save"
    return "no NumPy header at its start (not written by numpy.save?)"


# --------------------------------------------------------------------------- #
# one experiment per scene
# --------------------------------------------------------------------------- #
def run_stc(cfg: PadimConfig, root, scene: str, frames_per_video: int | None = None,
            progress: bool = True, train_codec: str = "match") -> dict:
    """Fit PaDiM on one scene's training frames, score its test frames: a benchmark record.

    This is :func:`padim_utils.experiment.run_benchmark` on the scene's frames (``dataset="stc"``):
    ``frame_auroc`` is the image AUROC of the frame scores (the paper's frame-level AUROC) and
    ``pixel_auroc`` the pixel AUROC of the maps; the record adds ``scene``, ``frames_per_video``,
    ``train_codec`` (see :class:`STCDataset`) and ``n_test_anomalous``, and names the category ``stc_<scene>``.
    """
    from .experiment import run_benchmark

    record = run_benchmark(cfg, root, scene, progress=progress, dataset="stc", frames_per_video=frames_per_video,
                           train_codec=train_codec)
    labels = STCDataset(root, scene, "test", image_size=cfg.image_size, crop=cfg.crop,
                        interpolation=cfg.interpolation).labels
    record.update(scene=str(scene), category=f"stc_{scene}", frames_per_video=frames_per_video,
                  n_test_anomalous=int(sum(labels)))
    return record


# --------------------------------------------------------------------------- #
# synthetic STC-layout data
# --------------------------------------------------------------------------- #
@dataclass
class STCClip:
    """One rendered clip: ``frames`` and ``clean`` uint8 (T, H, W, 3), ``masks`` bool (T, H, W).

    ``clean`` is the same clip without the anomaly; ``masks`` is exactly where the
    anomaly was drawn, so ``masks == (frames != clean).any(-1)``; ``labels`` (T,)
    is ``masks.any((1, 2))``; ``anomaly`` names the anomaly kind (None for training).
    """

    frames: np.ndarray
    clean: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    anomaly: str | None


def _rng(seed: int, *key: Any) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [zlib.crc32(str(k).encode()) for k in key])


class _Canvas:
    """Hard-edged (aliasing, on purpose: masks are exact) shapes on an (H, W) grid."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w]

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx + 0.5 - cx) / max(rx, 0.5)) ** 2 + ((self.yy + 0.5 - cy) / max(ry, 0.5)) ** 2 <= 1.0


def _background(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, dict[str, float]]:
    """A static campus-like scene: buildings, lawn, a paved path; returns (H, W, 3) uint8 and the geometry."""
    h, w = cv.h, cv.w
    img = np.empty((h, w, 3), np.float64)
    horizon = h * rng.uniform(0.28, 0.36)
    path_top, path_bot = h * rng.uniform(0.5, 0.56), h * rng.uniform(0.72, 0.78)
    img[:] = rng.uniform([60, 120, 50], [90, 160, 80])  # lawn
    img[cv.yy < horizon] = rng.uniform([150, 140, 130], [200, 190, 180])  # building wall
    for _ in range(int(rng.integers(4, 8))):  # windows
        x0, y0 = rng.uniform(0, w - 12), rng.uniform(2, horizon - 8)
        img[cv.rect(x0, y0, x0 + rng.uniform(6, 14), y0 + rng.uniform(4, 8))] = rng.uniform(40, 90, 3)
    paved = cv.rect(0, path_top, w, path_bot)
    img[paved] = rng.uniform([150, 150, 150], [185, 180, 175])
    for _ in range(int(rng.integers(2, 4))):  # trees on the lawn behind the path
        cx = rng.uniform(0, w)
        img[cv.ellipse(cx, horizon + 0.6 * (path_top - horizon), w * 0.05, (path_top - horizon) * 0.35)] = (
            rng.uniform([20, 70, 20], [40, 100, 40]))
    shade = 1.0 + 0.06 * (cv.yy / h - 0.5)[..., None]  # a little light gradient
    img = np.clip(np.rint(img * shade), 0, 255).astype(np.uint8)
    return img, {"horizon": horizon, "path_top": path_top, "path_bot": path_bot}


def _person(cv: _Canvas, x: float, y_feet: float, height: float, step: int) -> list[tuple[np.ndarray, str]]:
    """A walking figure: (support, part) pairs, part in head / body / legs."""
    bw = height * 0.28
    body = cv.rect(x - bw / 2, y_feet - height * 0.78, x + bw / 2, y_feet - height * 0.38)
    head = cv.ellipse(x, y_feet - height * 0.88, height * 0.1, height * 0.11)
    spread = bw * (0.35 if step % 2 else 0.1)
    legs = (cv.rect(x - spread - bw * 0.15, y_feet - height * 0.38, x - spread + bw * 0.1, y_feet)
            | cv.rect(x + spread - bw * 0.1, y_feet - height * 0.38, x + spread + bw * 0.15, y_feet))
    return [(legs, "legs"), (body, "body"), (head, "head")]


def _draw(img: np.ndarray, parts: list[tuple[np.ndarray, str]], colours: dict[str, np.ndarray]) -> np.ndarray:
    support = np.zeros(img.shape[:2], bool)
    for where, part in parts:
        img[where] = colours[part]
        support |= where
    return support


def _walkers(rng: np.random.Generator, geo: dict[str, float], w: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(int(rng.integers(2, 5))):
        out.append({
            "x0": rng.uniform(0, w), "speed": rng.choice([-1, 1]) * rng.uniform(0.8, 1.6),
            "y": rng.uniform(geo["path_top"] + 0.25 * (geo["path_bot"] - geo["path_top"]), geo["path_bot"]),
            "colours": {"head": rng.uniform([170, 120, 90], [230, 180, 150]), "body": rng.uniform(20, 235, 3),
                        "legs": rng.uniform(20, 90, 3)},
        })
    return out


def _anomaly_parts(kind: str, cv: _Canvas, geo: dict[str, float], t: int, a: dict[str, Any]):
    """The anomaly's shapes at time ``t`` of its window."""
    x = a["x0"] + a["speed"] * t
    if kind == "vehicle":  # a small car driving along the path
        L, H = a["size"], a["size"] * 0.45
        y = a["y"]
        return [(cv.rect(x - L / 2, y - H, x + L / 2, y - H * 0.25), "body"),
                (cv.rect(x - L / 4, y - H * 1.45, x + L / 4, y - H), "roof"),
                (cv.ellipse(x - L / 3, y - H * 0.2, H * 0.22, H * 0.22), "wheel"),
                (cv.ellipse(x + L / 3, y - H * 0.2, H * 0.22, H * 0.22), "wheel")]
    if kind == "cyclist":  # a person on a bike, fast
        h = a["size"]
        parts = _person(cv, x, a["y"] - h * 0.25, h, 0)
        wheels = (cv.ellipse(x - h * 0.3, a["y"] - h * 0.12, h * 0.14, h * 0.14)
                  | cv.ellipse(x + h * 0.3, a["y"] - h * 0.12, h * 0.14, h * 0.14))
        return [(wheels, "wheel")] + parts
    if kind == "off_path":  # a person walking on the lawn in front of the path
        return _person(cv, x, a["y"], a["size"], t)
    raise AssertionError(kind)


def render_stc_clip(
    scene: str = "01",
    split: str = "train",
    clip: int = 0,
    n_frames: int = 24,
    image_size: tuple[int, int] = (120, 160),
    seed: int = 0,
) -> STCClip:
    """Render one clip exactly as :func:`make_synthetic_stc` encodes it (before video/JPEG compression).

    Training clips are normal. A test clip holds one anomaly (kind
    ``ANOMALY_KINDS[clip % 3]``) visible during a window in the middle of the clip;
    the frames before and after it are normal.
    """
    if split not in SPLITS:
        raise PadimError(f"unknown split {split!r}: expected 'train' or 'test'")
    h, w = image_size
    cv = _Canvas(h, w)
    background, geo = _background(_rng(seed, "scene", scene), cv)
    rng = _rng(seed, split, scene, clip)
    walkers = _walkers(rng, geo, w)
    person_h = (geo["path_bot"] - geo["path_top"]) * 1.1
    kind = None if split == "train" else ANOMALY_KINDS[clip % len(ANOMALY_KINDS)]
    if kind is not None:
        start = int(rng.integers(n_frames // 5, n_frames // 3 + 1))
        stop = int(rng.integers(2 * n_frames // 3, n_frames - n_frames // 6 + 1))
        direction = rng.choice([-1, 1])
        if kind == "vehicle":
            a = {"size": w * 0.3, "speed": 2.0, "y": geo["path_bot"] - 1}
        elif kind == "cyclist":
            a = {"size": person_h, "speed": 4.0, "y": geo["path_bot"] - 1}
        else:
            a = {"size": person_h, "speed": 1.0, "y": rng.uniform(geo["path_bot"] + person_h * 0.4, h - 1)}
        a["speed"] *= direction
        travel = a["speed"] * (stop - start)
        a["x0"] = w / 2 - travel / 2 + rng.uniform(-0.1, 0.1) * w
        colours = {"body": rng.uniform([150, 0, 0], [255, 60, 60]), "roof": rng.uniform(30, 80, 3),
                   "wheel": np.array([15.0, 15.0, 15.0]), "head": np.array([200.0, 150.0, 120.0]),
                   "legs": np.array([40.0, 40.0, 120.0])}
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    clean = np.empty_like(frames)
    masks = np.zeros((n_frames, h, w), bool)
    for t in range(n_frames):
        img = background.astype(np.float64)
        for p in walkers:
            x = (p["x0"] + p["speed"] * t) % (w + 20) - 10
            _draw(img, _person(cv, x, p["y"], person_h, t // 3), p["colours"])
        clean[t] = np.rint(img).astype(np.uint8)
        frames[t] = clean[t]
        if kind is not None and start <= t < stop:
            drawn = np.rint(img).copy()
            support = _draw(drawn, _anomaly_parts(kind, cv, geo, t - start, a), colours)
            frame = np.where(support[..., None], drawn, clean[t]).astype(np.uint8)
            same = support & (frame == clean[t]).all(-1)  # anomaly colour equal to what it covers: nudge
            frame[same] = np.where(clean[t][same] < 255, clean[t][same] + 1, clean[t][same] - 1)
            frames[t], masks[t] = frame, support
    return STCClip(frames=frames, clean=clean, masks=masks, labels=masks.any((1, 2)), anomaly=kind)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_stc(folder: Path, params: dict[str, Any]) -> None:
    size, seed, n = tuple(params["image_size"]), params["seed"], params["frames_per_video"]
    videos = folder / "training" / "videos"
    frames_dir = folder / "testing" / "frames"
    fmask, pmask = folder / "testing" / "test_frame_mask", folder / "testing" / "test_pixel_mask"
    for d in (videos, frames_dir, fmask, pmask):
        d.mkdir(parents=True)
    jobs = [(s, "train", c) for s in params["scenes"] for c in range(params["n_train_videos"])]
    jobs += [(s, "test", c) for s in params["scenes"] for c in range(params["n_test_clips"])]
    for scene, split, c in progress_bar(jobs, "synth STC", None, unit="clip"):
        clip = render_stc_clip(scene, split, c, n, size, seed)
        if split == "train":
            write_video(videos / f"{scene}_{c + 1:03d}{VIDEO_EXT}", clip.frames)
            continue
        name = f"{scene}_{c + 1:04d}"
        (frames_dir / name).mkdir()
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(frames_dir / name / f"{t:03d}.jpg", quality=95)
        np.save(fmask / f"{name}.npy", clip.labels.astype(np.uint8))
        np.save(pmask / f"{name}.npy", clip.masks.astype(np.uint8))
    (folder / "README.txt").write_text(
        "SYNTHETIC data in the ShanghaiTech Campus layout, not STC.\n\n"
        f"Drawn by padim_utils.stc (generator version {GENERATOR_VERSION}): static campus-like scenes with\n"
        "people walking along a path (training videos, MPEG-4 AVI); test clips where a vehicle, a cyclist\n"
        "or a person on the lawn appears for a while. Pixel masks are exactly where the anomaly was drawn\n"
        "(before JPEG compression); frame labels are 1 where the mask is not empty.\n"
        f"Parameters are in {MARKER}.\n", encoding="utf-8")


def make_synthetic_stc(
    root: str | os.PathLike,
    scenes: Sequence[str] = ("01", "02"),
    n_train_videos: int = 2,
    frames_per_video: int = 24,
    n_test_clips: int = 3,
    image_size: tuple[int, int] = (120, 160),
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a small synthetic set in the STC layout into ``root`` (which becomes the STC root); return it.

    ``frames_per_video`` frames per training video and per test clip, frames of
    ``image_size`` (height, width; both even, at least 32). ``root`` is written in
    a hidden temporary folder beside it and renamed into place; a ``root`` whose
    ``.synthetic.json`` matches the parameters is kept (unless ``force``); a
    non-empty ``root`` without that marker (real data?) is never touched: PadimError.
    """
    if isinstance(scenes, str):
        scenes = (scenes,)
    scenes = [str(s) for s in scenes]
    if not scenes or any(not s or "_" in s or "/" in s for s in scenes):
        raise PadimError(f"scenes must be non-empty ids without '_' or '/', got {scenes!r}")
    h, w = check_frame_size(image_size)
    params = {
        "generator_version": GENERATOR_VERSION,
        "scenes": sorted(set(scenes)),
        "n_train_videos": check_count("n_train_videos", n_train_videos, 1),
        "frames_per_video": check_count("frames_per_video", frames_per_video, 6),
        "n_test_clips": check_count("n_test_clips", n_test_clips, 1),
        "image_size": [h, w],
        "seed": check_count("seed", seed, 0),
    }
    return write_synthetic_folder(Path(root), params, _write_stc, force)


def check_frame_size(image_size: Any) -> tuple[int, int]:
    """(height, width) of generated video frames: two even numbers (yuv420p) >= MIN_IMAGE_SIZE, else PadimError."""
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise PadimError(f"image_size must be (height, width), got {image_size!r}") from None
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE or h % 2 or w % 2:
        raise PadimError(f"image_size must be two even numbers >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    return h, w


def write_synthetic_folder(root: Path, params: dict[str, Any], write, force: bool = False) -> Path:
    """Write generated data into ``root``: ``write(folder, params)`` fills a hidden temporary folder beside
    it, which is then renamed into place with ``params`` as its ``.synthetic.json`` marker. A ``root``
    whose marker matches ``params`` is kept (unless ``force``); a non-empty ``root`` without a marker
    (real data?) is never touched: PadimError."""
    from .synthetic import _swap_in, _umask

    if root.exists():
        if not root.is_dir():
            raise PadimError(f"STC data root is not a folder: {root}")
        marker = _read_marker(root)
        if marker is None and any(root.iterdir()):
            raise PadimError(f"refusing to overwrite {root}: it is not empty and has no {MARKER} "
                             "(not synthetic data?)")
        if marker == params and not force:
            return root
        if marker is None:
            root.rmdir()  # empty
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"cannot create {root.parent}: {exc.strerror or exc}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        write(tmp, params)
        (tmp / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, root, params, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
