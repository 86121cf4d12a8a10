"""`padim reproduce`: re-run the paper's Tables I-VIII on this machine, resumably.

    tables = reproduce(tables="all", out="build/reproduce", quick=True)   # OUT/table_III.md/.json/.png, README.md
    tables = load_tables("build/reproduce")                               # {"I": {...}, ..., "VIII": {...}}

A run is a plan: a list of units (study, backbone, category, setting, seed; see
`units`) built from the tables asked for, the data present and the weights
present. Each unit's result is written to OUT/results/<run key>/... as soon as it is done
(the run key names the mode and the data folder, so runs on other data never mix), so a run
that is interrupted continues where it stopped; units whose result exists for the same data
content (a content digest of every file of the unit's category, `units.files_digest`), the same
config (the device aside) and the same padim_utils version, and whose record passes its checksum, are reused, and the output says which
and why the others are computed again; a run with more seeds or more categories computes only what is new.
Only the data the asked-for tables read is looked for or generated (STC only for IV and VIII). The backbone's layer outputs are
kept on disk as well (OUT/results/<run key>/features/, the newest few), so an interrupted run does not
run the backbone again over the category it stopped in.
One progress bar (with an ETA) covers the units still to compute. Then every table is
written as markdown, JSON and a figure beside the paper's published numbers
(`paper_results.json`, with its provenance), and OUT/README.md indexes them.

Backbones: each table runs on the paper's backbones for it (`PAPER_BACKBONES`) whose
ImageNet weights are on this machine; where none is, on EfficientNet-Lite0 (offline),
whose rows say "offline_lite0 (not the paper's backbone)". `backbone=` picks one for
every table (a torchvision backbone then downloads its weights if it must).
Random channel choices are repeated over `seeds` seeds (the paper averages 10 random
models); deterministic settings (PCA, every channel) run once.

Quick mode: the `quick` preset (64 px) on the embedded quick-size data, 2 seeds:
every table's structure in about a minute on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .. import __version__
from ..backbones import available_backbones, weights_status
from ..config import QUICK_DATA
from ..datasets import data_home, make_synthetic_mvtec, mvtec_categories
from ..datasets.mvtec import list_categories
from ..errors import PadimError
from ..files import check_output_dir, new_digest, write_json
from ..progress import progress_bar
from .stc import stc_source
from .tables import write_tables
from .units import LAYER_SETTINGS, RD_DRAWS, REDUCTION_SETTINGS, Context, Sources, Unit, base_config, run_unit

__all__ = ["TABLES", "PAPER_BACKBONES", "OFFLINE_BACKBONE", "reproduce", "load_tables", "make_plan", "find_sources",
           "choose_backbones", "backbone_label", "parse_tables", "default_out", "run_plan", "run_key", "needs_stc",
           "stale_reason"]

TABLES = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
#: The studies (kinds of unit) each table reads; "interpolation": mvtec units with the preset's other interpolation.
TABLE_STUDIES = {"I": ("layers",), "II": ("reduction",), "III": ("mvtec", "interpolation"), "IV": ("stc",),
                 "V": ("mvtec",), "VI": ("rd",), "VII": ("cost",), "VIII": ("cost", "stc")}
#: The backbones the paper reports each table with.
PAPER_BACKBONES = {"I": ("resnet18",), "II": ("resnet18",), "III": ("resnet18", "wide_resnet50_2"),
                   "IV": ("resnet18",), "V": ("efficientnet_b5", "wide_resnet50_2"), "VI": ("wide_resnet50_2",),
                   "VII": ("resnet18", "wide_resnet50_2"), "VIII": ("resnet18", "wide_resnet50_2")}
#: What runs where none of a table's paper backbones has its weights here.
OFFLINE_BACKBONE = "efficientnet_lite0"


# ---------------------------------------------------------------------------- arguments
def parse_tables(tables) -> tuple[str, ...]:
    """"all", one table ("III", "iii") or several ("I,III" or a list) -> table ids in the paper's order.

    >>> parse_tables("iii,I"), len(parse_tables("all"))
    (('I', 'III'), 8)
    """
    items = [tables] if isinstance(tables, str) else list(tables)
    names = [t.strip().upper() for item in items for t in str(item).split(",") if t.strip()]
    if not names:
        raise PadimError(f"no table named; choose from {', '.join(TABLES)} or all")
    if "ALL" in names:
        return TABLES
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise PadimError(f"unknown table {unknown[0]!r}; choose from {', '.join(TABLES)} or all")
    return tuple(t for t in TABLES if t in names)


def default_out(quick: bool) -> Path:
    """build/reproduce, or build/reproduce_quick in quick mode (so the two never share a folder)."""
    return Path("build") / ("reproduce_quick" if quick else "reproduce")


def _check_draws(draws) -> int:
    if draws is None:
        return len(RD_DRAWS)
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= len(RD_DRAWS):
        raise PadimError(f"--rd-draws must be a whole number from 1 to {len(RD_DRAWS)} (the paper's random "
                         f"preprocessings), got {draws!r}")
    return draws


def _check_seeds(seeds, quick: bool) -> int:
    if seeds is None:
        return 2 if quick else 10
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise PadimError(f"--seeds must be a whole number >= 1, got {seeds!r}")
    return seeds


def weights_present(backbone: str) -> bool:
    """True where `backbone`'s ImageNet weights are on this machine (no download needed)."""
    return weights_status(backbone).startswith(("cached", "offline"))


