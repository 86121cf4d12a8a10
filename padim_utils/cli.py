"""The `padim` command: synth, fit, predict, export, benchmark, download, reproduce, course.

    padim synth --root data/synthetic
    padim fit --dataset mvtec --root DIR --category bottle --config offline_lite0 --out bottle.safetensors
    torchrun --nproc_per_node 4 -m padim_utils.cli fit ...   (the images sharded, one model; see distributed.py)
    padim predict --model bottle.safetensors --input IMAGE_OR_DIR --out DIR
    padim export bottle.safetensors --out bottle.onnx [--precision float16] [--images DIR]
    padim benchmark --dataset mvtec --root DIR --category bottle --config offline_lite0 --out bottle.json
    padim benchmark --dataset stc --category 01 --config paper_r18 --crop none --out stc01.json
    padim download btad                    (also mvtec, visa; stc gives the manual steps)
    padim benchmark --dataset folder --normal-dir good/ --test-dir test/ [--mask-dir masks/] --out mine.json
    padim reproduce --table all [--quick] [--seeds 10] [--backbone NAME] --out build/reproduce

Problems a user can fix are reported as one line `padim: error: ...` with exit
status 2, never as a traceback. Output paths and --seed are checked before any
work starts; SIGTERM is handled like Ctrl-C (temporary files are removed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from pathlib import Path

import torch

from . import __version__, distributed
from .backbones import paper_d
from .config import INTERPOLATIONS, PRESETS, QUICK_DATA, STATS_DTYPES, preset
from .course.book import build_course
from .datasets import ImageFolderDataset, data_home, make_synthetic_mvtec, make_synthetic_stc, open_dataset
from .datasets.download import download, sources
from .datasets.imagecache import set_cache_dir
from .datasets.images import IMAGE_EXTENSIONS
from .datasets.registry import DATASET_NAMES
from .datasets.stc import TRAIN_CODECS
from .errors import PadimError, Terminated
from .experiments.benchmark import MARKDOWN_HEADER, markdown_row, run_benchmark
from .experiments.reproduction import reproduce
from .export import PRECISIONS, TOLERANCE, export_onnx
from .files import (check_names_free, check_output_dir, check_output_file, foreign_names, publish, run_files,
                    write_json, write_text)
from .measure import timed
from .model import Padim
from .plots import save_overlay


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (a preset, then overrides)")
    g.add_argument("--config", default="offline_lite0", help=f"preset: {', '.join(PRESETS)} (default offline_lite0)")
    g.add_argument("--backbone", help="resnet18, wide_resnet50_2, efficientnet_b5, efficientnet_lite0; also sets "
                                      "the backbone's paper layers and d (R18 100, WR50 550, B5 all channels) "
                                      "unless --layers / --d / --reduction are given")
    g.add_argument("--layers", help="comma-separated layer names (default: the backbone's paper layers)")
    g.add_argument("--d", "--dim", type=int, dest="d",
                   help="channels kept after reduction (with a preset that keeps all channels: random channels); "
                        "--dim under torchrun, which takes --d for its own options")
    g.add_argument("--reduction", help="random, pca or none")
    g.add_argument("--image-size", type=int, help="resize side (default 256)")
    g.add_argument("--crop", help="center crop side, or 'none'")
    g.add_argument("--interpolation", choices=INTERPOLATIONS,
                   help="image resize and map upsampling: bicubic (the paper, paper_* presets) or bilinear "
                        "(anomalib, offline_lite0 and quick)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--device", help="auto, cpu or cuda")
    g.add_argument("--dtype", help="float32, float64, bfloat16 or float16")
    g.add_argument("--stats-dtype", choices=STATS_DTYPES,
                   help="arithmetic of the Gaussian statistics: auto (float64 on CPUs and data-centre GPUs, "
                        "float32 products on other GPUs; default), float64 or float32")
    g.add_argument("--seed", type=int)
    g.add_argument("--cache", metavar="DIR",
                   help="keep decoded, resized images in DIR (keyed by file content and geometry), so that a "
                        "re-run decodes nothing; the same as PADIM_CACHE=DIR")
    g.add_argument("--compile", action="store_true",
                   help="run the backbone through torch.compile: a one-off compilation (~25 s on a CPU), then a "
                        "faster forward pass; worth it for thousands of images")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="mvtec", choices=DATASET_NAMES, help="dataset layout (default mvtec)")
    g.add_argument("--root", help="dataset folder (default: its folder under $PADIM_DATA, e.g. data/btad)")
    g.add_argument("--category", help="category (STC: scene id, BTAD: product, VisA: object); required except "
                                      "for --dataset folder")
    g.add_argument("--rd-seed", type=int, help="rd-mvtec: which random rotation + crop (default 0)")
    g.add_argument("--frames-per-video", type=int, help="stc: training frames sampled per video (default all)")
    g.add_argument("--train-codec", choices=TRAIN_CODECS,
                   help="stc: match (default) stores each training frame as the test JPEGs are, with codec-level "
                        "noise, so the codec gap does not make a static background look anomalous; none: as decoded")
    g.add_argument("--split-csv", help="visa: split file (default <root>/split_csv/1cls.csv)")
    g.add_argument("--normal-dir", help="folder: normal training images")
    g.add_argument("--test-dir", help="folder: test images in good/ and <defect>/ sub-folders")
    g.add_argument("--mask-dir", help="folder: masks of the defect images (optional)")


def data_args(args) -> tuple[str, str | None, str, dict]:
    """(dataset, root, category, options) for `padim_utils.datasets.registry.open_dataset` from the parsed options."""
    if args.dataset != "folder" and not args.category:
        raise PadimError(f"--category is required for --dataset {args.dataset}")
    options = {"seed": args.rd_seed, "frames_per_video": args.frames_per_video, "split_csv": args.split_csv,
               "normal_dir": args.normal_dir, "test_dir": args.test_dir, "mask_dir": args.mask_dir,
               "train_codec": args.train_codec}
    return args.dataset, args.root, args.category or "folder", {k: v for k, v in options.items() if v is not None}


def build_config(args):
    """The preset named by --config with the options given on the command line.

    --backbone switches to that backbone's paper setting: its default layers and its paper d
    (`backbones.paper_d`: R18 100 random channels, WR50 550, B5 all channels, i.e. reduction
    "none"), as anomalib does; --layers, --d and --reduction, when given, win. --d asks for d
    channels, so where the reduction would otherwise be "none" it becomes "random".
    """
    cfg = preset(args.config)
    changes = {}
    for name in ("backbone", "d", "reduction", "image_size", "interpolation", "batch_size", "device", "dtype",
                 "stats_dtype", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "layers", None):
        changes["layers"] = tuple(s.strip() for s in args.layers.split(",") if s.strip())
    if getattr(args, "crop", None) is not None:
        if args.crop.lower() == "none":
            changes["crop"] = None
        else:
            try:
                changes["crop"] = int(args.crop)
            except ValueError:
                raise PadimError(f"--crop must be a number of pixels or 'none', got {args.crop!r}") from None
    if "backbone" in changes:
        changes.setdefault("layers", None)  # the new backbone's own default layers
        d = paper_d(changes["backbone"])  # None: all channels; an unknown name is one line from backbones
        if "d" not in changes and "reduction" not in changes:
            changes["reduction"] = "none" if d is None else "random"
        if "d" not in changes and d is not None:
            changes["d"] = d
    if "d" in changes and "reduction" not in changes and cfg.reduction == "none":
        changes["reduction"] = "random"  # --d N on a preset that keeps all channels (paper_effb5)
    return cfg.replace(**changes)


def _synthetic_root() -> Path:
    return data_home() / "synthetic"


# ---------------------------------------------------------------------------- commands
def cmd_synth(args) -> int:
    if args.stc:
        root = make_synthetic_stc(args.root or data_home() / "stc_synthetic", seed=args.seed)
        print(f"synthetic STC-layout data in {root} (benchmark it with --dataset stc --root {root} --category 01)")
        return 0
    kwargs = {"seed": args.seed}
    if args.categories:
        kwargs["categories"] = tuple(args.categories.split(","))
    if args.quick:
        kwargs.update(QUICK_DATA)
    root = make_synthetic_mvtec(args.root or _synthetic_root(), **kwargs)
    print(f"synthetic MVTec-layout data in {root}")
    return 0


def cmd_fit(args) -> int:
    """Under torchrun every process runs this: each fits its share of the images (see
    `padim_utils.distributed`), rank 0 alone shows progress, writes the model and prints."""
    cfg = build_config(args)
    name, root, category, options = data_args(args)
    with distributed.process_group(cfg.device) as device:
        train = open_dataset(name, root, category, "train", geometry=cfg.geometry, **options)
        train.check_files()  # every training image decodes, before the backbone runs
        distributed.agree(cfg, train, device)  # under torchrun: the same options and data on every rank
        model = Padim(cfg, device=device, compile=args.compile)
        _, seconds = timed(model.fit, train, progress=not args.quiet and distributed.is_main())
        with distributed.main_writes() as main_rank:
            if main_rank:
                path = model.save(args.out)
                ranks = f" ({distributed.world_size()} processes)" if distributed.active() else ""
                print(f"fitted {cfg.backbone} d={model.d} on {len(train)} images{ranks} in {seconds:.1f} s -> {path}")
    return 0


def heatmap_names(paths: list[str], taken: Collection[str] = ()) -> list[str]:
    """One heat-map file name per input, unique even where only the extension or the case differs
    (a.png, a.jpg, A.PNG -> a_heatmap.png, a_heatmap-2.png, A_heatmap-3.png): names are compared
    case-insensitively, so they stay distinct on macOS and Windows file systems too. Names in `taken`
    (lower-cased: the user's files in --out) are passed over."""
    used, names = {"scores.csv", *taken}, []
    for path in paths:
        stem, n = Path(path).stem, 1
        name = f"{stem}_heatmap.png"
        while name.lower() in used:
            n += 1
            name = f"{stem}_heatmap-{n}.png"
        used.add(name.lower())
        names.append(name)
    return names


def _note_skipped(data: ImageFolderDataset, ours: Collection[str]) -> None:
    """One line on stderr for the files of --input DIR that are not scored, and why."""
    mine = [p.name for p in data.skipped if p.name in ours and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    other = [p.name for p in data.skipped if p.name not in ours]
    if other:
        print(f"padim: note: not scored, not images by their name ({', '.join(IMAGE_EXTENSIONS)}): "
              f"{', '.join(other[:5])}{f' and {len(other) - 5} more' if len(other) > 5 else ''}", file=sys.stderr)
    if mine:
        print(f"padim: note: not scored: {len(mine)} heat map(s) an earlier padim predict wrote in "
              f"{data.root}", file=sys.stderr)


def cmd_predict(args) -> int:
    """Heat maps and scores.csv are written to a hidden staging folder inside --out, then published
    (`files.publish`): the previous run's outputs are replaced, a file of the user's never is (a heat map
    takes another name; a scores.csv of the user's is an error before the work), and two runs at once
    never mix, so --out never holds a mix of two runs."""
    model = Padim.load(args.model, device=args.device)
    out = Path(args.out)
    same = Path(args.input).is_dir() and out.is_dir() and Path(args.input).resolve() == out.resolve()
    ours = run_files(out) if same else set()  # our earlier heat maps in --input: outputs, not inputs
    data = ImageFolderDataset(args.input, geometry=model.config.geometry, exclude=ours)
    _note_skipped(data, ours)
    taken = foreign_names(out)
    check_names_free(out, ["scores.csv"], taken)
    names = heatmap_names(data.paths, taken)
    result = model.predict_dataset(data, progress=not args.quiet)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out, prefix=".padim-predict-", suffix=".tmp"))
    except OSError as e:
        raise PadimError(f"cannot write to --out {out}: {e.strerror or e}") from None
    done = False
    try:
        maps = result["maps"]
        vmin, vmax = float(maps.min()), float(maps.max())  # one colour scale for all images
        rows = []
        for i, (path, name) in enumerate(zip(result["paths"], names)):
            save_overlay(stage / name, data[i]["image"], maps[i], vmin, vmax)
            rows.append((path, f"{float(result['scores'][i]):.6f}", name))
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["image", "score", "heatmap"])
        writer.writerows(rows)
        # file names that are not UTF-8 are written back as the bytes they were read from
        write_text(stage / "scores.csv", buf.getvalue(), errors="surrogateescape")
        publish(stage, out, last="scores.csv")
        done = True
    except PadimError as e:  # name the output file, not its hidden staging copy
        raise PadimError(str(e).replace(str(stage), str(out))) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: this run made it
    print(f"{len(rows)} image(s) scored -> {out / 'scores.csv'} and {len(rows)} heat map(s) in {out}")
    return 0


