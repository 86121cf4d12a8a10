"""The tables of `padim reproduce`: our numbers, mean ± SEM over seeds, beside the paper's published ones.

Each table is written three ways: OUT/table_<id>.md, table_<id>.json and table_<id>.png.
The JSON (what `reproduction.load_tables` reads back) is

    {"table": "III", "title": ..., "citation": ..., "columns": [{"key", "name", "unit", "fmt"}],
     "labels": ["group", "category"],          # the columns that name a row
     "paper_models": ["PaDiM-R18-Rd100", ...], # the paper's columns
     "rows": [{"labels": {...}, "backbone": "efficientnet_lite0",
               "backbone_label": "offline_lite0 (not the paper's backbone)", "data": "embedded synthetic",
               "ours": {"pixel_auroc": {"mean", "sem", "n", "values"}},  # values: one per seed (Rd draw in VI)
               "paper": [{"model", "metric", "value", "source"}]}],      # source: its path in paper_results.json
     "provenance": [...], "notes": [...], "run": {...}}

A row over several categories (a group mean) averages the categories seed by seed, then
takes mean ± SEM over the seeds: the paper's "averaged over 10 random models". SEM is
std(ddof=1) / sqrt(n); with n = 1 no ± is shown. A published value is None ("–", `MISSING`) where
the paper gives none or it could not be verified; every published value carries its
`source`, so it can be checked against `paper_results.json` and its provenance notes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..files import write_json, write_text
from ..markdown import MISSING, format_cell, markdown_table, table_header, table_row
from ..metrics import METRIC_LABELS
from ..paper import (ABLATION_METRICS, CITATION, MVTEC_OBJECTS, MVTEC_TEXTURES, STUDIES, category_group, paper_lookup,
                     paper_model_for, paper_note, paper_source, paper_value)
from ..plots import plot_reproduced_table, save_figure
from .units import LAYER_SETTINGS, REDUCTION_SETTINGS, Unit

__all__ = ["mean_sem", "build_table", "table_markdown", "write_tables", "gaps", "explain_gaps", "paper_table",
           "TITLES"]

TITLES = {
    "I": "Which layers? Each layer alone, the sum of the three single-layer maps, one joint Gaussian",
    "II": "Random channels vs PCA at the paper's d = 100 and 200",
    "III": "Localisation per class: pixel AUROC and PRO",
    "IV": "ShanghaiTech Campus: pixel AUROC",
    "V": "Detection per class: image AUROC",
    "VI": "Rd-MVTec AD (random rotation and crop), averaged over random preprocessings (the paper: 5)",
    "VII": "Time: inference per image, fit per class",
    "VIII": "Memory: the model (means + covariances) and the peak during fit and predict",
}
_COLUMNS = {  # key -> (name, unit, format)
    **{m: (METRIC_LABELS[m], "", ".3f") for m in ("image_auroc", "pixel_auroc", "pixel_aupro", "frame_auroc")},
    "seconds_per_image": ("inference time per image", "s", ".3g"), "fit_seconds": ("fit time per class", "s", ".3g"),
    "model_gb": ("model size", "GB", ".3g"), "peak_gb": ("peak memory", "GB", ".3g"),
}
_LAYER_LABELS = dict(zip(LAYER_SETTINGS, ("layer 1 alone", "layer 2 alone", "layer 3 alone",
                                          "sum of the 3 single-layer maps", "layers 1+2+3, one joint Gaussian")))


# ---------------------------------------------------------------------------- numbers
def mean_sem(values) -> dict:
    """{"mean", "sem", "n", "values"}: SEM = std(ddof=1) / sqrt(n), None for n < 2 (and everything None for n = 0).

    Three seeds at 0.90, 0.92 and 0.94: std 0.02, so SEM = 0.02 / sqrt(3); one seed has no spread to show:

    >>> s = mean_sem([0.90, 0.92, 0.94]); round(s["mean"], 6), round(s["sem"], 6), s["n"]
    (0.92, 0.011547, 3)
    >>> mean_sem([0.9])["sem"] is None
    True
    """
    v = [float(x) for x in values]
    if not v:
        return {"mean": None, "sem": None, "n": 0, "values": []}
    sem = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(np.mean(v)), "sem": sem, "n": len(v), "values": v}


def _paper(model: str, metric: str, path: str | None) -> dict:
    """A published value with its `source` (its path in paper_results.json, `paper.paper_source`)."""
    value = None if path is None else paper_lookup(path)
    return {"model": model, "metric": metric, "value": value, "source": None if value is None else path}


def _metrics(record: dict) -> dict:
    """A unit's result with the derived numbers the tables show (GB, not bytes)."""
    out = dict(record)
    out["model_gb"] = record["model_bytes"] / 1e9 if "model_bytes" in record else None
    out["peak_gb"] = record["peak_memory_bytes"] / 1e9 if "peak_memory_bytes" in record else None
    out["frame_auroc"] = record.get("image_auroc")
    return out


