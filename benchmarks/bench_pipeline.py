"""PaDiM end to end, three ways, in one run: this package, anomalib's Padim, and the forward pass alone.

On the same images, the same backbone weights and the same channel subset:

  ours      padim_utils.Padim.fit + predict_dataset (streaming float64 statistics, Cholesky,
            batched Mahalanobis, separable blur), with its own loader (`loader.BatchLoader`:
            on a GPU one persistent worker per core, in-process on the CPU);
  anomalib  anomalib 2.x's `PadimModel` torch module (install with `pip install -e '.[bench]'`):
            its feature extractor (given the same ImageNet classifier module, with the same
            weights), its memory bank of every training embedding, `MultiVariateGaussian.fit`,
            its anomaly-map generator; its random channel index is set to ours. Its images come
            from the same dataset (the same decoding function) through the loader anomalib's
            datamodules build: a new `DataLoader` per pass, 8 workers on a GPU (anomalib's
            default `num_workers`), none on the CPU (as ours), pinned memory on a GPU;
  forward   ours minus PaDiM: our loader, normalising and the backbone forward pass over the same
            training and test images and nothing else: the floor no PaDiM can beat;
  loader    our loader alone (decode, resize, collate, pin): the decoding floor.

Variants of ours (and of forward), each one change: *_nchw the NCHW layout, *_cl channels-last
(whatever the per-device policy says), *_compile torch.compile, *_f32stats float32 statistics
products (consumer GPUs), *_f64stats float64 products, *_resize images resized on the device
(`Padim(resize_on_device=True)`), *_cache decoded images from a warm `PADIM_CACHE` (filled by an
untimed pass first).

Every (setup, N, method) runs in a fresh subprocess, so each peak RSS is its own
(`/proc/self/clear_refs` before, `VmHWM` after) and no run warms another's caches.
N training images are the category's training set cycled to length N (timings do not
depend on the pixels); `--n-test` cycles the test set likewise (1,725: MVTec AD's test set).
Accuracy is reported where N and the test set are the real ones. Setups:

  lite0   offline_lite0 (real ImageNet weights, work offline): the accuracy comparison
  r18     resnet18, layers 1-3, d = 100, 256 -> crop 224 (random-init weights where the
          ImageNet ones are not in TORCH_HOME: same timings, accuracy not reported)
  wr50    wide_resnet50_2, layers 1-3, d = 550 (same rule)

`--fullres N` first writes the category upsampled to MVTec AD's real resolution (900 px PNGs, as
bottle's originals; training set cycled to N, test set once) into a temporary folder, once, and
runs there: the decoding-bound case of real data.

    python benchmarks/bench_pipeline.py                                # CPU: lite0 and r18 at N = 209
    python benchmarks/bench_pipeline.py --setups r18 wr50 --n 3629 --n-test 1725 --device cuda
    python benchmarks/bench_pipeline.py --setups r18 --fullres 1024 --methods loader ours ours_cache ours_resize
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mvtec_ad"
VARIANTS = ("nchw", "cl", "compile", "f32stats", "f64stats", "resize", "cache")
METHODS = ("ours", "anomalib", "forward", "loader",
           *(f"{m}_{v}" for m in ("ours", "forward", "loader") for v in VARIANTS))
DEFAULT_METHODS = ("ours", "anomalib", "forward")
SETUPS = {
    "lite0": {"preset": "offline_lite0"},
    "r18": {"preset": "paper_r18"},
    "wr50": {"preset": "paper_wr50"},
}


# ---------------------------------------------------------------------------- one measurement (subprocess)
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _config(job: dict):
    from padim_utils import backbones
    from padim_utils.config import preset

    cfg = preset(SETUPS[job["setup"]]["preset"]).replace(device=job["device"])
    variant = job["method"].partition("_")[2]
    if variant in ("f32stats", "f64stats"):
        cfg = cfg.replace(stats_dtype="float32" if variant == "f32stats" else "float64")
    pretrained = backbones.weights_status(cfg.backbone).startswith(("offline", "cached"))
    return cfg.replace(pretrained=pretrained), pretrained


def _datasets(job: dict, cfg):
    from torch.utils.data import Subset

    from padim_utils.datasets.registry import open_dataset

    train = open_dataset("mvtec", job["data"], job["category"], "train", geometry=cfg.geometry)
    test = open_dataset("mvtec", job["data"], job["category"], "test", geometry=cfg.geometry)
    real_n, real_test = len(train), len(test)
    if job["n"] != real_n:
        train = Subset(train, [i % real_n for i in range(job["n"])])
    n_test = job.get("n_test") or real_test
    if n_test != real_test:
        test = Subset(test, [i % real_test for i in range(n_test)])
    return train, test, real_n == job["n"] and real_test == n_test


def _run_ours(model, train, test):
    from padim_utils.measure import timed

    _, fit_s = timed(model.fit, train, progress=False)
    result, predict_s = timed(model.predict_dataset, test, progress=False)
    return fit_s, predict_s, result


def _run_anomalib(model, train, test):
    import torch
    from anomalib.models.image.padim.torch_model import PadimModel

    from padim_utils.backbones import build_backbone
    from padim_utils.measure import timed

    torch.manual_seed(0)  # random-init backbones: the same weights as ours (built after the same seed)
    classifier = build_backbone(model.config.backbone, model.config.pretrained).eval()
    layers = list(model.extractor.layers)
    if model.config.backbone == "efficientnet_lite0":
        # timm's network: anomalib's timm extractor (features_only), then our weights loaded into it
        core = PadimModel(backbone="tf_efficientnet_lite0", layers=layers, pre_trained=False, n_features=model.d)
        missing, _ = core.feature_extractor.feature_extractor.load_state_dict(classifier.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"anomalib's lite0 extractor did not get weights for {missing[:3]} ...")
    else:  # torchvision's network: anomalib's path for an nn.Module backbone (create_feature_extractor)
        core = PadimModel(backbone=classifier, layers=layers, pre_trained=False, n_features=model.d)
    core = core.to(model.device)
    core.idx = model.reducer.index.to(model.device)  # the same random channels as ours
    def loader(data):  # what anomalib's datamodules build: a new DataLoader per pass
        from torch.utils.data import DataLoader

        from padim_utils.datasets import collate

        cuda = model.device.type == "cuda"
        return DataLoader(data, batch_size=model.config.batch_size, shuffle=False, collate_fn=collate,
                          num_workers=8 if cuda else 0, pin_memory=cuda)

    def fit():
        core.train()
        for batch in loader(train):
            core(model.extractor.normalize(batch["image"].to(model.device, non_blocking=True)))  # (B, 3, S, S)
        core.fit()

    def predict():
        core.eval()
        for batch in loader(test):
            out = core(model.extractor.normalize(batch["image"].to(model.device, non_blocking=True)))
            maps.append(out.anomaly_map[:, 0].float().cpu())  # (B, S, S)
            scores.append(out.pred_score.float().cpu().reshape(-1))
            labels.extend(int(v) for v in batch["label"])
            masks.append(batch["mask"])

    maps, scores, labels, masks = [], [], [], []
    _, fit_s = timed(fit)
    _, predict_s = timed(predict)
    result = {"maps": torch.cat(maps), "scores": torch.cat(scores), "labels": torch.tensor(labels),
              "masks": torch.cat(masks)}
    return fit_s, predict_s, result


def _run_forward(model, train, test):
    from padim_utils.measure import timed

    def forward(data):
        for batch in model.loader(data):
            model.forward_layers(batch["image"])

    return timed(forward, train)[1], timed(forward, test)[1], None


def _run_loader(model, train, test):
    from padim_utils.measure import timed

    def decode(data):
        for batch in model.loader(data):
            batch["image"].to(model.device, non_blocking=True)

    return timed(decode, train)[1], timed(decode, test)[1], None


def worker(job: dict) -> dict:
    import torch

    from padim_utils.measure import device_name, reset_peak_memory
    from padim_utils.metrics import evaluate
    from padim_utils.model import Padim

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    cfg, pretrained = _config(job)
    method, _, variant = job["method"].partition("_")
    if variant == "cache":  # decoded images from a warm cache: an untimed pass fills it first
        import tempfile

        from padim_utils.datasets.imagecache import set_cache_dir

        set_cache_dir(tempfile.mkdtemp(prefix="padim-bench-cache-"))
    train, test, real_data = _datasets(job, cfg)
    torch.manual_seed(0)  # random-init backbones: the same weights in every subprocess
    model = Padim(cfg, compile=variant == "compile", resize_on_device=variant == "resize")
    if variant in ("nchw", "cl"):  # the same run in one layout, whatever the device's policy says
        model.extractor.use_channels_last(variant == "cl")
    if variant == "cache":
        for data in (train, test):
            for _ in model.loader(data):
                pass
    for device in {torch.device("cpu"), model.device}:  # peak RSS (VmHWM) and, on a GPU, torch's peak
        reset_peak_memory(device)
    rss_before = _status_kib("VmRSS")
    run = {"ours": _run_ours, "anomalib": _run_anomalib, "forward": _run_forward, "loader": _run_loader}[method]
    fit_s, predict_s, result = run(model, train, test)
    out = {**job, "backbone": cfg.backbone, "d": model.d, "pretrained": pretrained, "out_size": cfg.out_size,
           "n_test": len(test), "fit_s": fit_s, "predict_s": predict_s,
           "fit_images_per_s": job["n"] / fit_s, "predict_images_per_s": len(test) / predict_s,
           "peak_rss_gib": _status_kib("VmHWM") / 2**20, "rss_before_gib": rss_before / 2**20,
           "peak_gpu_gib": (torch.cuda.max_memory_allocated(model.device) / 2**30
                            if model.device.type == "cuda" else None),
           "device_name": device_name(model.device), "threads": torch.get_num_threads(),
           "channels_last": model.extractor.channels_last, "stats_dtype": cfg.stats_dtype,
           "loader_workers": model.workers if method != "anomalib" else None}
    if result is not None and pretrained and real_data:
        m = evaluate(result["labels"], result["scores"], result["masks"], result["maps"])
        out.update({k: float(m[k]) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")})
        out["maps_checksum"] = float(result["maps"].double().sum())
    return out


# ---------------------------------------------------------------------------- the driver
def _upsample(job: tuple) -> None:
    from PIL import Image

    src, dst, size, resample = job
    if not Path(dst).is_file():
        img = Image.open(src)
        img = img.convert("L") if resample == "nearest" else img.convert("RGB")
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        img.resize((size, size), Image.NEAREST if resample == "nearest" else Image.BICUBIC).save(dst)


def full_resolution(data: Path, category: str, n: int, size: int = 900) -> Path:
    """`category` upsampled to size x size PNGs (masks too), the training set cycled to `n` distinct
    files: MVTec AD's real resolution (bottle's originals are 900 px). Written once into the temporary
    folder and reused; returns the root holding `category`."""
    import tempfile
    from multiprocessing import Pool

    root = Path(tempfile.gettempdir()) / f"padim-fullres-{category}-{size}-{n}"
    done = root / ".complete"
    if done.is_file():
        return root
    src = data / category
    train = sorted((src / "train" / "good").glob("*.png"))
    jobs = [(str(train[i % len(train)]), str(root / category / "train" / "good" / f"{i:05d}.png"), size, "bicubic")
            for i in range(n)]
    for path in sorted((src / "test").glob("*/*.png")) + sorted((src / "ground_truth").glob("*/*.png")):
        kind = "nearest" if path.parts[-3] == "ground_truth" else "bicubic"
        jobs.append((str(path), str(root / category / path.relative_to(src)), size, kind))
    t = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_upsample, jobs, chunksize=8)
    done.write_text(f"{len(jobs)} files in {time.perf_counter() - t:.1f} s\n")
    print(f"full resolution: {len(jobs)} PNGs of {size} px in {root} ({time.perf_counter() - t:.1f} s)", flush=True)
    return root


def run_job(job: dict) -> dict:
    env = dict(os.environ, PADIM_PROGRESS="0")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {**job, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _f(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    rows = report["runs"]
    lines = [f"Machine: {report['machine']} · torch {report['torch']} · {report['date']}", "",
             "| setup | N | method | fit (s) | predict (s) | fit img/s | predict img/s | peak RSS (GiB) "
             "| peak GPU (GiB) | image AUROC | pixel AUROC | AU-PRO |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setup']} | {r['n']} | {r['method']} | error: {r['error']} |||||||||")
            continue
        lines.append(f"| {r['setup']} ({r['backbone']}, d={r['d']}{'' if r['pretrained'] else ', random-init'}) "
                     f"| {r['n']} | {r['method']} | {_f(r['fit_s'])} | {_f(r['predict_s'])} "
                     f"| {_f(r['fit_images_per_s'], '.1f')} | {_f(r['predict_images_per_s'], '.1f')} "
                     f"| {_f(r['peak_rss_gib'])} | {_f(r['peak_gpu_gib'])} | {_f(r.get('image_auroc'), '.3f')} "
                     f"| {_f(r.get('pixel_auroc'), '.3f')} | {_f(r.get('pixel_aupro'), '.3f')} |")
    lines += ["", "| setup | N | anomalib / ours, fit | anomalib / ours, predict | ours / forward, fit "
              "| ours / forward, end to end | anomalib / ours, peak memory |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, r in report["ratios"].items():
        lines.append(f"| {r['setup']} | {r['n']} | {_f(r['fit_anomalib_over_ours'])}× "
                     f"| {_f(r['predict_anomalib_over_ours'])}× | {_f(r.get('fit_ours_over_forward'))}× "
                     f"| {_f(r['end_to_end_ours_over_forward'])}× | {_f(r['memory_anomalib_over_ours'])}× |")
    return "\n".join(lines) + "\n"


def ratios(runs: list[dict]) -> dict:
    out = {}
    by = {(r["setup"], r["n"], r["method"]): r for r in runs if "error" not in r}
    for (setup, n, method), ours in by.items():
        if method != "ours":
            continue
        an, fw = by.get((setup, n, "anomalib")), by.get((setup, n, "forward"))
        mem = "peak_gpu_gib" if ours["peak_gpu_gib"] is not None else "peak_rss_gib"
        out[f"{setup}-{n}"] = {
            "setup": setup, "n": n,
            "fit_anomalib_over_ours": an and an["fit_s"] / ours["fit_s"],
            "predict_anomalib_over_ours": an and an["predict_s"] / ours["predict_s"],
            "fit_ours_over_forward": fw and ours["fit_s"] / fw["fit_s"],
            "end_to_end_ours_over_forward": fw and (ours["fit_s"] + ours["predict_s"]) / (fw["fit_s"] + fw["predict_s"]),
            "memory_anomalib_over_ours": an and an[mem] / ours[mem],
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec AD root (default: ../shared/data/mvtec_ad)")
    p.add_argument("--category", default="bottle")
    p.add_argument("--setups", nargs="+", default=["lite0", "r18"], choices=list(SETUPS))
    p.add_argument("--n", nargs="+", type=int, default=None, help="training-set sizes (default: the real one)")
    p.add_argument("--n-test", type=int, default=None, help="test-set size, cycled (default: the real one; "
                                                            "MVTec AD's whole test set is 1725)")
    p.add_argument("--fullres", type=int, default=None, metavar="N",
                   help="run on the category upsampled to 900 px PNGs (N training images), written once to a "
                        "temporary folder")
    p.add_argument("--fullres-size", type=int, default=900, help=argparse.SUPPRESS)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS,
                   help="*_nchw: the same without the channels-last layout; *_compile: with torch.compile")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--tag", default=None, help="suffix of the result files (default: the device)")
    args = p.parse_args()
    if args.worker:  # this checkout's padim_utils, whatever else is installed (a before/after compares two)
        sys.path.insert(0, str(HERE.parent))
        print(json.dumps(worker(json.loads(args.worker))))
        return
    data = Path(args.data)
    if not (data / args.category / "train").is_dir():
        sys.exit(f"bench_pipeline: no MVTec AD category {args.category!r} under {data}; pass --data")
    sys.path.insert(0, str(HERE.parent))
    if args.fullres:
        data = full_resolution(data, args.category, args.fullres, args.fullres_size)
        args.n = args.n or [args.fullres]
    from padim_utils.datasets import MVTecDataset
    from padim_utils.measure import cpu_name
    import torch

    threads = args.threads or os.cpu_count()
    ns = args.n or [len(MVTecDataset(data, args.category, "train", image_size=64, crop=None))]
    from padim_utils.files import write_json, write_text

    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_name()}, {threads} threads"
    try:
        import anomalib

        anomalib_version = anomalib.__version__
    except ImportError:
        anomalib_version = None
    out, tag = Path(args.out_dir), args.tag or args.device
    runs, report = [], {}
    for setup in args.setups:
        for n in ns:
            for method in args.methods:
                job = {"setup": setup, "n": n, "n_test": args.n_test, "method": method, "device": args.device,
                       "threads": threads, "data": str(data), "category": args.category,
                       "fullres": args.fullres_size if args.fullres else None}
                r = run_job(job)
                runs.append(r)
                msg = r.get("error") or f"fit {r['fit_s']:.2f} s, predict {r['predict_s']:.2f} s, " \
                                        f"peak RSS {r['peak_rss_gib']:.2f} GiB"
                print(f"{setup:6s} N={n:5d} {method:15s} {msg}", flush=True)
                report = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "anomalib": anomalib_version, "date": time.strftime("%Y-%m-%d"),
                          "category": args.category, "fullres": args.fullres_size if args.fullres else None,
                          "runs": runs, "ratios": ratios(runs)}
                write_json(out / f"pipeline_{tag}.json", report)  # after every run: a cut-short run keeps its part
                write_text(out / f"pipeline_{tag}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