def choose_backbones(table: str, backbone: str | None = None) -> tuple[str, ...]:
    """`backbone` if given; else the table's paper backbones whose weights are here; else the offline one."""
    if backbone is not None:
        return (backbone,)
    present = tuple(b for b in PAPER_BACKBONES[table] if weights_present(b))
    return present or (OFFLINE_BACKBONE,)


def backbone_label(backbone: str) -> str:
    """How a table names a backbone's rows: the paper's, or "offline_lite0 (not the paper's backbone)"."""
    paper = {b for bs in PAPER_BACKBONES.values() for b in bs}
    if backbone in paper:
        return f"{backbone} (a paper backbone)"
    if backbone == OFFLINE_BACKBONE:
        return "offline_lite0 (not the paper's backbone)"
    return f"{backbone} (not the paper's backbone)"


# ---------------------------------------------------------------------------- data
def _mvtec_order(categories) -> tuple[str, ...]:
    known = [c for c in mvtec_categories() if c in categories]  # the paper's order: textures, then objects
    return tuple(known + sorted(c for c in categories if c not in known))


def find_sources(quick: bool, data=None, stc: bool = True) -> Sources:
    """The data of a run. MVTec AD: `data` (a folder of category folders) if given; else real MVTec AD
    under $PADIM_DATA/mvtec_ad (not in quick mode); else the embedded synthetic categories (generated once
    under $PADIM_DATA). STC, only where `stc` (a table asked for needs it): real under $PADIM_DATA/stc (not in
    quick mode), else the synthetic STC-layout set (generated once under $PADIM_DATA); else none, and nothing
    is looked for or written."""
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise PadimError(f"--data {root}: no such folder (give the folder holding the MVTec AD categories)")
        source = "MVTec AD"
    else:
        root, source = data_home() / "mvtec_ad", "MVTec AD"
        if quick or not list_categories(root):
            root = make_synthetic_mvtec(data_home() / ("synthetic_quick" if quick else "synthetic"),
                                        **(QUICK_DATA if quick else {}))
            source = "embedded synthetic"
    categories = _mvtec_order(list_categories(root))
    if not categories:
        raise PadimError(f"no MVTec AD category (a folder with train/ and test/) in {root}")
    if not stc:
        return Sources(Path(root).absolute(), source, categories, None, "not used", (), None)
    found = stc_source(quick, real=not quick)
    return Sources(Path(root).absolute(), source, categories, Path(found.root).absolute(), found.source,
                   found.scenes, found.frames_per_video)


def needs_stc(tables) -> bool:
    """Whether any of the tables reads STC units (IV, VIII)."""
    return any("stc" in TABLE_STUDIES[t] for t in tables)


# ---------------------------------------------------------------------------- the plan
def _seeds(setting: str, random: bool, seeds: int) -> range:
    return range(seeds) if random or setting.startswith("random") else range(1)


