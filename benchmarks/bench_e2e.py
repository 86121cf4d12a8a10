"""`padim benchmark` end to end against the fastest forward pass over the same images, decoding included.

What a user runs, measured as a user would: the command itself in a fresh process (its JSON's fit and
predict seconds, and its whole wall time, imports and metrics included), beside the floor no PaDiM can
beat on the same images: decoding them with the package's loader and running the backbone's forward
pass, nothing else, in the faster of the NCHW and channels-last layouts. Every measurement is a fresh
subprocess, best of `--repeat` runs. `--repo` points at another checkout (e.g. an older commit, for a
before/after in one run); its `padim_utils` is imported instead of this one's.

    python benchmarks/bench_e2e.py                                  # Lite0, real bottle, this checkout
    python benchmarks/bench_e2e.py --repo ../before --tag before    # the same for another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mvtec_ad"

_FORWARD = r"""
import json, sys, time
import torch
from padim_utils.config import preset
from padim_utils.datasets.registry import open_dataset
from padim_utils.model import Padim
data, category, config, layout, fold = sys.argv[1:6]
cfg = preset(config).replace(device="cpu")
sets = [open_dataset("mvtec", data, category, split, geometry=cfg.geometry) for split in ("train", "test")]
model = Padim(cfg)
if fold == "unfolded":  # the network as timm / torchvision build it (batch norm not folded)
    from padim_utils.backbones import feature_extractor
    model.extractor = feature_extractor(cfg.backbone, cfg.layers, cfg.pretrained, fold_bn=False)
    model._network = model.extractor
model.extractor.use_channels_last(layout == "channels_last")
t = time.perf_counter()
n = 0
for ds in sets:
    for batch in model.loader(ds):
        model.forward_layers(batch["image"])
        n += len(batch["image"])
print(json.dumps({"seconds": time.perf_counter() - t, "images": n}))
"""


def _env(repo: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(repo), PADIM_PROGRESS="0")


def _run(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    """A fresh Python process importing `repo`'s padim_utils: run from `repo`, since `python -c` and `-m` put
    the working directory first on sys.path (before PYTHONPATH and this venv's editable install)."""
    return subprocess.run([sys.executable, *args], env=_env(repo), cwd=repo, capture_output=True, text=True,
                          check=True)


def check_repo(repo: Path) -> str:
    """The padim_utils folder the subprocesses import; exits if it is not `repo`'s."""
    found = Path(_run(["-c", "import padim_utils; print(padim_utils.__file__)"], repo).stdout.strip()).parent
    if found != repo / "padim_utils":
        sys.exit(f"bench_e2e: the subprocesses import {found}, not {repo / 'padim_utils'}")
    return str(found)


def forward(repo: Path, data: str, category: str, config: str, layout: str, fold: str) -> float:
    out = _run(["-c", _FORWARD, data, category, config, layout, fold], repo)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def benchmark(repo: Path, data: str, category: str, config: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        t = time.perf_counter()
        _run(["-m", "padim_utils.cli", "benchmark", "--dataset", "mvtec", "--root", data, "--category", category,
              "--config", config, "--device", "cpu", "--out", str(out)], repo)
        wall = time.perf_counter() - t
        record = json.loads(out.read_text())
    return {"fit_s": record["fit_seconds"], "predict_s": record["predict_seconds"],
            "fit_predict_s": record["fit_seconds"] + record["predict_seconds"], "wall_s": wall,
            **{k: record[k] for k in ("image_auroc", "pixel_auroc", "pixel_aupro")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=str(HERE.parent), help="the checkout whose padim_utils runs")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--category", default="bottle")
    p.add_argument("--config", default="offline_lite0")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--unfolded", action="store_true",
                   help="also time the forward pass of the network as built (batch norm not folded)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--tag", default="cpu")
    args = p.parse_args()
    repo = Path(args.repo).resolve()
    package = check_repo(repo)
    runs = {"benchmark": [], "forward": {}}
    folds = ["package", "unfolded"] if args.unfolded else ["package"]  # package: the network as the package runs it
    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every kind alike
        runs["benchmark"].append(benchmark(repo, args.data, args.category, args.config))
        print("benchmark", json.dumps(runs["benchmark"][-1]), flush=True)
        for fold in folds:
            for layout in ("nchw", "channels_last"):
                s = forward(repo, args.data, args.category, args.config, layout, fold)
                runs["forward"].setdefault(f"{layout}_{fold}", []).append(s)
                print(f"forward {layout} {fold}: {s:.2f} s", flush=True)
    best = {k: min(r[k] for r in runs["benchmark"]) for k in ("fit_s", "predict_s", "fit_predict_s", "wall_s")}
    floor = {k: min(v) for k, v in runs["forward"].items()}
    fastest = min(floor, key=floor.get)
    report = {"repo": str(repo), "package": package, "config": args.config, "category": args.category, "repeat": args.repeat,
              "cpu_threads": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs,
              "best": best, "forward_best": floor, "fastest_forward": fastest,
              "ratio_fit_predict": best["fit_predict_s"] / floor[fastest],
              "ratio_wall": best["wall_s"] / floor[fastest]}
    lines = [f"`padim benchmark --config {args.config}` on {args.category}, {report['date']}, repo {repo.name}, "
             f"best of {args.repeat}", "",
             "| what | seconds |", "|---|---:|",
             f"| benchmark: fit + predict (the record's seconds) | {best['fit_predict_s']:.2f} |",
             f"| benchmark: the whole command (imports, model, metrics) | {best['wall_s']:.2f} |",
             *(f"| forward pass alone, decoding included, {k.replace('_', ' ')} | {v:.2f} |" for k, v in floor.items()),
             "", f"fit + predict / fastest forward pass ({fastest}): **{report['ratio_fit_predict']:.2f}×**; "
             f"whole command / fastest forward pass: {report['ratio_wall']:.2f}×"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"e2e_{args.tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"e2e_{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
