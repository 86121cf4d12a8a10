"""ShanghaiTech Campus (STC) video anomaly data: the layout, the loader, the codec gap.

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

Videos are decoded with PyAV (:mod:`padim_utils.datasets.video`). Some original STC
videos are reported to decode badly with some ffmpeg builds (anomalib re-encodes them);
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

Synthetic data in this layout, with exact pixel masks:
:func:`padim_utils.datasets.stc_synthetic.make_synthetic_stc` and the walkway scene
(:mod:`padim_utils.datasets.walkway`), so tests and the course run without the real data.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, JpegImagePlugin

from ..config import Geometry
from ..errors import PadimError
from ..progress import progress_bar
from .base import ImageDataset, check_split
from .generated import check_count
from .images import check_image_file, decode_image, list_images, load_rgb, read_image, subfolders
from .video import VIDEO_EXT, count_frames, read_video, sample_indices

__all__ = [
    "STCDataset",
    "stc_scenes",
    "order_frames",
    "TRAIN_CODECS",
    "jpeg_settings",
    "jpeg_round_trip",
    "match_test_codec",
    "sample_indices",
]


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
    return [c for c in subfolders(folder) if "_" in c]


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

    >>> [p.name for p in order_frames([Path("10.jpg"), Path("9.jpg"), Path("8.jpg")], Path("clip"))]
    ['8.jpg', '9.jpg', '10.jpg']
    >>> order_frames([Path("0.jpg"), Path("2.jpg")], Path("clip"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    padim_utils.errors.PadimError: frame numbers in clip jump from 0 (0.jpg) to 2 (2.jpg): a frame is missing, ...
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


class STCDataset(ImageDataset):
    """Frames of one ShanghaiTech Campus scene, with the items of every :class:`~padim_utils.datasets.base.ImageDataset`.

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
    image_size, crop, interpolation (or geometry):
        Square resize (``"bicubic"`` or ``"bilinear"``) then optional centre crop,
        as in ``padim_utils.datasets.images``. The paper resizes STC frames to 256 without a
        crop: the defaults. Frames are always resized as they are read (``resize_on_load`` is
        not looked at): a video's sampled frames are kept resized.
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
    ``mask_paths`` are all None: the test masks are rows of .npy files, not image files.
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
        *,
        geometry: Geometry | None = None,
    ) -> None:
        check_split(split)
        if train_codec not in TRAIN_CODECS:
            raise PadimError(f"train_codec must be one of {', '.join(TRAIN_CODECS)}, got {train_codec!r}")
        self.train_codec = train_codec
        super().__init__(geometry, image_size=image_size, crop=crop, interpolation=interpolation)
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

        self._frames: list[tuple[Path, int]] = []  # train: (video, frame index)
        self._masks: list[tuple[Path, int] | None] = []  # test: (pixel mask .npy, row)
        self._clips: list[tuple[Path, list[Path]]] = []  # test: (pixel mask .npy, its frames in order)
        self._cache: tuple[Path, dict[int, torch.Tensor]] | None = None
        self.codec_reference: Path | None = None  # train, "match": the test frame whose JPEG settings are copied
        self._jpeg: dict[str, Any] | None = None
        if split == "train":
            self.scan_train(progress)
        else:
            self.scan_test()

    # -- layout scanning ---------------------------------------------------- #
    def scan_train(self, progress: bool) -> None:
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
                self.add_item(f"{video}#{int(i)}", 0, "good")
                self._masks.append(None)

    def scan_test(self) -> None:
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
                self.add_item(frame, int(label), "anomaly" if label else "good")
                self._masks.append((mask_file, i))

    def check_files(self) -> None:
        """Check every test frame and pixel mask before any model runs: each frame decodes (about a
        millisecond, see :func:`padim_utils.datasets.images.check_image_file`), each clip's masks have its frames'
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
    def _train_image(self, index: int) -> torch.Tensor:
        video, frame = self._frames[index]
        if self._cache is None or self._cache[0] != video:
            wanted = [i for v, i in self._frames if v == video]
            decoded = read_video(video, wanted)
            if self.train_codec == "match":  # the same noise for the same frame, whatever else is sampled
                decoded = {i: match_test_codec(a, self._jpeg, np.random.default_rng([zlib.crc32(video.name.encode()), i]))
                           for i, a in decoded.items()}
            tensors = {i: self.resize_image(Image.fromarray(a)) for i, a in decoded.items()}
            self._cache = (video, tensors)
        return self._cache[1][frame]

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]  # IndexError for out-of-range, as a list
        if self.split == "train":
            return self.item(index, self._train_image(index), self.resize_mask(None))
        img = load_rgb(path)
        mask_file, row = self._masks[index]
        m = np.asarray(_load_npy(mask_file, "pixel mask", mmap=True)[row]) > 0  # (H, W)
        if m.shape != (img.size[1], img.size[0]):
            raise PadimError(f"pixel mask {mask_file} is {m.shape[1]}x{m.shape[0]} but frame {path} is "
                             f"{img.size[0]}x{img.size[1]}")
        return self.item(index, self.resize_image(img), self.resize_mask(Image.fromarray(m.astype(np.uint8))))

    def __repr__(self) -> str:
        return self.describe({"root": str(self.root), "scene": self.scene, "split": self.split},
                             {"frames_per_video": self.frames_per_video, "train_codec": self.train_codec})


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