def make_plan(tables, backbones: dict[str, tuple[str, ...]], seeds: int, sources: Sources,
              quick: bool, draws: int = len(RD_DRAWS)) -> list[Unit]:
    """Every unit the tables need, once, ordered so that neighbouring units share their cached features;
    Table VI on the first `draws` of the paper's 5 random preprocessings."""
    studies = {(b, s) for t in tables for b in backbones[t] for s in TABLE_STUDIES[t]}
    units: list[Unit] = []
    for b in dict.fromkeys(b for t in tables for b in backbones[t]):  # in order, each once
        random = base_config(b, quick).reduction == "random"
        for c in sources.categories:
            if (b, "layers") in studies:
                units += [Unit("layers", b, c, s) for s in LAYER_SETTINGS]
            if (b, "reduction") in studies:
                units += [Unit("reduction", b, c, s, k) for s in REDUCTION_SETTINGS for k in _seeds(s, False, seeds)]
            if (b, "mvtec") in studies:
                units += [Unit("mvtec", b, c, "main", k) for k in _seeds("main", random, seeds)]
            if (b, "interpolation") in studies:
                units += [Unit("mvtec", b, c, other_interpolation(b, quick), k) for k in _seeds("main", random, seeds)]
        if (b, "rd") in studies:
            units += [Unit("rd", b, c, f"rd{r}", k) for c in sources.categories for r in RD_DRAWS[:draws]
                      for k in _seeds("rd", random, seeds)]
        if (b, "stc") in studies:
            units += [Unit("stc", b, s, "main", k) for s in sources.scenes for k in _seeds("main", random, seeds)]
        if (b, "cost") in studies:
            units += [Unit("cost", b, c, "main") for c in sources.categories]
    return units


def other_interpolation(backbone: str, quick: bool) -> str:
    """The interpolation Table III compares with: bicubic (the paper's) for a bilinear preset, else bilinear."""
    return "bilinear" if base_config(backbone, quick).interpolation == "bicubic" else "bicubic"


# ---------------------------------------------------------------------------- running it
def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: computed again


def run_key(quick: bool, sources: Sources) -> str:
    """The folder under OUT/results of a run's units: its mode and its MVTec AD folder, so that runs on other
    data (or in the other mode) in the same OUT never mix; e.g. "quick-3f2a9c01". Within it, each result
    also records the content of its data (`Context.data_key`), so a result whose data changed is not reused."""
    return f"{'quick' if quick else 'full'}-{hashlib.sha1(str(sources.mvtec_root).encode()).hexdigest()[:8]}"


def _counts(units) -> str:
    """"bottle 12, carpet 3": units per category, in plan order."""
    counts: dict[str, int] = {}
    for unit in units:
        counts[unit.category] = counts.get(unit.category, 0) + 1
    return ", ".join(f"{c} {n}" for c, n in counts.items())


def _settings(config) -> dict | None:
    """A recorded config without the device (which changes where a unit runs, not its result)."""
    return {k: v for k, v in config.items() if k != "device"} if isinstance(config, dict) else None


def _checksum(result: dict) -> str:
    """Content digest of a result record (but its checksum), as JSON with sorted keys."""
    h = new_digest()
    h.update(json.dumps({k: v for k, v in result.items() if k != "checksum"}, sort_keys=True).encode())
    return h.hexdigest()


def stale_reason(found: dict, unit: Unit, ctx: Context) -> str | None:
    """Why a saved result cannot be reused: "damaged" (its checksum differs from its content), "data" (the
    content of its category's files changed), "config" (another config, the device aside, or another
    padim_utils version wrote it), or None: reuse it."""
    if not isinstance(found, dict) or found.get("checksum") != _checksum(found):
        return "damaged"
    if found.get("data_key") != ctx.data_key(unit):
        return "data"
    if (_settings(found.get("config")) != _settings(ctx.config(unit).to_dict())
            or found.get("padim_utils_version") != __version__):
        return "config"
    return None


_STALE = {"damaged": "their checksum differs from their content (damaged or edited)",
          "data": "their data changed since (file contents)",
          "config": f"another config or padim_utils version wrote them (this is {__version__})"}