def _collect(results: dict[Unit, dict], study: str, backbone: str, by_draw: bool = False) -> dict:
    """{(setting, category): {replicate: metrics}}; the replicate is the seed, or with `by_draw` the Rd draw
    (its seeds averaged)."""
    grouped: dict = defaultdict(lambda: defaultdict(list))
    for unit, record in results.items():
        if unit.study == study and unit.backbone == backbone:
            setting, rep = ("rd", int(unit.setting.removeprefix("rd"))) if by_draw else (unit.setting, unit.seed)
            grouped[(setting, unit.category)][rep].append(_metrics(record))
    out = {}
    for key, reps in grouped.items():
        out[key] = {}
        for rep, records in reps.items():
            out[key][rep] = {k: None if any(r[k] is None for r in records) else float(np.mean([r[k] for r in records]))
                             for k in _COLUMNS if all(k in r for r in records)}
            out[key][rep]["record"] = records[0]
    return out


def _values(data: dict, setting: str, categories, metric: str) -> list[float]:
    """One value per replicate: the categories' mean, over the replicates every category has."""
    per = [data.get((setting, c), {}) for c in categories]
    if not per or not all(per):
        return []
    reps = sorted(set.intersection(*(set(p) for p in per)))
    vals = [[p[r].get(metric) for p in per] for r in reps]
    return [float(np.mean(v)) for v in vals if v and None not in v]


def _first_record(data: dict, setting: str, categories) -> dict:
    for c in categories:
        for rep in data.get((setting, c), {}).values():
            return rep["record"]
    return {}


def _row(labels: dict, backbone: str, info: dict, data_name: str, ours: dict, paper: list, **extra) -> dict:
    return {"labels": labels, "backbone": backbone, "backbone_label": info["labels"][backbone], "data": data_name,
            "ours": {k: mean_sem(v) for k, v in ours.items()}, "paper": paper, **extra}


def _grouped_rows(data, setting, categories, metrics, backbone, info, data_name, paper_for) -> list[dict]:
    """One row per category (textures, then objects, then others), each group's mean, the mean of all.
    `paper_for(name)`: the paper's entries for a real category or a group ("textures", "objects", "mean")."""
    real = set(MVTEC_TEXTURES + MVTEC_OBJECTS)
    groups: dict[str, list[str]] = {"textures": [], "objects": [], "other": []}
    for c in categories:
        groups[category_group(c)].append(c)
    rows = []
    for g, cats in groups.items():
        for c in cats:
            rows.append(_row({"group": g, "category": c}, backbone, info, data_name,
                             {m: _values(data, setting, [c], m) for m in metrics}, paper_for(c) if c in real else []))
        if cats and g != "other":
            rows.append(_row({"group": g, "category": f"mean of {len(cats)}"}, backbone, info, data_name,
                             {m: _values(data, setting, cats, m) for m in metrics}, paper_for(g)))
    rows.append(_row({"group": "all", "category": f"mean of {len(categories)}"}, backbone, info, data_name,
                     {m: _values(data, setting, categories, m) for m in metrics}, paper_for("mean")))
    return rows


