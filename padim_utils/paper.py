"""The paper's published numbers and its facts: the one place that reads `paper_results.json`.

`paper_results.json` (shipped with the package) holds the numbers published in
Defard et al., 2020, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", arXiv 2011.08785 (MVTec AD per class and means, STC,
Rd-MVTec, the layer and random-vs-PCA ablations, time and memory), and anomalib's
published Padim means, as fractions; `null` where a value is not published or could
not be verified from a readable copy. Its notes (`paper_note`) say where each value
comes from: keep them with the numbers wherever you show them.

Every number is asked for by study (the paper's experiment), name (its model, or the ablation's
setting) and our metric name; nothing outside this module indexes the file itself:

    paper_value("PaDiM-WR50-Rd550", "bottle", "pixel_auroc")      # 0.983, Table III
    paper_number("stc", "PaDiM-R18-Rd100", "pixel_auroc")          # 0.912, Table IV
    paper_ablation("layers")["layer1"]                             # Table I: {"pixel_auroc", "pixel_aupro"}
    paper_entries("cost", "model_gb", "mvtec")                     # Table VIII: {model: GB}
    paper_source("rd", "PaDiM-WR50-Rd550", "pixel_aupro")          # its path in the file: "rd_mvtec/.../pro"

>>> paper_value("PaDiM-WR50-Rd550", "bottle", "pixel_auroc"), paper_value("PaDiM-R18-Rd100", "carpet", "pixel_auroc")
(0.983, None)
>>> paper_ablation("reduction")["random_100"], PAPER_D["wide_resnet50_2"]
({'pixel_auroc': 0.967, 'pixel_aupro': 0.905}, 550)
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

__all__ = ["MVTEC_TEXTURES", "MVTEC_OBJECTS", "CITATION", "PAPER_D", "STUDIES", "ABLATION_METRICS", "paper_results",
           "paper_lookup", "paper_source", "paper_number", "paper_value", "paper_entries", "paper_ablation",
           "paper_note", "paper_model_for", "category_group"]

CITATION = "Defard et al., 2020, PaDiM, arXiv 2011.08785"
#: MVTec AD's categories as the paper's tables group them.
MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor",
                 "zipper")
#: The paper's d per backbone: the random channels its models keep ("Rd100", "Rd550"); None: every channel
#: (EfficientNet-B5, named without "Rd").
PAPER_D = {"resnet18": 100, "wide_resnet50_2": 550, "efficientnet_b5": None}

#: Each study of the paper -> its section of paper_results.json.
STUDIES = {"mvtec": "mvtec_localization_and_detection", "layers": "ablation_layers_r18_all448",
           "reduction": "ablation_reduction_r18", "stc": "stc_pixel_auroc", "rd": "rd_mvtec", "cost": "cost",
           "anomalib": "peer_anomalib_2x_readme"}
#: The two numbers of an ablation row (Tables I and II), in the file's order: all-class pixel AUROC and PRO.
ABLATION_METRICS = ("pixel_auroc", "pixel_aupro")
# our metric name -> the file's key
_KEYS = {"pixel_aupro": "pro", "seconds_per_image": "cpu_inference_s_per_image", "fit_seconds": "fit_s_per_class_cpu",
         "model_gb": "memory_gb"}
# each study's note on where its numbers come from (a path; "{name}": the model)
_NOTES = {None: "_about", "layers": "ablation_layers_r18_all448/_columns",
          "reduction": "ablation_reduction_r18/_columns", "rd": "rd_mvtec/{name}/_note",
          "cost": "cost/cpu_inference_s_per_image/_cpu", "anomalib": "peer_anomalib_2x_readme/_note"}


@functools.cache
def paper_results() -> dict:
    """The whole `paper_results.json` (see the module docstring for its provenance)."""
    return json.loads(files(__package__).joinpath("paper_results.json").read_text())


def paper_lookup(source: str):
    """The value at `source` ("a/b/0", a path of `paper_source`) in paper_results.json; None where it is null
    or absent."""
    node = paper_results()
    for part in source.split("/"):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def paper_source(study: str, name: str, metric: str, category: str | None = None) -> str:
    """Where a published number lives in paper_results.json: the path `paper_lookup` reads.

    `study`: one of `STUDIES`; `name`: the paper's model ("PaDiM-R18-Rd100", "SPADE"), or for "layers" and
    "reduction" the ablation's setting ("layer1", "random_100"); `metric`: our metric name ("pixel_aupro";
    for "cost": "seconds_per_image", "fit_seconds" or "model_gb"); `category`: for "mvtec" the category, group
    ("textures", "objects") or "mean", for "cost" with "model_gb" the data ("mvtec" or "stc").

    >>> paper_source("layers", "layer1", "pixel_aupro"), paper_source("cost", "SPADE", "model_gb", "stc")
    ('ablation_layers_r18_all448/layer1/1', 'cost/memory_gb/stc/SPADE')
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {', '.join(STUDIES)}")
    key = _KEYS.get(metric, metric)
    if study == "mvtec":
        parts = (name, category, key)
    elif study in ("layers", "reduction"):
        parts = (name, str(ABLATION_METRICS.index(metric)))
    elif study == "stc":  # pixel AUROC only
        parts = (name,)
    elif study == "cost":
        parts = (key, category, name) if category is not None else (key, name)
    else:  # "rd", "anomalib"
        parts = (name, key)
    return "/".join((STUDIES[study], *parts))


