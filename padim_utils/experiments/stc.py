"""ShanghaiTech Campus experiments: one PaDiM per scene (Table IV), and the walkway study of chapter 07.

    found = stc_source(quick=False)                                   # real STC if present, else synthetic
    record = run_stc(preset("paper_r18"), found.root, found.scenes[0])  # frame AUROC, pixel AUROC of one scene
    rows = frames_study("data/walkway", preset("quick"))              # more training frames, same codec or not
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from ..config import PadimConfig
from ..datasets import data_home, make_synthetic_stc
from ..datasets.stc import TRAIN_CODECS, STCDataset, sample_indices, stc_scenes
from ..datasets.walkway import HORIZON, SCENE
from .benchmark import evaluate_cached, run_benchmark
from .features import FeatureCache

__all__ = ["STCSource", "stc_source", "run_stc", "frames_study"]


class STCSource(NamedTuple):
    """Where the STC data of a run lives: real under $PADIM_DATA/stc, else the synthetic STC-layout set."""

    root: Path
    source: str  # "ShanghaiTech Campus" or "synthetic STC-layout"
    scenes: tuple[str, ...]
    frames_per_video: int  # training frames sampled uniformly from each training video


def stc_source(quick: bool, real: bool = True) -> STCSource:
    """Find STC at `$PADIM_DATA/stc` (the official layout: training/videos, testing/frames), else generate the
    synthetic STC-layout set under `$PADIM_DATA/stc_synthetic` (`_quick` in quick mode; a few seconds, once).
    `real=False`: the synthetic set even where the real data is present. Training frames per video: 10 real
    (2 quick), 24 synthetic (6 quick)."""
    found = data_home() / "stc"
    if real and (found / "training" / "videos").is_dir() and (found / "testing" / "frames").is_dir():
        return STCSource(found, "ShanghaiTech Campus", tuple(stc_scenes(found)), 2 if quick else 10)
    root = make_synthetic_stc(data_home() / ("stc_synthetic_quick" if quick else "stc_synthetic"),
                              frames_per_video=12 if quick else 24)
    return STCSource(Path(root), "synthetic STC-layout", tuple(stc_scenes(root)), 6 if quick else 24)


def run_stc(cfg: PadimConfig, root, scene: str, frames_per_video: int | None = None,
            progress: bool = True, train_codec: str = "match") -> dict:
    """Fit PaDiM on one scene's training frames, score its test frames: a benchmark record.

    This is :func:`padim_utils.experiments.benchmark.run_benchmark` on the scene's frames (``dataset="stc"``):
    ``frame_auroc`` is the image AUROC of the frame scores (the paper's frame-level AUROC) and
    ``pixel_auroc`` the pixel AUROC of the maps; the record adds ``scene``, ``frames_per_video``,
    ``train_codec`` (see :class:`STCDataset`) and ``n_test_anomalous``, and names the category ``stc_<scene>``.
    """
    record = run_benchmark(cfg, root, scene, progress=progress, dataset="stc", frames_per_video=frames_per_video,
                           train_codec=train_codec)
    labels = STCDataset(root, scene, "test", geometry=cfg.geometry).labels
    record.update(scene=str(scene), category=f"stc_{scene}", frames_per_video=frames_per_video,
                  n_test_anomalous=int(sum(labels)))
    return record


def frames_study(root: str | os.PathLike, cfg: PadimConfig, frames_per_video=(8, 24, None),
                 train_codecs=TRAIN_CODECS, example: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """PaDiM on the walkway scene for each number of training frames per video and each ``train_codec``.

    One row per (frames per video, codec), in that order: ``train_frames``, ``frames_per_video``,
    ``train_codec``, ``frame_auroc`` (image AUROC of the max-of-map scores), ``pixel_auroc``, ``aupro``
    (to FPR 0.3), ``background_median`` (the median anomaly score of the wall, the top 30% of the frame,
    static in every frame), ``cart_median`` (the median inside the cart's masks) and ``example``, the anomaly map
    (S, S) of test frame ``example`` (default: the middle frame of the first clip, the cart in full view).
    The backbone runs once per codec over every training frame and once over the test frames
    (:class:`padim_utils.experiments.features.FeatureCache`); fewer frames per video are subsets of the same frames,
    exactly those :class:`STCDataset` samples.
    """
    test = FeatureCache.compute(STCDataset(root, SCENE, "test", geometry=cfg.geometry), cfg, progress=progress)
    example = len(test) // len({p.rsplit("/", 2)[-2] for p in test.paths}) // 2 if example is None else example
    rows = []
    for codec in train_codecs:
        train_set = STCDataset(root, SCENE, "train", train_codec=codec, geometry=cfg.geometry)
        train = FeatureCache.compute(train_set, cfg, progress=progress)
        videos = [path.rsplit("#", 1) for path in train_set.paths]  # [video, frame index]
        length = {v: sum(1 for w, _ in videos if w == v) for v, _ in videos}
        for k in frames_per_video:
            keep = [i for i, (v, t) in enumerate(videos) if int(t) in set(sample_indices(length[v], k).tolist())]
            out = evaluate_cached(cfg, train.subset(keep), test)
            maps, masks = out["result"]["maps"], out["result"]["masks"].bool()  # (N, S, S)
            rows.append({"train_frames": len(keep), "frames_per_video": k, "train_codec": codec,
                         "frame_auroc": out["image_auroc"], "pixel_auroc": out["pixel_auroc"],
                         "aupro": out["pixel_aupro"],
                         "background_median": float(maps[:, : int(HORIZON * maps.shape[1])].median()),
                         "cart_median": float(maps[masks].median()), "example": maps[example],
                         "example_frame": example})
    order = {k: i for i, k in enumerate(frames_per_video)}
    return sorted(rows, key=lambda r: (order[r["frames_per_video"]], list(train_codecs).index(r["train_codec"])))