def _mvtec_paper(models, metrics):
    def paper_for(name: str) -> list[dict]:
        return [_paper(m, k, paper_source("mvtec", m, k, name)) for m in models for k in metrics]
    return paper_for


def _ablation_rows(results, info, backbones, categories, study, settings, model, labels, per_category=False):
    """Tables I and II: per backbone, one row per setting (`labels(setting, its first record)` names it, our
    means over the categories, with `per_category` each category's too), beside the paper's `model` row."""
    rows = []
    for b in backbones:
        data = _collect(results, study, b)
        for s in settings:
            paper = [_paper(model, m, paper_source(study, s, m)) for m in ABLATION_METRICS]
            extra = {"per_category": {c: {m: (_values(data, s, [c], m) or [None])[0] for m in ABLATION_METRICS}
                                      for c in categories}} if per_category else {}
            rows.append(_row(labels(s, _first_record(data, s, categories)), b, info, info["sources"]["mvtec"],
                             {m: _values(data, s, categories, m) for m in ABLATION_METRICS}, paper, **extra))
    return rows


# ---------------------------------------------------------------------------- the eight tables
def _table_layers(results, info, backbones, categories):
    def labels(s: str, rec: dict) -> dict:
        width = rec.get("channels" if s == "sum_of_3_maps" else "d", "?")
        return {"setting": _LAYER_LABELS[s], "our layers": "+".join(rec.get("layers", [])) + f" ({width} ch)"}

    model = "PaDiM-R18 (all 448 channels)"
    rows = _ablation_rows(results, info, backbones, categories, "layers", LAYER_SETTINGS, model, labels,
                          per_category=True)
    notes = ["Every channel of the layers used (no reduction), one Gaussian per patch position, as the paper's "
             "Table I.",
             "The paper's layer i is our i-th hooked layer (on EfficientNet-Lite0: blocks.1, blocks.2, blocks.4, "
             "strides 4, 8, 16 like ResNet's layers 1-3). Our numbers are the mean over the categories; "
             "per_category in the JSON."]
    return ABLATION_METRICS, ["setting", "our layers"], [model], rows, notes


def _table_reduction(results, info, backbones, categories):
    def labels(s: str, rec: dict) -> dict:
        kind, paper_d = s.split("_")
        name = "every channel" if kind == "none" else f"{'random' if kind == 'random' else 'PCA'}, d = {paper_d}"
        return {"setting": name, "our d": f"{rec.get('d', '?')} of {rec.get('channels', '?')}"}

    model = "PaDiM-R18 (layers 1-3)"
    rows = _ablation_rows(results, info, backbones, categories, "reduction", REDUCTION_SETTINGS, model, labels)
    notes = ["The paper's d = 100 and 200 are out of ResNet18's 448 channels; on another backbone d is the same "
             "fraction of its channels (round(d * C / 448)).",
             "Random rows: mean ± SEM over the seeds (the paper averages 10 random models); PCA and every channel are "
             "deterministic (one run). Our numbers are means over the categories."]
    return ABLATION_METRICS, ["setting", "our d"], [model], rows, notes


