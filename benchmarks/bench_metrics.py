"""Time `padim_utils.metrics` on a synthetic set the size of the MVTec AD test set.

The set: ``--n-images`` seeded ``--size`` x ``--size`` float32 anomaly maps
(smooth PaDiM-like noise plus a blurred response of varying strength inside
the defects) and masks with MVTec-like defects (ellipses, thin scratches,
irregular blobs; 1258 of every 1725 images defective, as in MVTec AD). The
defaults give 1,725 images and 113 M pixels, the whole MVTec AD test set at
256 x 256.

Each measurement runs in a fresh subprocess that loads the set from ``.npy``
files, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and
then times the call, so "peak RSS" is the high-water mark of resident memory
of that process during the metric (inputs and interpreter included) and
"above inputs" subtracts the resident memory just before the call. On CUDA
the peak GPU memory is ``torch.cuda.max_memory_allocated``.

Checks: ``pixel_auroc`` against ``sklearn.metrics.roc_auc_score`` on the full
set, and ``aupro`` against a straightforward sort-once numpy implementation
(below) on the first ``--check-images`` images.

Usage::

    python benchmarks/bench_metrics.py                  # CPU, full size
    python benchmarks/bench_metrics.py --device cuda --skip-sklearn
    python benchmarks/bench_metrics.py --n-images 200   # quick run

Writes ``metrics_<device>.json`` and ``metrics_<device>.md`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1024**3


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------


def _defect_mask(rng, size):
    """One to three MVTec-like defects: ellipse, thin scratch or irregular blob."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        kind = rng.choice(["ellipse", "scratch", "blob"], p=[0.5, 0.25, 0.25])
        if kind == "ellipse":
            a, b = rng.uniform(0.02, 0.15, 2) * size
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            mask |= (u / a) ** 2 + (v / b) ** 2 <= 1
        elif kind == "scratch":  # thin line; 1 px wide diagonals touch only at corners
            th = rng.uniform(0, np.pi)
            half = rng.uniform(0.05, 0.25) * size
            width = rng.choice([0.5, 1.0, 2.0])
            along = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            across = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            mask |= (np.abs(along) <= half) & (np.abs(across) <= width / 2)
        else:
            r = rng.uniform(0.04, 0.12) * size
            noise = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 3)
            dist = np.hypot(xx - cx, yy - cy) / r
            mask |= (dist + 4 * noise) < 1
    return mask