def cmd_export(args) -> int:
    """One ONNX graph from uint8 images to maps and scores, validated with onnxruntime before it is written."""
    model = Padim.load(args.model, device="cpu")
    cfg, images = model.config, None
    if args.images:
        data = ImageFolderDataset(args.images, geometry=cfg.geometry)
        images = torch.stack([data[i]["image"] for i in range(min(len(data), 8))])
    if not args.quiet:
        print("exporting and validating with onnxruntime (about half a minute on a CPU) ...", file=sys.stderr)
    path = export_onnx(model, args.out, precision=args.precision, images=images)
    on = f"{len(images)} image(s) of {args.images}" if images is not None else "2 synthetic probe images"
    print(f"exported {cfg.backbone} d={model.d} ({args.precision} precision matrices) -> {path} "
          f"({path.stat().st_size / 2**20:.1f} MiB); onnxruntime reproduces Padim.predict's maps within "
          f"{TOLERANCE:.0e} of their peak on {on}")
    return 0


def cmd_benchmark(args) -> int:
    cfg = build_config(args)
    figures = Path(args.figures) if args.figures else None
    name, root, category, options = data_args(args)
    record = run_benchmark(cfg, root, category, figures=figures, progress=not args.quiet, dataset=name,
                           compile=args.compile, **options)
    write_json(args.out, record)
    print(MARKDOWN_HEADER)
    print(markdown_row(record))
    if "frame_auroc" in record:
        pixel = record["pixel_auroc"]
        print(f"STC scene {category}: frame AUROC {record['frame_auroc']:.3f}, pixel AUROC "
              + ("n/a" if pixel is None else f"{pixel:.3f}"))
    print(f"results -> {args.out}" + (f", figures -> {figures}" if figures else ""))
    return 0