def _table_mvtec(metrics, models, study="mvtec", by_draw=False, interpolation=False):
    """Tables III, V (study "mvtec") and VI ("rd", by Rd draw); `interpolation`: Table III's extra row, the mean
    of all categories with the preset's other interpolation (image resize and map upsampling)."""
    def build(results, info, backbones, categories):
        rows = []
        for b in backbones:
            data = _collect(results, study, b, by_draw=by_draw)
            setting = "rd" if by_draw else "main"
            paper_for = (_mvtec_paper(models, metrics) if study == "mvtec" else
                         lambda name: [_paper(m, k, paper_source("rd", m, k) if name == "mean" else None)
                                       for m in models for k in metrics])
            block = _grouped_rows(data, setting, categories, metrics, b, info, info["sources"]["mvtec"], paper_for)
            if interpolation:
                for r in block:
                    r["labels"]["interpolation"] = info["interpolation"][b]
                for other in sorted({s for s, _ in data} - {"main"}):
                    labels = {"group": "all", "category": f"mean of {len(categories)}", "interpolation": other}
                    block.append(_row(labels, b, info, info["sources"]["mvtec"],
                                      {m: _values(data, other, categories, m) for m in metrics}, paper_for("mean")))
            rows += block
        notes = ["Each row: the backbone's preset (random d channels), mean ± SEM over the seeds; a group's mean "
                 "averages its categories seed by seed."]
        if any(c.endswith("_syn") for c in categories):
            notes.append("The embedded synthetic categories count as the group they imitate (carpet_syn: textures, "
                         "bottle_syn: objects) and have no published value.")
        if interpolation:
            notes.append("interpolation: how images are resized and patch distances upsampled to the map; the paper "
                         "uses bicubic, anomalib (and our offline preset) bilinear. The last row repeats the mean of "
                         "all categories with the other one, everything else equal.")
        if by_draw:
            draws = info.get("rd_draws", 5)
            notes.append("Rd-MVTec: each image and mask rotated by a random angle in [-10, 10] degrees and cropped "
                         f"at random from 256 to 224 px; ± is the SEM over {draws} random preprocessing(s) (each the "
                         "mean over the channel seeds)"
                         + ("." if draws == 5 else f"; the paper averages 5 (`padim reproduce --table VI` runs 5)."))
        return metrics, ["group", "category"] + (["interpolation"] if interpolation else []), list(models), rows, notes
    return build


def _table_stc(results, info, backbones, categories):
    metrics, models, rows = ("pixel_auroc", "frame_auroc"), ("PaDiM-R18-Rd100", "SPADE"), []
    scenes = info["sources"]["scenes"]
    for b in backbones:
        data = _collect(results, "stc", b)
        for s in scenes:
            rows.append(_row({"scene": s}, b, info, info["sources"]["stc"],
                             {m: _values(data, "main", [s], m) for m in metrics}, []))
        rows.append(_row({"scene": f"mean of {len(scenes)}"}, b, info, info["sources"]["stc"],
                         {m: _values(data, "main", scenes, m) for m in metrics},
                         [_paper(m, "pixel_auroc", paper_source("stc", m, "pixel_auroc")) for m in models]))
    notes = ["One model per scene, frames resized without a crop, each frame an image (frame AUROC: its score "
             "against its label; the paper reports pixel AUROC only)."]
    return metrics, ["scene"], list(models), rows, notes


def _table_time(results, info, backbones, categories):
    metrics, rows = ("seconds_per_image", "fit_seconds"), []
    models = ("PaDiM-R18-Rd100", "PaDiM-WR50-Rd550", "SPADE-WR50")
    for b in backbones:
        data = _collect(results, "cost", b)
        machine = _first_record(data, "main", categories).get("device_name", "?")
        for c in categories:
            rows.append(_row({"category": c, "machine": machine}, b, info, info["sources"]["mvtec"],
                             {m: _values(data, "main", [c], m) for m in metrics}, []))
        rows.append(_row({"category": f"mean of {len(categories)}", "machine": machine}, b, info,
                         info["sources"]["mvtec"], {m: _values(data, "main", categories, m) for m in metrics},
                         [_paper(m, k, paper_source("cost", m, k)) for k in metrics for m in models]))
    notes = ["Ours: the whole pipeline from the image files (reading, resizing, backbone, Gaussians, maps) on this "
             "machine, one run per category; inference time = predict time of the test set / its images.",
             f"The paper's times were taken on its own machine: {paper_note('cost')}."]
    return metrics, ["category", "machine"], list(models), rows, notes


