"""How hard is the embedded synthetic dataset? PaDiM with three kinds of features.

The embedded data must be found by pretrained features but not trivially by raw
pixels or by an untrained network. This script fits the same per-position
Gaussians (padim_utils.gaussian / scoring / metrics) on
  raw     : raw RGB pixels of each 4x4 patch (48 values per patch, stride 4),
  random  : EfficientNet-Lite0 with random weights (shape-test backbone),
  imagenet: EfficientNet-Lite0 with its ImageNet weights (the course's backbone),
and writes results/synthetic_<device>.json and .md.

    python benchmarks/bench_synthetic.py [--root data/synthetic] [--d 100]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from padim_utils.config import preset
from padim_utils.datasets import MVTecDataset, collate, list_categories, make_synthetic_mvtec
from padim_utils.files import write_json, write_text
from padim_utils.gaussian import GaussianStats
from padim_utils.markdown import markdown_table
from padim_utils.metrics import METRIC_LABELS, evaluate
from padim_utils.model import Padim
from padim_utils.scoring import anomaly_maps, image_scores, mahalanobis


def raw_patches(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> (B, 48, S/4, S/4): every 4x4 RGB patch as one vector, scaled to [0, 1]."""
    return F.pixel_unshuffle(images.float() / 255.0, 4)


def raw_pixel_padim(train, test, cfg) -> dict:
    def batches(ds):
        return DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate)

    stats = None
    for batch in batches(train):
        emb = raw_patches(batch["image"])
        if stats is None:
            stats = GaussianStats(emb.shape[-2] * emb.shape[-1], emb.shape[1])
        stats.update(emb)
    mean, precision = stats.finalize(cfg.eps)
    maps, labels, masks = [], [], []
    for batch in batches(test):
        images = batch["image"]
        maps.append(anomaly_maps(mahalanobis(raw_patches(images), mean, precision), images.shape[-1], cfg.sigma,
                                 cfg.interpolation))
        labels.append(batch["label"])
        masks.append(batch["mask"])
    maps = torch.cat(maps)
    return evaluate(torch.cat(labels), image_scores(maps), torch.cat(masks), maps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    root = make_synthetic_mvtec(args.root)
    cfg = preset("offline_lite0").replace(d=args.d)
    rows = []
    for category in list_categories(root):
        train = MVTecDataset(root, category, "train", geometry=cfg.geometry)
        test = MVTecDataset(root, category, "test", geometry=cfg.geometry)
        results = {"raw": raw_pixel_padim(train, test, cfg)}
        for name, pretrained in (("random", False), ("imagenet", True)):
            torch.manual_seed(0)  # the random-init weights
            model = Padim(cfg.replace(pretrained=pretrained)).fit(train, progress=False)
            out = model.predict_dataset(test, progress=False)
            results[name] = evaluate(out["labels"], out["scores"], out["masks"], out["maps"])
        for name, m in results.items():
            rows.append({"category": category, "features": name, **{k: float(v) for k, v in m.items()}})
            print(f"{category:12s} {name:9s} image AUROC {m['image_auroc']:.3f}  pixel AUROC "
                  f"{m['pixel_auroc']:.3f}  AU-PRO {m['pixel_aupro']:.3f}", flush=True)
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    out_dir = Path(args.out_dir)
    write_json(out_dir / "synthetic_cpu.json", {"machine": machine, "d": args.d, "rows": rows})
    columns = {"category": "category", "features": "features",
               **{m: METRIC_LABELS[m] for m in ("image_auroc", "pixel_auroc", "pixel_aupro")}}
    write_text(out_dir / "synthetic_cpu.md", f"Embedded synthetic data, PaDiM d={args.d}, {machine}\n\n"
               + markdown_table(rows, columns) + "\n")


if __name__ == "__main__":
    main()
