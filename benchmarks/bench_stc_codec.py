"""More normal frames, a blinder model? PaDiM on the walkway scene, with and without the codec match.

The scene (`padim_utils.datasets.walkway`, official STC layout): 4 MPEG-4 training videos of 48 frames
(a static textured background, dark figures walking the middle of a path), 2 test clips of 60 JPEG
frames (quality 75) where a red cart crosses the path. For each number of training frames per
video (8, 24, all 48: 32, 96, 192 frames) and each `train_codec` ("none": frames as decoded, the
former behaviour; "match": the default, see `padim_utils.datasets.stc.match_test_codec`), one model is
fitted and scored (`padim_utils.experiments.stc.frames_study`: the backbone's outputs cached once per codec,
then `Padim.fit` + `predict_dataset` per row); the metrics are `padim_utils.metrics` (frame AUROC = image
AUROC of the max-of-map scores, pixel AUROC, AU-PRO to FPR 0.3). Also reported: the median anomaly score
of the wall (the top 30% of the frame, static in every frame) and the median score inside the cart's mask.

    python benchmarks/bench_stc_codec.py                   # offline_lite0 at 256 px, frames 424x240: minutes
    python benchmarks/bench_stc_codec.py --size 400x720    # larger frames (height x width)
    python benchmarks/bench_stc_codec.py --quick           # the test's setting: 64 px, the quick preset, 256x144

Writes ``stc_codec_<config>_<height>x<width>.json`` and ``.md`` to ``--out-dir`` (default benchmarks/results).
The numbers are accuracies (deterministic up to float rounding), not timings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from padim_utils.config import preset
from padim_utils.datasets.walkway import make_walkway_stc
from padim_utils.experiments.stc import frames_study


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick preset (64 px), frames 144x256")
    parser.add_argument("--size", help="frame height x width, e.g. 400x720 (default 240x424; 144x256 with --quick)")
    parser.add_argument("--out-dir", default=str(Path(__file__).with_name("results")))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    name = "quick" if args.quick else "offline_lite0"
    cfg = preset(name).replace(crop=None, device=args.device)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else (144, 256) if args.quick else (240, 424)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_walkway_stc(Path(tmp) / "walkway", image_size=size)
        for r in frames_study(root, cfg, train_codecs=("none", "match")):
            r.pop("example"), r.pop("example_frame")
            rows.append(r)
            print(f"{r['train_frames']:4d} frames, train_codec={r['train_codec']:5s}: frame AUROC "
                  f"{r['frame_auroc']:.3f}, pixel AUROC {r['pixel_auroc']:.3f}, AU-PRO {r['aupro']:.3f}, "
                  f"background {r['background_median']:.1f}, cart {r['cart_median']:.1f}", flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {"config": cfg.to_dict(), "scene": {"image_size": list(size), "videos": 4, "frames_per_video": 48,
                                                "test_clips": 2, "frames_per_clip": 60, "jpeg_quality": 75},
            "rows": rows}
    stem = f"stc_codec_{name}_{size[0]}x{size[1]}"
    (out / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [f"# PaDiM on the walkway scene ({name}, frames {size[1]}x{size[0]} px, JPEG quality 75)", "",
             "Made by `benchmarks/bench_stc_codec.py`: one fit per row on the scene's training frames, scored on its",
             "120 test frames; background = median score of the wall (static), cart = median score inside its masks.", "",
             "| training frames | train_codec | frame AUROC | pixel AUROC | AU-PRO | background median | cart median |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['train_frames']} | {r['train_codec']} | {r['frame_auroc']:.3f} | {r['pixel_auroc']:.3f} | "
              f"{r['aupro']:.3f} | {r['background_median']:.1f} | {r['cart_median']:.1f} |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"-> {out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
