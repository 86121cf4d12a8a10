"""One experiment: fit on a category's normal images, score its test set, compute every metric.

    record = run_benchmark(preset("offline_lite0"), "data/synthetic", "bottle_syn")
    print(results_table([record]))

The record is a flat dict (metrics, timings, memory, the machine, the full config),
the same one `padim benchmark` writes as JSON and the course notebooks tabulate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..config import PadimConfig
from ..datasets.images import load_mask, resize_crop
from ..datasets.registry import open_dataset
from ..errors import PadimError
from ..markdown import format_cell, table_header, table_row
from ..measure import device_name, peak_memory_bytes, reset_peak_memory, timed
from ..metrics import METRIC_LABELS, evaluate, f1_max, image_auroc
from ..model import Padim
from ..plots import pick_examples, plot_overlays, plot_score_histogram, save_figure

__all__ = ["run_benchmark", "evaluate_cached", "markdown_row", "results_table", "MARKDOWN_HEADER", "RESULT_COLUMNS"]


def run_benchmark(cfg: PadimConfig, root, category: str, figures: Path | None = None,
                  progress: bool = True, dataset: str = "mvtec", compile: bool = False, **options) -> dict:
    """Fit on the normal training images, predict the test set, compute every metric: the benchmark's record.

    ``dataset`` and ``options`` pick the data (`padim_utils.datasets.registry.open_dataset`: mvtec, rd-mvtec, stc,
    btad, visa, folder). Without ground-truth masks (a folder dataset without ``mask_dir``) the pixel
    metrics are None and a note says so; for STC ``frame_auroc`` repeats ``image_auroc`` under the
    paper's name. ``compile``: run the backbone through `torch.compile` (see `Padim`).
    """
    train = open_dataset(dataset, root, category, "train", geometry=cfg.geometry, **options)
    test = open_dataset(dataset, root, category, "test", geometry=cfg.geometry, **options)
    for split in (train, test):  # before the fit: every file decodes, every mask fits its image (ms a file)
        split.check_files()
    where = f"test_dir {test.test_dir}" if dataset == "folder" else f"{dataset} {category!r} in {test.root}"
    check_metrics_defined(test, where)  # before the fit: which metrics are undefined
    model = Padim(cfg, compile=compile)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    _, fit_s = timed(model.fit, train, progress=progress)
    result, predict_s = timed(model.predict_dataset, test, progress=progress)
    try:
        if getattr(test, "has_masks", True):
            metrics = evaluate(result["labels"], result["scores"], result["masks"], result["maps"])
        else:
            print(f"note: no ground-truth masks for {category!r} (no mask_dir): pixel AUROC and AU-PRO skipped")
            f1, threshold = f1_max(result["labels"], result["scores"])
            metrics = {"image_auroc": image_auroc(result["labels"], result["scores"]), "image_f1": f1,
                       "image_f1_threshold": threshold, "pixel_auroc": None, "pixel_aupro": None}
    except ValueError as e:
        raise PadimError(f"metrics undefined on {_test_folder(test)}: {e}") from None
    bad = sorted(k for k, v in metrics.items() if v is not None and not math.isfinite(float(v)))
    if bad:
        raise PadimError(f"{', '.join(bad)} of {_test_folder(test)} came out NaN or infinite; not reported")
    record = {
        **{k: None if v is None else float(v) for k, v in metrics.items()},
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "n_train": len(train),
        "n_test": len(test),
        "backbone": cfg.backbone,
        "d": model.d,
        "device": str(model.device),
        "device_name": device_name(model.device),
        "peak_memory_bytes": peak_memory_bytes(model.device),
        "config": cfg.to_dict(),
        "category": category,
        "dataset": dataset,
        "padim_utils_version": __version__,
        "torch_version": torch.__version__,
    }
    if dataset == "stc":
        record["frame_auroc"] = record["image_auroc"]
        record["train_codec"] = train.train_codec
    if figures is not None:
        save_benchmark_figures(Path(figures), category, test, result, metrics)
    return record


def evaluate_cached(cfg: PadimConfig, train, test, progress: bool = False, model: Padim | None = None) -> dict:
    """Fit `cfg` on cached training features and evaluate it on cached test features: seconds, not minutes.

    `train`, `test`: `FeatureCache`s of the same backbone and image size as `cfg` (see `features.py`).
    `model`: an unfitted `Padim` for `cfg` to use instead of building one (e.g. sharing a backbone).
    Returns the metrics of `metrics.evaluate` plus `fit_seconds`, `predict_seconds`, `d`, and the
    fitted `model` and `result` (maps, scores, labels, masks) for plotting.
    """
    model = Padim(cfg) if model is None else model
    _, fit_s = timed(model.fit, train, progress=progress)
    result, predict_s = timed(model.predict_dataset, test, progress=progress)
    metrics = evaluate(result["labels"], result["scores"], result["masks"], result["maps"])
    return {**{k: float(v) for k, v in metrics.items()}, "fit_seconds": fit_s, "predict_seconds": predict_s,
            "d": model.d, "model": model, "result": result}


def _test_folder(test):
    """What to name in a message about a test split: its folder where the dataset has one."""
    if hasattr(test, "scene"):  # STC
        return f"scene {test.scene} in {test.root / 'testing'}"
    return test.category_dir / "test" if hasattr(test, "category_dir") else type(test).__name__


def check_metrics_defined(test, name: str | None = None) -> None:
    """PadimError naming the metrics a test split cannot give, and why: no fit needed, labels and masks only.

    `test`: a dataset with `labels` (0 good, 1 defective) and, where it has masks, `mask_paths`;
    `name`: how messages call it (default: its test folder).
    """
    where = name or _test_folder(test)
    n_defect = sum(1 for y in test.labels if y == 1)
    if n_defect == 0:
        raise PadimError(f"the test set of {where} holds only normal images (no defective image): image AUROC, "
                         "image F1, pixel AUROC and AU-PRO are all undefined (they need defective test images)")
    if n_defect == len(test.labels):
        raise PadimError(f"the test set of {where} holds only anomalous images (no good image): image AUROC is "
                         "undefined (it needs good and defective images)")
    masks = [p for p in getattr(test, "mask_paths", None) or [] if p is not None]
    if not masks or not getattr(test, "has_masks", True):
        return  # no mask files to look at before the fit
    for mask_path in masks:
        mask = resize_crop(load_mask(mask_path), test.image_size, test.crop, Image.NEAREST)
        if np.asarray(mask).any():
            return
    folder = test.category_dir / "ground_truth" if hasattr(test, "category_dir") else Path(masks[0]).parent
    raise PadimError(f"no mask in {folder} has a defect pixel (at {test.out_size}px): "
                     "pixel AUROC and AU-PRO are undefined (they need defect pixels)")


def save_benchmark_figures(figures: Path, category: str, test, result: dict, metrics: dict) -> None:
    """`<category>_examples.png` (images, masks, maps on one colour scale, with its colour bar) and
    `<category>_scores.png` (score histogram)."""
    idx = pick_examples(result["scores"], result["labels"], n=6)
    fig = plot_overlays([test[i]["image"] for i in idx], [result["masks"][i] for i in idx],
                        [result["maps"][i] for i in idx], scores=[result["scores"][i] for i in idx],
                        labels=[result["labels"][i] for i in idx], titles=[test.defect_types[i] for i in idx],
                        title=f"{category}: the most and least anomalous test images")
    save_figure(fig, figures / f"{category}_examples.png")
    fig = plot_score_histogram(result["scores"], result["labels"], metrics.get("image_f1_threshold"),
                               title=f"{category}: image scores of the test set")
    save_figure(fig, figures / f"{category}_scores.png")


#: The columns of a table of benchmark records: record key -> header.
RESULT_COLUMNS = {"category": "category", "backbone": "backbone", "d": "d",
                  **{m: METRIC_LABELS[m] for m in ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro")},
                  "fit_seconds": "fit s", "predict_seconds": "predict s"}
MARKDOWN_HEADER = table_header(RESULT_COLUMNS.values())


def markdown_row(r: dict) -> str:
    """One benchmark record as a row under `MARKDOWN_HEADER` (metrics that were skipped read n/a)."""
    return table_row(format_cell(r.get(k), ".1f" if k.endswith("seconds") else ".3f", missing="n/a")
                     for k in RESULT_COLUMNS)


def results_table(records: list[dict]) -> str:
    """Benchmark records as one markdown table."""
    return "\n".join([MARKDOWN_HEADER, *(markdown_row(r) for r in records)])
