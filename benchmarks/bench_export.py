"""What deploying PaDiM as one ONNX graph costs, in one run.

  size      each ONNX file against the model's .safetensors file, and what fills it
            (`padim_utils.export.size_breakdown`: precision matrices P * d^2 * 4 bytes, means, backbone);
  accuracy  image AUROC, pixel AUROC and AU-PRO of the exported graphs themselves (onnxruntime over the
            whole test set), precision matrices stored in float32 or float16, at each d (default 100 and 50),
            beside torch's `Padim.predict_dataset` for each d;
  timing    latency (median of --repeats calls after 2 warm-up calls) and throughput of onnxruntime on the
            CPU against torch on the CPU (`Padim.predict`) at batch 1 and 32, the same images, both with
            --threads threads (`padim_utils.export.time_inference`).

The training features are computed once (`FeatureCache`) and every d is fitted from them. Timings need
the machine to itself: run it alone.

    python benchmarks/bench_export.py                                  # real bottle, offline_lite0, all parts
    python benchmarks/bench_export.py --skip-timing                    # sizes and accuracy only
    python benchmarks/bench_export.py --config quick --d 32 16 --data data/synthetic --category bottle_syn \\
        --repeats 2 --tag smoke                                        # a smoke run on the embedded data

Results: results/export_<tag>.json and .md (tag: the device, "cpu", unless --tag).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mvtec_ad"
PRECISIONS = ("float32", "float16")
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def _images(dataset):
    import torch

    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # (N, 3, S, S) uint8


def measure_variants(cfg, train_cache, test, test_cache, ds, work: Path, progress: bool) -> tuple[list, dict]:
    """Fit each d, export it in each precision, and measure file sizes, validation and accuracy."""
    from padim_utils.export import compare_with_torch, onnx_session, run_onnx, size_breakdown
    from padim_utils.metrics import evaluate
    from padim_utils.model import Padim

    images = _images(test)
    rows, models = [], {}
    for d in ds:
        model = Padim(cfg.replace(d=d)).fit(train_cache, progress=progress)
        models[d] = model
        torch_result = model.predict_dataset(test_cache, progress=False)
        torch_metrics = evaluate(torch_result["labels"], torch_result["scores"], torch_result["masks"],
                                 torch_result["maps"])
        safetensors = model.save(work / f"padim_d{d}.safetensors")
        for precision in PRECISIONS:
            path = work / f"padim_d{d}_{precision}.onnx"
            start = time.perf_counter()
            model.export_onnx(path, precision=precision, images=images[:: max(1, len(images) // 8)])
            export_s = time.perf_counter() - start
            session = onnx_session(path)
            validation = compare_with_torch(session, model, images, precision=precision)
            maps, scores = run_onnx(session, images, batch_size=16)
            metrics = evaluate(torch_result["labels"], scores, torch_result["masks"], maps)
            rows.append({"d": d, "precision": precision, "onnx_bytes": path.stat().st_size,
                         "safetensors_bytes": safetensors.stat().st_size, "breakdown": size_breakdown(model, precision),
                         "export_seconds": export_s, "max_relative_error_vs_torch": validation.max_relative_error,
                         "max_pixel_relative_error_vs_torch": validation.max_pixel_relative_error,
                         "ranks_equal_torch": validation.ranks_equal,
                         **{k: float(metrics[k]) for k in METRICS},
                         **{f"torch_{k}": float(torch_metrics[k]) for k in METRICS}})
            print(f"d={d} {precision}: {path.stat().st_size / 2**20:.1f} MiB, image AUROC {metrics['image_auroc']:.4f}, "
                  f"pixel AUROC {metrics['pixel_auroc']:.4f}, AU-PRO {metrics['pixel_aupro']:.4f}", flush=True)
    return rows, models


def measure_timing(model, onnx_files: dict, images, batches, repeats: int, threads: int) -> list[dict]:
    """torch (Padim.predict) and onnxruntime at each batch size, `threads` threads each."""
    from padim_utils.export import onnx_session, run_onnx, time_inference

    runs = []
    for batch in batches:
        t = time_inference(model.predict, images, batch, repeats=repeats)
        runs.append({"runtime": "torch", "variant": "float32", **t})
        print(f"torch        batch {batch:3d}: {t['latency_s'] * 1e3:8.1f} ms, {t['images_per_s']:6.1f} img/s", flush=True)
        for variant, path in onnx_files.items():
            session = onnx_session(path, threads=threads)
            t = time_inference(lambda x: run_onnx(session, x), images, batch, repeats=repeats)
            runs.append({"runtime": "onnxruntime", "variant": variant, **t})
            print(f"onnxruntime  batch {batch:3d} ({variant}): {t['latency_s'] * 1e3:8.1f} ms, "
                  f"{t['images_per_s']:6.1f} img/s", flush=True)
            del session
    return runs


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']} · torch {report['torch']} · onnxruntime {report['onnxruntime']} · "
             f"{report['date']}", "",
             f"{report['config']} on {report['category']} ({report['n_test']} test images at {report['image_size']} px); "
             f"P = {report['positions']} positions.", "",
             "| d | precision stored | ONNX file (MiB) | of which precision matrices (MiB) | .safetensors model (MiB) | "
             "maps vs torch (of peak / worst pixel) | image AUROC | pixel AUROC | AU-PRO | torch: image / pixel AUROC / AU-PRO |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["variants"]:
        lines.append(f"| {r['d']} | {r['precision']} | {_mib(r['onnx_bytes'])} | {_mib(r['breakdown']['precision'])} | "
                     f"{_mib(r['safetensors_bytes'])} | {r['max_relative_error_vs_torch']:.1e} / "
                     f"{r['max_pixel_relative_error_vs_torch']:.1e} | {r['image_auroc']:.4f} | "
                     f"{r['pixel_auroc']:.4f} | {r['pixel_aupro']:.4f} | {r['torch_image_auroc']:.4f} / "
                     f"{r['torch_pixel_auroc']:.4f} / {r['torch_pixel_aupro']:.4f} |")
    lines += ["", "Maps vs torch: the largest |onnx - torch| of a map over its peak, worst image, then the worst single pixel "
                  "relative; the float16 rows against Padim.predict with the precision matrices rounded to float16 (what "
                  "the file stores). Accuracy: the exported graph run by onnxruntime over the whole test set."]
    if report.get("timing"):
        lines += ["", f"Timing: {report['threads']} threads each, median of {report['repeats']} calls after 2 warm-up "
                      f"calls, d = {report['timing_d']}.", "",
                  "| runtime | precision stored | batch | latency (ms) | throughput (img/s) |", "|---|---|---:|---:|---:|"]
        for t in report["timing"]:
            lines.append(f"| {t['runtime']} | {t['variant']} | {t['batch_size']} | {t['latency_s'] * 1e3:.1f} | "
                         f"{t['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec AD root (default: ../shared/data/mvtec_ad)")
    p.add_argument("--category", default="bottle")
    p.add_argument("--config", default="offline_lite0", help="preset (default offline_lite0)")
    p.add_argument("--d", nargs="+", type=int, default=[100, 50], help="d values (the first is timed)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--skip-timing", action="store_true", help="sizes and accuracy only")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--tag", default="cpu", help="suffix of the result files (default cpu)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    data = Path(args.data)
    if not (data / args.category / "train").is_dir():
        sys.exit(f"bench_export: no MVTec AD category {args.category!r} under {data}; pass --data")
    sys.path.insert(0, str(HERE.parent))
    import os

    import onnxruntime
    import torch

    from padim_utils.config import preset
    from padim_utils.datasets import MVTecDataset
    from padim_utils.measure import cpu_name
    from padim_utils.experiments.features import FeatureCache
    from padim_utils.files import write_json, write_text

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    cfg = preset(args.config).replace(device="cpu")
    train = MVTecDataset(data, args.category, "train", geometry=cfg.geometry)
    test = MVTecDataset(data, args.category, "test", geometry=cfg.geometry)
    progress = not args.quiet
    train_cache = FeatureCache.compute(train, cfg, progress=progress)
    test_cache = FeatureCache.compute(test, cfg, progress=progress)
    report = {"machine": f"{cpu_name()}, {threads} threads", "platform": platform.platform(),
              "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "date": time.strftime("%Y-%m-%d"), "config": args.config, "category": args.category,
              "image_size": cfg.out_size, "n_train": len(train), "n_test": len(test)}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        rows, models = measure_variants(cfg, train_cache, test, test_cache, args.d, Path(tmp), progress)
        report["variants"] = rows
        report["positions"] = int(models[args.d[0]].mean.shape[0])
        if not args.skip_timing:
            d = args.d[0]
            files = {prec: Path(tmp) / f"padim_d{d}_{prec}.onnx" for prec in PRECISIONS}
            report.update(timing=measure_timing(models[d], files, _images(test), args.batches, args.repeats, threads),
                          threads=threads, repeats=args.repeats, timing_d=d)
    out = Path(args.out_dir)
    write_json(out / f"export_{args.tag}.json", report)
    write_text(out / f"export_{args.tag}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