def cmd_download(args) -> int:
    root = download(args.dataset, args.root, category=args.category, progress=not args.quiet)
    print(f"ready: padim benchmark --dataset {args.dataset} --root {root} --category ...")
    return 0


def cmd_reproduce(args) -> int:
    try:
        seeds = None if args.seeds is None else int(args.seeds)
    except ValueError:
        raise PadimError(f"--seeds must be a whole number >= 1, got {args.seeds!r}") from None
    try:
        draws = None if args.rd_draws is None else int(args.rd_draws)
    except ValueError:
        raise PadimError(f"--rd-draws must be a whole number from 1 to 5, got {args.rd_draws!r}") from None
    tables = reproduce(tables=args.table, out=args.out, quick=args.quick, seeds=seeds, backbone=args.backbone,
                       data=args.data, device=args.device, progress=not args.quiet, rd_draws=draws)
    for t, table in tables.items():
        print(f"Table {t}: {table['title']}")
    return 0


def cmd_course(args) -> int:
    """The course's main job: execute every notebook headless and render the site."""
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    index = build_course(args.notebooks, args.out, only=only, progress=not args.quiet)
    print(f"course built: open {index.resolve()}")
    return 0


def _command(sub, name: str, func, quiet: bool, help: str) -> argparse.ArgumentParser:
    """A sub-command running `func`; `quiet`: it takes --quiet (no progress bars)."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=func)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ---------------------------------------------------------------------------- entry point
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="padim", description="PaDiM anomaly detection (Defard et al., 2020)")
    parser.add_argument("--version", action="version", version=f"padim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "synth", cmd_synth, quiet=False,
                 help="generate the embedded synthetic dataset (MVTec AD layout)")
    p.add_argument("--root", help="default: $PADIM_DATA/synthetic (PADIM_DATA defaults to ./data)")
    p.add_argument("--categories", help="comma-separated category names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny 64px images for smoke tests")
    p.add_argument("--stc", action="store_true",
                   help="write the synthetic ShanghaiTech Campus-layout video set instead (default root: "
                        "$PADIM_DATA/stc_synthetic)")

    p = _command(sub, "fit", cmd_fit, quiet=True,
                 help="fit PaDiM on a category's train/good images and save the model")
    _add_data_options(p)
    _add_config_options(p)
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")

    p = _command(sub, "predict", cmd_predict, quiet=True,
                 help="score images with a fitted model: heat maps and a CSV")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", help="auto, cpu or cuda (default: the model's)")

    p = _command(sub, "export", cmd_export, quiet=True,
                 help="write a fitted model's whole inference as one ONNX graph (uint8 images -> "
                      "maps, scores), validated with onnxruntime against torch")
    p.add_argument("model", help="model file written by `padim fit` (.safetensors)")
    p.add_argument("--out", required=True, help="ONNX file to write (.onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="how the precision matrices (most of the file) are stored; float16 halves them")
    p.add_argument("--images", help="validate on (up to 8 of) these images instead of 2 synthetic probe images")

    p = _command(sub, "benchmark", cmd_benchmark, quiet=True,
                 help="fit, predict and evaluate one category; write a JSON record")
    _add_data_options(p)
    _add_config_options(p)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--figures", help="folder for example heat maps and the score histogram")

    p = _command(sub, "download", cmd_download, quiet=True,
                 help="download a dataset from its official address (resumable, checked, "
                      "extracted atomically)")
    p.add_argument("dataset", choices=tuple(sources()))
    p.add_argument("--category", help="extract only this category (the whole archive is still downloaded)")
    p.add_argument("--root", help="default: its folder under $PADIM_DATA (mvtec_ad, btad, visa, stc)")

    p = _command(sub, "reproduce", cmd_reproduce, quiet=True,
                 help="re-run the paper's Tables I-VIII on this machine (resumable): markdown, "
                      "JSON and a figure each, beside the published numbers")
    p.add_argument("--table", default="all", help="I, II, III, IV, V, VI, VII, VIII, several comma-separated, or all "
                                                  "(default)")
    p.add_argument("--backbone", help="one backbone for every table (default: the paper's where its weights are "
                                      "here, else efficientnet_lite0)")
    p.add_argument("--seeds", help="seeds of the random channel choice (default 10; 2 with --quick)")
    p.add_argument("--rd-draws", help="Table VI: how many of the paper's 5 random preprocessings (default 5; the "
                                      "course runs 2)")
    p.add_argument("--quick", action="store_true", help="64 px images on the embedded quick-size data: every "
                                                        "table's structure in about a minute")
    p.add_argument("--data", help="folder of MVTec AD categories (default $PADIM_DATA/mvtec_ad, else the embedded "
                                  "synthetic data)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", help="output folder (default build/reproduce, build/reproduce_quick with --quick); "
                                 "a rerun continues the run found there")

    p = _command(sub, "course", cmd_course, quiet=True,
                 help="execute the course notebooks headless and render them into a site")
    p.add_argument("--notebooks", default="chapters", help="folder of the NN_*.py chapter sources (default chapters)")
    p.add_argument("--out", default="build", help="site folder (default build); index.html inside")
    p.add_argument("--only", help="comma-separated chapter prefixes, e.g. 04,05")
    return parser


#: Output paths of each command, checked before any work starts: option -> "file" or "folder".
OUTPUTS = {
    "synth": {"root": "folder"},
    "fit": {"out": "file"},
    "predict": {"out": "folder"},
    "export": {"out": "file"},
    "benchmark": {"out": "file", "figures": "folder"},
    "course": {"out": "folder"},
    "reproduce": {"out": "folder"},
}


def check_arguments(args) -> None:
    """What can be checked before the work starts: output paths (writable, of the right kind) and --seed."""
    for name, kind in OUTPUTS.get(args.command, {}).items():
        value = getattr(args, name, None)
        if value is None:
            continue  # optional and not given
        check = check_output_file if kind == "file" else check_output_dir
        check(value, "--" + name)
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if args.command != "fit" and world not in ("", "0", "1"):
        raise PadimError(f"only `padim fit` runs under torchrun (WORLD_SIZE={world}); run `padim {args.command}` "
                         "as one process")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2**64:
        raise PadimError(f"--seed must be an integer from 0 to 2**64 - 1, got {seed}")
    if getattr(args, "cache", None):
        check_output_dir(args.cache, "--cache")
        set_cache_dir(args.cache)


def _terminate(signum, frame):
    raise Terminated()


def _rank_prefix() -> str:
    """Under torchrun the errors of ranks other than 0 name their rank (torchrun sets RANK and WORLD_SIZE)."""
    rank, world = os.environ.get("RANK", "0").strip(), os.environ.get("WORLD_SIZE", "1").strip()
    return "" if rank in ("", "0") or world in ("", "1") else f"rank {rank}: "


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):  # file names that are not UTF-8, printed
        sys.stdout.reconfigure(errors="backslashreplace")
    start = time.perf_counter()
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None  # SIGTERM as Ctrl-C
    try:
        check_arguments(args)
        code = args.func(args)
    except PadimError as e:
        print(f"padim: error: {_rank_prefix()}{e}", file=sys.stderr)
        return 2
    except Terminated:
        print("padim: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("padim: interrupted", file=sys.stderr)
        return 130
    finally:
        if on_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if os.environ.get("PADIM_VERBOSE"):
        print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
