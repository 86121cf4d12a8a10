"""The paper's published numbers, and our results in the paper's table format.

`paper_results.json` (shipped with the package) holds the numbers published in
Defard et al., 2020, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", arXiv 2011.08785 (MVTec AD per class and means, STC,
Rd-MVTec, the layer and random-vs-PCA ablations, time and memory), and anomalib's
published Padim means, as fractions; `null` where a value is not published or could
not be verified from a readable copy. Its `_about` / `_note` entries say where each
value comes from: keep them with the numbers wherever you show them.

    paper_value("PaDiM-WR50-Rd550", "bottle", "pixel_auroc")    # 0.983
    print(paper_table(records))                                 # ours beside the paper's
"""

from __future__ import annotations

import functools
import json
import math
from importlib.resources import files

__all__ = ["MVTEC_TEXTURES", "MVTEC_OBJECTS", "CITATION", "paper_results", "paper_value", "paper_model_for",
           "paper_table", "category_group"]

CITATION = "Defard et al., 2020, PaDiM, arXiv 2011.08785"
#: MVTec AD's categories as the paper's tables group them.
MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor",
                 "zipper")
# our metric name -> the paper file's
_KEYS = {"image_auroc": "image_auroc", "pixel_auroc": "pixel_auroc", "pixel_aupro": "pro"}
_COLUMNS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AU-PRO"))


@functools.cache
def paper_results() -> dict:
    """The whole `paper_results.json` (see the module docstring for its provenance)."""
    return json.loads(files(__package__).joinpath("paper_results.json").read_text())


def paper_value(model: str, category: str, metric: str) -> float | None:
    """A published MVTec AD number: model e.g. "PaDiM-R18-Rd100", category or "textures"/"objects"/"mean",
    metric "image_auroc", "pixel_auroc" or "pixel_aupro". None where the paper gives none."""
    table = paper_results()["mvtec_localization_and_detection"]
    return table.get(model, {}).get(category, {}).get(_KEYS.get(metric, metric))


def paper_model_for(backbone: str) -> str:
    """The paper's row closest to a backbone (its d aside)."""
    return {"resnet18": "PaDiM-R18-Rd100", "wide_resnet50_2": "PaDiM-WR50-Rd550",
            "efficientnet_b5": "PaDiM-EfficientNet-B5"}.get(backbone, "PaDiM-WR50-Rd550")


def category_group(category: str) -> str:
    """"textures", "objects" or "other": MVTec AD's group of a category; an embedded synthetic category
    ("carpet_syn", "bottle_syn") counts as the group of the category it imitates."""
    name = category.removesuffix("_syn")
    return "textures" if name in MVTEC_TEXTURES else "objects" if name in MVTEC_OBJECTS else "other"


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def paper_table(records: list[dict], model: str | None = None) -> str:
    """Benchmark records (one per category) as the paper's table: categories grouped into textures and
    objects (an embedded synthetic category in the group it imitates, as `padim reproduce`'s tables do),
    their means and the overall mean, each of our numbers beside the published one of `model`
    (default: the paper row of the records' backbone). Markdown; "–" where a number does not exist."""
    if not records:
        raise ValueError("paper_table needs at least one benchmark record")
    model = model or paper_model_for(records[0].get("backbone", ""))
    header = "| group | category | " + " | ".join(f"{name} (ours / paper)" for _, name in _COLUMNS) + " |"
    lines = [f"Ours: {records[0].get('backbone', '?')}, d = {records[0].get('d', '?')}. "
             f"Paper: {model} ({CITATION}).", "", header, "|" + "---|" * (2 + len(_COLUMNS))]
    by_group: dict[str, list[dict]] = {"textures": [], "objects": [], "other": []}
    for r in sorted(records, key=lambda r: r["category"]):
        by_group[category_group(r["category"])].append(r)

    def row(group: str, name: str, ours: dict, paper_key: str | None) -> str:
        cells = [f"{_fmt(ours.get(k))} / {_fmt(paper_value(model, paper_key, k) if paper_key else None)}"
                 for k, _ in _COLUMNS]
        return f"| {group} | {name} | " + " | ".join(cells) + " |"

    grouped, real = [], set(MVTEC_TEXTURES + MVTEC_OBJECTS)
    for group in ("textures", "objects", "other"):
        for r in by_group[group]:
            lines.append(row(group, r["category"], r, r["category"] if r["category"] in real else None))
        if by_group[group] and group != "other":
            means = {k: _mean([r[k] for r in by_group[group]]) for k, _ in _COLUMNS}
            lines.append(row(group, f"**mean of {len(by_group[group])}**", means, group))
            grouped += by_group[group]
    if grouped:
        means = {k: _mean([r[k] for r in grouped]) for k, _ in _COLUMNS}
        lines.append(row("all", f"**mean of {len(grouped)}**", means, "mean"))
    synthetic = [r["category"] for r in grouped if r["category"] not in real]
    if synthetic:
        lines += ["", f"{', '.join(synthetic)}: embedded synthetic, counted in the group each imitates; no published "
                      "value, so the means beside the paper's are a reference only."]
    n_real = len(grouped) - len(synthetic)
    if n_real < len(real):
        lines += ["", f"Our means cover {n_real} of the 15 MVTec AD categories; the paper's cover all 15."]
    return "\n".join(lines)