def _table_memory(results, info, backbones, categories):
    metrics, models, rows = ("model_gb", "peak_gb"), ("PaDiM-R18-Rd100", "PaDiM-WR50-Rd550", "SPADE"), []
    scenes = info["sources"]["scenes"]
    for b in backbones:
        for study, names, data_name, key in (("cost", categories, info["sources"]["mvtec"], "mvtec"),
                                             ("stc", scenes, info["sources"]["stc"], "stc")):
            data = _collect(results, study, b)
            if not data:
                continue
            # stc units are seeded: seed 0's model (the size does not depend on the seed)
            data = {k: {r: v for r, v in reps.items() if r == 0} for k, reps in data.items()}
            for c in names:
                rows.append(_row({"data": key, "category": c}, b, info, data_name,
                                 {m: _values(data, "main", [c], m) for m in metrics}, []))
            rows.append(_row({"data": key, "category": f"mean of {len(names)}"}, b, info, data_name,
                             {m: _values(data, "main", names, m) for m in metrics},
                             [_paper(m, "model_gb", paper_source("cost", m, "model_gb", key)) for m in models]))
    notes = ["Model size: the float32 means and inverse covariances PaDiM keeps (what the paper's Table VIII "
             "counts; it does not grow with the training set, SPADE's does). Peak memory: the process's peak "
             "resident memory during fit + predict on the CPU (everything: libraries, backbone, images), torch's "
             "peak allocation on a GPU; measured on the MVTec AD runs of Table VII only."]
    return metrics, ["data", "category"], list(models), rows, notes


_BUILDERS = {
    "I": _table_layers, "II": _table_reduction,
    "III": _table_mvtec(("pixel_auroc", "pixel_aupro"), ("PaDiM-R18-Rd100", "PaDiM-WR50-Rd550"), interpolation=True),
    "IV": _table_stc,
    "V": _table_mvtec(("image_auroc",), ("PaDiM-R18-Rd100", "PaDiM-WR50-Rd550", "PaDiM-EfficientNet-B5")),
    "VI": _table_mvtec(("pixel_auroc", "pixel_aupro"), ("PaDiM-WR50-Rd550",), study="rd", by_draw=True),
    "VII": _table_time, "VIII": _table_memory,
}


def _spread(table: str, seeds: int, draws: int = 5) -> str:
    """What ± means in `table`."""
    if table == "VI":
        return (f"mean ± SEM over {draws} random preprocessing(s){' (the paper: 5)' if draws != 5 else ''}, each "
                f"the mean over {seeds} channel seed(s)")
    if table in ("I", "VII", "VIII"):
        return "one run per setting (no random choice), so no ±"
    return (f"mean ± SEM over {seeds} seed(s) of the random channel choice; no ± where a setting is deterministic "
            "(n = 1)")


def build_table(table: str, results: dict[Unit, dict], info: dict) -> dict:
    """Table `table` from the units' results and the run's `info` (seeds, sources, backbones, labels)."""
    backbones = info["backbones"][table]
    categories = info["sources"]["categories"]
    metrics, labels, models, rows, notes = _BUILDERS[table](results, info, backbones, categories)
    provenance = [paper_note()]
    study = {"I": "layers", "II": "reduction", "VI": "rd", "VII": "cost"}.get(table)
    if study:
        provenance.append(f"{STUDIES[study]}: {paper_note(study, 'PaDiM-WR50-Rd550')}")
    return {"table": table, "title": TITLES[table], "citation": CITATION,
            "paper": f"Table {table} of {CITATION}",
            "columns": [dict(zip(("key", "name", "unit", "fmt"), (k, *_COLUMNS[k]))) for k in metrics],
            "labels": labels, "paper_models": models, "rows": rows, "provenance": provenance, "notes": notes,
            "spread": _spread(table, info["seeds"], info.get("rd_draws", 5)),
            "run": {"seeds": info["seeds"], "rd_draws": info.get("rd_draws", 5), "quick": info["quick"],
                    "backbones": {b: info["labels"][b] for b in backbones},
                    "interpolation": {b: info["interpolation"][b] for b in backbones},
                    "categories": info["sources"]["categories"],
                    "data": {"mvtec": info["sources"]["mvtec"], "stc": info["sources"]["stc"]}}}