def make_dataset(n_images, size, seed=0):
    """Masks ``(N, size, size)`` bool and maps ``(N, size, size)`` float32."""
    masks = np.zeros((n_images, size, size), bool)
    maps = np.empty((n_images, size, size), np.float32)
    n_defective = round(n_images * 1258 / 1725)
    low = max(size // 4, 1)
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        if i < n_defective:
            masks[i] = _defect_mask(rng, size)
        # PaDiM-like: low-resolution noise, upsampled and blurred
        noise = ndimage.zoom(rng.standard_normal((low, low)).astype(np.float32), size / low, order=1)
        response = ndimage.gaussian_filter(masks[i].astype(np.float32), 4) * rng.uniform(0.2, 3.0)
        maps[i] = ndimage.gaussian_filter(1.0 + 0.5 * noise[:size, :size] + response, 4)
    return masks, maps


# ---------------------------------------------------------------------------
# straightforward reference AU-PRO (sort once, float64 weight arrays)
# ---------------------------------------------------------------------------


def reference_aupro(masks, maps, limit=0.3):
    """The usual implementation: per-pixel weight arrays, one argsort, cumsums."""
    weight = np.zeros(masks.shape, np.float64)  # 1/|region| for defect pixels
    n_regions = 0
    for i in range(masks.shape[0]):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        if k:
            sizes = np.bincount(lab.ravel())
            inv = np.concatenate(([0.0], 1.0 / sizes[1:]))
            weight[i] = inv[lab]
        n_regions += k
    scores = maps.ravel()
    order = np.argsort(scores)[::-1]
    s = scores[order]
    fpr = np.cumsum(~masks.ravel()[order]) / np.count_nonzero(~masks)
    pro = np.cumsum(weight.ravel()[order]) / n_regions
    keep = np.append(s[1:] != s[:-1], True)  # last point of each tie group
    fpr = np.concatenate(([0.0], fpr[keep], [1.0]))
    pro = np.concatenate(([0.0], np.minimum(pro[keep], 1.0), [1.0]))
    j = np.searchsorted(fpr, limit, side="right")
    area = np.trapezoid(pro[:j], fpr[:j])
    if fpr[j - 1] < limit:
        y = np.interp(limit, fpr[j - 1 : j + 1], pro[j - 1 : j + 1])
        area += (limit - fpr[j - 1]) * (pro[j - 1] + y) / 2
    return float(area / limit)


# ---------------------------------------------------------------------------
# worker: one measurement in a fresh process
# ---------------------------------------------------------------------------


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def worker(job, data_dir, device, repeat, check_images):
    import torch

    from padim_utils import metrics
    from padim_utils.measure import peak_memory_bytes, reset_peak_memory

    masks = np.load(Path(data_dir) / "masks.npy")
    maps = np.load(Path(data_dir) / "maps.npy")
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    out = {"job": job, "device": device}

    if job == "check_aupro":  # subset: reference vs module
        m, a = masks[:check_images], maps[:check_images]
        t = time.perf_counter()
        out["reference"] = reference_aupro(m, a)
        out["reference_s"] = time.perf_counter() - t
        out["value"] = metrics.aupro(m, a)
        out["pixels"] = int(a.size)
        return out

    sync = lambda: None  # noqa: E731
    if device == "cuda":
        inputs = [torch.from_numpy(x).cuda() for x in (labels, scores, masks, maps)]
        sync = torch.cuda.synchronize
        sync()
        reset_peak_memory(torch.device("cuda"))
    else:
        inputs = [labels, scores, masks, maps]
    calls = {
        "aupro": lambda: metrics.aupro(inputs[2], inputs[3]),
        "pixel_auroc": lambda: metrics.pixel_auroc(inputs[2], inputs[3]),
        "evaluate": lambda: metrics.evaluate(*inputs),
        "sklearn_roc_auc_score": lambda: __import__("sklearn.metrics").metrics.roc_auc_score(
            masks.reshape(-1), maps.reshape(-1)
        ),
    }
    out["peak_reset"] = reset_peak_memory(torch.device("cpu"))  # VmHWM restarts from the current RSS
    out["rss_before"] = _status("VmRSS")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        value = calls[job]()
        sync()
        times.append(time.perf_counter() - t)
    out.update(value=value, times=times, peak_rss=peak_memory_bytes(torch.device("cpu")))
    if device == "cuda":
        out["peak_gpu"] = peak_memory_bytes(torch.device("cuda"))
        if job in ("aupro", "pixel_auroc"):  # same value on the CPU?
            out["cpu_value"] = getattr(metrics, job)(masks, maps)
    return out


def run_worker(job, args, data_dir):
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--_worker", job, "--_data", data_dir,
        "--device", args.device, "--repeat", str(1 if job.startswith("sklearn") else args.repeat),
        "--check-images", str(args.check_images),
    ]  # fmt: skip
    print(f"  {job} ...", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {job} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def machine(device):
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    mem = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / GB, 1),
        "python": platform.python_version(),
    }
    for pkg in ("numpy", "scipy", "scikit-learn", "torch"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown(report):
    d, m = report["dataset"], report["machine"]
    lines = [
        f"# Metrics benchmark ({report['device']})",
        "",
        f"{d['images']} images of {d['size']}x{d['size']} = {d['pixels']:,} pixels, "
        f"{d['defect_pixels']:,} defect pixels in {d['regions']:,} 8-connected regions "
        f"({d['defective_images']} defective images). Inputs: {d['input_gb']:.2f} GiB.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, "
        f"scikit-learn {m['scikit-learn']}, torch {m['torch']}.",
        "",
        "| call | first call (s) | best (s) | peak RSS (GiB) | RSS above inputs (GiB) | value |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if isinstance(r["value"], dict):  # evaluate(): show the pixel metrics
            value = f"AU-PRO {r['value']['pixel_aupro']:.12f}, AUROC {r['value']['pixel_auroc']:.12f}"
        else:
            value = f"{r['value']:.12f}"
        extra = f" (GPU peak {r['peak_gpu'] / GB:.2f} GiB)" if "peak_gpu" in r else ""
        lines.append(
            f"| `{r['job']}` | {r['times'][0]:.2f} | {min(r['times']):.2f} | "
            f"{r['peak_rss'] / GB:.2f}{extra} | "
            f"{(r['peak_rss'] - r['rss_before']) / GB:.2f} | {value} |"
        )
    lines += [
        "",
        f"Each call runs in a fresh process that loaded the inputs; 'first call' includes the page faults"
        f" of fresh memory, 'best' is the best of {report['repeat']} calls (sklearn: one call)."
        " Peak RSS: VmHWM after resetting it (/proc/self/clear_refs) just before the call; it includes"
        " the inputs and the interpreter.",
        "",
        "Checks:",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in report["checks"].items()]
    lines += ["", f"Target: aupro + pixel_auroc {report['summary']}", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-images", type=int, default=1725)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--skip-sklearn", action="store_true", help="do not time sklearn's roc_auc_score")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per metric")
    p.add_argument("--check-images", type=int, default=300, help="images for the AU-PRO reference check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_data", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._worker:
        print(json.dumps(worker(args._worker, args._data, args.device, args.repeat, args.check_images)))
        return
    if args.device == "auto":
        try:
            import torch

            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            args.device = "cpu"

    print(f"generating {args.n_images} images of {args.size}x{args.size} ...", flush=True)
    t = time.perf_counter()
    masks, maps = make_dataset(args.n_images, args.size, args.seed)
    regions = sum(ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks)
    dataset = {
        "images": args.n_images,
        "size": args.size,
        "pixels": int(maps.size),
        "defect_pixels": int(masks.sum()),
        "regions": int(regions),
        "defective_images": int(masks.any(axis=(1, 2)).sum()),
        "input_gb": (masks.nbytes + maps.nbytes) / GB,
        "seed": args.seed,
        "generate_s": round(time.perf_counter() - t, 1),
    }
    print(dataset, flush=True)

    jobs = ["aupro", "pixel_auroc", "evaluate"]
    if not args.skip_sklearn:
        jobs.append("sklearn_roc_auc_score")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "masks.npy", masks)
        np.save(Path(tmp) / "maps.npy", maps)
        del masks, maps
        results = [run_worker(job, args, tmp) for job in jobs]
        check = run_worker("check_aupro", args, tmp)

    by_job = {r["job"]: r for r in results}
    checks = {
        f"aupro on the first {args.check_images} images ({check['pixels']:,} pixels) vs straightforward "
        f"numpy reference ({check['reference_s']:.1f} s)": f"{check['value']!r} vs {check['reference']!r}, "
        f"|diff| = {abs(check['value'] - check['reference']):.2e}",
        "evaluate() pixel values equal the single calls": by_job["evaluate"]["value"]["pixel_auroc"]
        == by_job["pixel_auroc"]["value"]
        and by_job["evaluate"]["value"]["pixel_aupro"] == by_job["aupro"]["value"],
    }
    if "sklearn_roc_auc_score" in by_job:
        diff = abs(by_job["pixel_auroc"]["value"] - by_job["sklearn_roc_auc_score"]["value"])
        checks["pixel_auroc vs sklearn roc_auc_score, |diff|"] = f"{diff:.2e}"
    for job in ("aupro", "pixel_auroc"):
        if "cpu_value" in by_job[job]:
            checks[f"{job} on CUDA vs numpy on CPU, |diff|"] = (
                f"{abs(by_job[job]['value'] - by_job[job]['cpu_value']):.2e}"
            )
    both = min(by_job["aupro"]["times"]) + min(by_job["pixel_auroc"]["times"])
    both_first = by_job["aupro"]["times"][0] + by_job["pixel_auroc"]["times"][0]
    peak = max(by_job["aupro"]["peak_rss"], by_job["pixel_auroc"]["peak_rss"])
    summary = (
        f"together {both:.2f} s best / {both_first:.2f} s first call, "
        f"peak RSS {peak / GB:.2f} GiB (target: < 10 s and < 3 GB on CPU, < 1 s on GPU)"
    )
    report = {
        "device": args.device,
        "repeat": args.repeat,
        "machine": machine(args.device),
        "dataset": dataset,
        "results": results,
        "checks": checks,
        "summary": summary,
        "peak_rss_method": "fresh subprocess per call; /proc/self/clear_refs=5 before the call, VmHWM after",
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"metrics_{args.device}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"metrics_{args.device}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
