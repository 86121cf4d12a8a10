"""CUDA against the CPU on real MVTec AD bottle (offline Lite0 weights): maps, scores and metrics.

Runs fit + predict_dataset on each device and prints one JSON line per run: the metrics, the
largest map and score differences to the CPU float64 run, wall times. Runs: CPU float64 (the
reference), CUDA float64, CUDA with float32 statistics products (`stats_dtype="float32"`, what
consumer GPUs get), CUDA as configured by default (float32 backbone and distances, `auto` stats).

    python benchmarks/gpu_parity.py DATA_ROOT OUT.json [N]   (DATA_ROOT holds bottle/; N: the first N
                                                             images of each split only, a smoke test)
"""

import json
import sys
import time

import torch

from padim_utils.config import preset
from padim_utils.datasets.registry import open_dataset
from padim_utils.metrics import evaluate
from padim_utils.model import Padim

RUNS = [("cpu_f64", "cpu", dict(dtype="float64", stats_dtype="float64")),
        ("cuda_f64", "cuda", dict(dtype="float64", stats_dtype="float64")),
        ("cuda_f64_f32stats", "cuda", dict(dtype="float64", stats_dtype="float32")),
        ("cuda_default", "cuda", {})]


def main(data: str, out: str, n: str | None = None) -> None:
    from torch.utils.data import Subset

    runs, ref = {}, None
    for name, device, changes in RUNS:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        cfg = preset("offline_lite0").replace(device=device, **changes)
        train = open_dataset("mvtec", data, "bottle", "train", geometry=cfg.geometry)
        test = open_dataset("mvtec", data, "bottle", "test", geometry=cfg.geometry)
        if n:
            train, test = Subset(train, range(int(n))), Subset(test, range(0, len(test), len(test) // int(n)))
        t0 = time.perf_counter()
        model = Padim(cfg).fit(train, progress=False)
        t1 = time.perf_counter()
        res = model.predict_dataset(test, progress=False)
        t2 = time.perf_counter()
        m = evaluate(res["labels"], res["scores"], res["masks"], res["maps"])
        r = {k: float(m[k]) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")}
        r.update(fit_s=t1 - t0, predict_s=t2 - t1, config={"dtype": cfg.dtype, "stats_dtype": cfg.stats_dtype},
                 channels_last=model.extractor.channels_last)
        if ref is None:
            ref = res
        else:
            diff = (res["maps"].double() - ref["maps"].double()).abs()
            r["max_abs_map_diff"] = float(diff.max())
            r["max_rel_map_diff"] = float(diff.max() / ref["maps"].double().abs().max())
            r["max_abs_score_diff"] = float((res["scores"].double() - ref["scores"].double()).abs().max())
        runs[name] = r
        print(name, json.dumps(r), flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    json.dump({"torch": torch.__version__, "gpu": gpu, "runs": runs}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