# ---------------------------------------------------------------------------- reading them
def gaps(table: dict) -> list[dict]:
    """Every (row, metric) where both we and the paper have a number: {"table", "row", "metric", "label"
    (the column's name and unit, e.g. "AU-PRO (FPR 0.3)"), "model", "ours", "paper", "gap" (ours - paper),
    "backbone"}, in table order."""
    labels = {c["key"]: c["name"] + (f" ({c['unit']})" if c["unit"] else "") for c in table["columns"]}
    out = []
    for r in table["rows"]:
        for p in r["paper"]:
            ours = r["ours"].get(p["metric"]) or {}
            if p["value"] is not None and ours.get("mean") is not None:
                out.append({"table": table["table"], "row": " / ".join(str(r["labels"][k]) for k in table["labels"]),
                            "metric": p["metric"], "label": labels[p["metric"]], "model": p["model"], "ours": ours["mean"], "paper": p["value"],
                            "gap": ours["mean"] - p["value"], "backbone": r["backbone"]})
    return out


def explain_gaps(table: dict) -> list[str]:
    """Why our numbers in `table` differ from the paper's, from what the run did differently (one line each)."""
    run, t = table["run"], table["table"]
    why = []
    paper_bb = {"I": "ResNet18", "II": "ResNet18", "IV": "ResNet18", "VI": "Wide-ResNet50-2"}.get(
        t, "ResNet18 / Wide-ResNet50-2" + (" / EfficientNet-B5" if t == "V" else ""))
    for backbone, label in run["backbones"].items():
        if "a paper backbone" not in label:
            why.append(f"another backbone: {backbone} instead of the paper's {paper_bb} (other layers, channels "
                       f"and ImageNet features{'; d scaled to its channel count' if t == 'II' else ''})")
    data = run["data"]["stc" if t == "IV" else "mvtec"]
    if t not in ("VII", "VIII") and data != ("ShanghaiTech Campus" if t == "IV" else "MVTec AD"):
        why.append(f"other data: the {data} set, not the paper's {'STC' if t == 'IV' else 'MVTec AD'} "
                   "(other defects, other difficulty; published per-category values do not apply)")
    if run["quick"]:
        why.append("quick mode: 64 px images and a few training images per category (the paper: 224 px crops "
                   "of 256 px images and 60-400 training images), so the covariances rest mostly on eps")
    elif data == "MVTec AD" and t != "IV" and len(run.get("categories", ())) < 15:
        n = len(run["categories"])
        why.append(f"our means cover {n} MVTec AD categor{'y' if n == 1 else 'ies'} (those present here); "
                   "the paper's cover all 15")
    bilinear = [b for b, i in run.get("interpolation", {}).items() if i != "bicubic"]
    if bilinear and t not in ("VII", "VIII"):
        why.append(f"bilinear image resizing and map upsampling ({', '.join(bilinear)}'s preset, anomalib's choice) "
                   "where the paper uses bicubic"
                   + ("; the last row shows the same run with bicubic" if t == "III" else ""))
    if t in ("II", "III", "IV", "V", "VI") and run["seeds"] < 10:
        why.append(f"fewer seeds: {run['seeds']} random channel choices where the paper averages 10 random "
                   "models (a wider SEM; the mean itself is not biased)")
    if t == "VI" and run.get("rd_draws", 5) < 5:
        why.append(f"fewer random preprocessings: {run['rd_draws']} where the paper averages 5 (a wider SEM)")
    if t in ("VII", "VIII"):
        why.append("another machine and another size: times and memory scale with the image size, the number of "
                   "images, the backbone and d (model size = positions x d x (d + 1) x 4 bytes)")
    return why