def paper_number(study: str, name: str, metric: str, category: str | None = None) -> float | None:
    """A published number (see `paper_source` for the arguments); None where the paper gives none."""
    return paper_lookup(paper_source(study, name, metric, category))


def paper_value(model: str, category: str, metric: str) -> float | None:
    """A published MVTec AD number: model e.g. "PaDiM-R18-Rd100", category or "textures"/"objects"/"mean",
    metric "image_auroc", "pixel_auroc" or "pixel_aupro". None where the paper gives none."""
    return paper_number("mvtec", model, metric, category)


def paper_entries(study: str, metric: str, category: str | None = None) -> dict[str, float | None]:
    """Every model (or ablation setting) of a study with its published `metric`, in the file's order:
    e.g. paper_entries("cost", "seconds_per_image") -> {"PaDiM-R18-Rd100": 0.23, ...}."""
    parts = paper_source(study, "\0", metric, category).split("/")
    at = parts.index("\0")
    names = paper_lookup("/".join(parts[:at])) or {}
    return {n: paper_lookup("/".join([*parts[:at], n, *parts[at + 1:]])) for n in names if not n.startswith("_")}


def paper_ablation(study: str) -> dict[str, dict[str, float | None]]:
    """Table I (study "layers": which layers, every channel) or II ("reduction": random vs PCA at d = 100, 200)
    of the paper, ResNet18, all-class means: {setting: {"pixel_auroc", "pixel_aupro"}}, None where unpublished."""
    columns = {m: paper_entries(study, m) for m in ABLATION_METRICS}
    return {s: {m: columns[m][s] for m in ABLATION_METRICS} for s in columns[ABLATION_METRICS[0]]}


def paper_note(study: str | None = None, name: str = "PaDiM-WR50-Rd550") -> str:
    """Where numbers come from: the whole file's note (no study), an ablation's columns ("layers",
    "reduction"), a model's Rd-MVTec note ("rd"), the machine of the published times ("cost"), anomalib's
    settings ("anomalib")."""
    return paper_lookup(_NOTES[study].format(name=name))


def paper_model_for(backbone: str) -> str:
    """The paper's row closest to a backbone (its d aside)."""
    return {"resnet18": "PaDiM-R18-Rd100", "wide_resnet50_2": "PaDiM-WR50-Rd550",
            "efficientnet_b5": "PaDiM-EfficientNet-B5"}.get(backbone, "PaDiM-WR50-Rd550")


def category_group(category: str) -> str:
    """"textures", "objects" or "other": MVTec AD's group of a category; an embedded synthetic category
    ("carpet_syn", "bottle_syn") counts as the group of the category it imitates."""
    name = category.removesuffix("_syn")
    return "textures" if name in MVTEC_TEXTURES else "objects" if name in MVTEC_OBJECTS else "other"