def run_plan(units: list[Unit], folder: Path, ctx: Context, progress: bool = True) -> tuple[dict[Unit, dict], int]:
    """Compute every unit whose result is not yet in `folder` (OUT/results/<run key>) for the same data and
    config; ({unit: result}, units computed now). A saved result is reused only where the content of its data
    (`Context.data_key`), its config and the padim_utils version are what they are now (`stale_reason`); the
    output says which were reused and which are computed again, and why. A result is written as soon as its
    unit is done, so an interrupted run loses one unit at most."""
    results, todo, stale = {}, [], {reason: [] for reason in _STALE}
    for unit in units:
        found = _read_result(folder / unit.path)
        reason = None if found is None else stale_reason(found, unit, ctx)
        if found is not None and reason is None:
            results[unit] = found
            continue
        todo.append(unit)
        if found is not None:
            stale[reason].append(unit)
    if results:
        print(f"reused {len(results)} of {len(units)} saved results from {folder} (their data, config and "
              f"version unchanged): {_counts(results)}")
    for reason, again in stale.items():
        if again:
            print(f"computing {len(again)} saved results again: {_STALE[reason]}: {_counts(again)}")
    done = 0
    bar = progress_bar(todo, f"reproduce ({len(results)} of {len(units)} units already done)", progress, unit="unit")
    try:
        for unit in bar:
            bar.set_postfix_str(str(unit), refresh=False)
            results[unit] = {**run_unit(unit, ctx), "data_key": ctx.data_key(unit)}
            results[unit]["checksum"] = _checksum(results[unit])
            write_json(folder / unit.path, results[unit])
            done += 1
    except KeyboardInterrupt:
        print(f"interrupted: {len(units) - len(todo) + done} of {len(units)} units are saved in {folder}; "
              "run the same command again to continue")
        raise
    finally:
        bar.close()
    return results, done


def reproduce(tables="all", out=None, quick: bool = False, seeds: int | None = None, backbone: str | None = None,
              data=None, device: str = "auto", progress: bool = True, rd_draws: int | None = None) -> dict[str, dict]:
    """Re-run the paper's `tables` and write them under `out`; {table id: the table as written to its JSON}.

    `quick`: the 64 px preset on the embedded quick-size data (default seeds 2, else 10);
    `rd_draws`: Table VI on the first 1-5 of the paper's 5 random preprocessings (default all 5);
    `backbone`: one backbone for every table (default: the paper's where its weights are here, else
    EfficientNet-Lite0); `data`: a folder of MVTec AD categories; `device`: auto, cpu or cuda.
    """
    ids = parse_tables(tables)
    seeds = _check_seeds(seeds, quick)
    draws = _check_draws(rd_draws)
    out = check_output_dir(default_out(quick) if out is None else out, "--out")
    if backbone is not None and backbone not in available_backbones():
        raise PadimError(f"unknown backbone {backbone!r}; available: {', '.join(available_backbones())}")
    sources = find_sources(quick, data, stc=needs_stc(ids))  # only the data the asked-for tables read
    folder = out / "results" / run_key(quick, sources)
    write_json(folder / "run.json", {"quick": quick, **sources.to_dict()})
    backbones = {t: choose_backbones(t, backbone) for t in ids}
    units = make_plan(ids, backbones, seeds, sources, quick, draws)
    start = time.perf_counter()
    ctx = Context(sources, quick, device, feature_dir=folder / "features")
    results, computed = run_plan(units, folder, ctx, progress)
    seconds = time.perf_counter() - start
    info = {"seeds": seeds, "rd_draws": draws, "quick": quick, "sources": sources.to_dict(), "units": len(units), "results": str(folder),
            "computed": computed, "seconds": seconds, "backbones": {t: list(b) for t, b in backbones.items()},
            "labels": {b: backbone_label(b) for bs in backbones.values() for b in bs},
            "interpolation": {b: base_config(b, quick).interpolation for bs in backbones.values() for b in bs}}
    written = write_tables(out, ids, results, info)
    print(f"{len(units)} units ({computed} computed now, {len(units) - computed} reused) in {seconds:.0f} s; "
          f"{len(written)} table(s) -> {out / 'README.md'}")
    return written


def load_tables(out) -> dict[str, dict]:
    """The tables a run wrote under `out` ({table id: the JSON of table_<id>.json}), in the paper's order."""
    out = Path(out)
    found = {t: out / f"table_{t}.json" for t in TABLES if (out / f"table_{t}.json").is_file()}
    if not found:
        raise PadimError(f"no table_*.json in {out}: run `padim reproduce --out {out}` first")
    tables = {}
    for t, path in found.items():
        try:
            tables[t] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PadimError(f"cannot read {path}: {e}") from None
    return tables