# ---------------------------------------------------------------------------- writing
def _cell(stat: dict | None, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return MISSING
    text = format(stat["mean"], fmt)
    if stat.get("sem") is None:
        return text
    sem = format(stat["sem"], fmt)
    if fmt.endswith("f") and float(sem) == 0:  # below the last digit shown: say so rather than "± 0.000"
        sem = "<" + format(10 ** -int(fmt[1:-1]), fmt)
    return f"{text} ± {sem}"


def _paper_cell(row: dict, model: str, metric: str, fmt: str) -> str:
    for p in row["paper"]:
        if p["model"] == model and p["metric"] == metric and p["value"] is not None:
            return format(p["value"], fmt)
    return MISSING


def table_markdown(table: dict) -> str:
    """The table as markdown: ours (mean ± SEM) beside the paper's, then what the numbers are and where the
    published ones come from."""
    cols = []  # (header, function of a row)
    for c in table["columns"]:
        unit = f" ({c['unit']})" if c["unit"] else ""
        cols.append((f"{c['name']}{unit}: ours", lambda r, c=c: _cell(r["ours"].get(c["key"]), c["fmt"])))
        for m in table["paper_models"]:
            if any(p["model"] == m and p["metric"] == c["key"] and p["value"] is not None for r in table["rows"]
                   for p in r["paper"]):
                cols.append((f"{c['name']}{unit}: paper {m}",
                             lambda r, c=c, m=m: _paper_cell(r, m, c["key"], c["fmt"])))
    header = [*table["labels"], "backbone", *(h for h, _ in cols)]
    lines = [f"## Table {table['table']} · {table['title']}", ""]
    run = table["run"]
    for b, label in run["backbones"].items():
        lines.append(f"- **Ours: {label}**" + ("" if "a paper backbone" in label else
                     ": its numbers sit beside the paper's for reference, they are not the same experiment") + ".")
    lines += [f"- Data: {run['data']['stc'] if table['table'] == 'IV' else run['data']['mvtec']}"
              f"{' (quick mode: 64 px images, a few training images)' if run['quick'] else ''}; {table['spread']}.",
              f"- Paper: {table['paper']} (`padim_utils/paper_results.json`); {MISSING} = not published or not verified.", "",
              table_header(header)]
    for r in table["rows"]:
        cells = [str(r["labels"].get(k, "")) for k in table["labels"]] + [r["backbone_label"]] + [f(r) for _, f in cols]
        lines.append(table_row(cells))
    lines += ["", *(f"- {n}" for n in table["notes"]), *(f"- Provenance: {p}" for p in table["provenance"])]
    return "\n".join(lines) + "\n"


#: The metrics of `paper_table`, in its column order.
PAPER_TABLE_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def paper_table(records: list[dict], model: str | None = None) -> str:
    """Benchmark records (one per category) as the paper's table: categories grouped into textures and
    objects (an embedded synthetic category in the group it imitates, as `padim reproduce`'s tables do),
    their means and the overall mean, each of our numbers beside the published one of `model`
    (default: the paper row of the records' backbone). Markdown; "–" where a number does not exist."""
    if not records:
        raise ValueError("paper_table needs at least one benchmark record")
    model = model or paper_model_for(records[0].get("backbone", ""))
    lines = [f"Ours: {records[0].get('backbone', '?')}, d = {records[0].get('d', '?')}. "
             f"Paper: {model} ({CITATION}).", "",
             table_header(["group", "category", *(f"{METRIC_LABELS[k]} (ours / paper)" for k in PAPER_TABLE_METRICS)])]
    by_group: dict[str, list[dict]] = {"textures": [], "objects": [], "other": []}
    for r in sorted(records, key=lambda r: r["category"]):
        by_group[category_group(r["category"])].append(r)

    def number(x) -> str:
        return format_cell(None if x is None else float(x))

    def row(group: str, name: str, ours: dict, paper_key: str | None) -> str:
        return table_row([group, name, *(f"{number(ours.get(k))} / "
                                         f"{number(paper_value(model, paper_key, k) if paper_key else None)}"
                                         for k in PAPER_TABLE_METRICS)])

    def means(rs: list[dict]) -> dict:
        return {k: sum(r[k] for r in rs) / len(rs) for k in PAPER_TABLE_METRICS}

    grouped, real = [], set(MVTEC_TEXTURES + MVTEC_OBJECTS)
    for group in ("textures", "objects", "other"):
        for r in by_group[group]:
            lines.append(row(group, r["category"], r, r["category"] if r["category"] in real else None))
        if by_group[group] and group != "other":
            lines.append(row(group, f"**mean of {len(by_group[group])}**", means(by_group[group]), group))
            grouped += by_group[group]
    if grouped:
        lines.append(row("all", f"**mean of {len(grouped)}**", means(grouped), "mean"))
    synthetic = [r["category"] for r in grouped if r["category"] not in real]
    if synthetic:
        lines += ["", f"{', '.join(synthetic)}: embedded synthetic, counted in the group each imitates; no published "
                      "value, so the means beside the paper's are a reference only."]
    n_real = len(grouped) - len(synthetic)
    if n_real < len(real):
        lines += ["", f"Our means cover {n_real} of the 15 MVTec AD categories; the paper's cover all 15."]
    return "\n".join(lines)


def _readme(out: Path, tables: dict[str, dict], info: dict) -> str:
    s = info["sources"]
    lines = ["# PaDiM, reproduced on this machine", "",
             f"The paper: {CITATION}. Made by `padim reproduce` ({'quick mode, ' if info['quick'] else ''}"
             f"{info['seeds']} seed(s); {info['units']} units, {info['computed']} computed in the last run "
             f"({info['seconds']:.0f} s), the rest reused from `{Path(info['results']).relative_to(out)}/`, "
             "saved there by an earlier run on the same data).", "",
             f"- MVTec AD data: {s['mvtec']} ({', '.join(s['categories'])}) from `{s['mvtec_root']}`",
             (f"- STC data: {s['stc']} (scenes {', '.join(s['scenes'])}) from `{s['stc_root']}`" if s["stc_root"]
              else "- STC data: not used (no table asked for reads it)"),
             "- Backbones: " + "; ".join(f"{b}: {label}" for b, label in info["labels"].items()), "",
             markdown_table([{"table": t, "what": table["title"],
                              "files": f"[markdown](table_{t}.md) · [JSON](table_{t}.json) · [figure](table_{t}.png)"}
                             for t, table in tables.items()])]
    lines += ["", "Rows of a backbone that is not the paper's are labelled so: compare the direction of an effect "
                  "with the paper, not the value. The published numbers come from `padim_utils/paper_results.json` "
                  "with their provenance; `results/<run key>/` holds one JSON per unit (a rerun continues from them)."]
    return "\n".join(lines) + "\n"


def write_tables(out: Path, tables, results: dict[Unit, dict], info: dict) -> dict[str, dict]:
    """Build and write OUT/table_<id>.md/.json/.png for each of `tables`, and OUT/README.md; {id: table}."""
    written = {}
    for t in tables:
        table = build_table(t, results, info)
        write_json(out / f"table_{t}.json", table)
        write_text(out / f"table_{t}.md", table_markdown(table))
        save_figure(plot_reproduced_table(table), out / f"table_{t}.png")
        written[t] = table
    write_text(out / "README.md", _readme(out, written, info))
    return written
