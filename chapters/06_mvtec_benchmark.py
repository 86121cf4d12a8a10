# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,chapters///py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · The MVTec AD benchmark
#
# **You will learn** to run the whole PaDiM pipeline (fit, predict, every metric) over every category
# of a dataset with one call, to read the result in the paper's table format beside the published
# numbers, and to measure what it costs: seconds, images per second and memory.
#
# *Needs:* 04 (anomaly maps) and 05 (the metrics). *Time:* 10 min on the embedded data (under a minute
# with `PADIM_QUICK=1`); about 1-2 min per real MVTec AD category on a CPU.
#
# Chapters 01-05 took PaDiM apart. Here it runs end to end, as in Table 2 and Table 3 of the paper
# (Defard et al., 2020, [arXiv 2011.08785](https://arxiv.org/abs/2011.08785)): one model per category,
# fitted on that category's `train/good` images only, then evaluated on its test set.

# %% tags=["install"] jupyter={"source_hidden": true} cellView="form"
#@title Install the course's package where it is missing (on Colab and Kaggle; elsewhere, only check)
# On Colab and Kaggle, pip installs padim-utils with every package already there held at its version:
# torch, numpy and the kernel stay as they are. Elsewhere, a missing package stops the chapter here.
import importlib, importlib.metadata, importlib.util, os, subprocess, sys, tempfile  # noqa: E401

PACKAGE = os.environ.get(
    "PADIM_PACKAGE", "padim-utils[notebooks] @ git+https://github.com/padim-course/padim-course")
NEEDS = ('padim_utils', 'ipykernel', 'ipywidgets')
absent = [m for m in NEEDS if importlib.util.find_spec(m) is None]
hosted = "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if absent and hosted:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keep:  # what is there stays
        keep.writelines(f"{d.name}=={d.version}\n" for d in importlib.metadata.distributions() if d.name)
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", keep.name, PACKAGE]
    if subprocess.run(pip).returncode:
        raise SystemExit("pip could not install the course beside this runtime's packages (see above)")
    importlib.invalidate_caches()
elif absent:
    raise SystemExit(f"{', '.join(absent)} not installed in this kernel: pip install '{PACKAGE}'")

# %%
import json
from pathlib import Path

from IPython.display import Image, display

from padim_utils.experiments import benchmark as experiment
from padim_utils.course import (check_exercise, compare, course_data, env_device, env_flag, markdown_table, show,
                                show_source)
from padim_utils.files import write_json
from padim_utils.experiments import paper_table
from padim_utils.paper import CITATION, paper_entries, paper_model_for
from padim_utils.plots import plot_category_metrics

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. One call per category
# `experiment.run_benchmark(config, root, category)` is the whole method: it builds the two datasets,
# fits a `Padim` model on `train/good`, predicts every test image and computes the five metrics of
# chapter 05. It returns a flat **record** (a dict): metrics, timings, memory, the machine and the full
# config, the same record that `padim benchmark` writes as JSON.
#
# The categories it loops over are every MVTec AD category found under `$PADIM_DATA/mvtec_ad`
# (all 15 if you downloaded the whole dataset: expect one to two minutes each on a CPU, seconds on a
# GPU), else the two embedded synthetic ones:

# %%
print("categories:", ", ".join(data.categories))
print("config:", data.config.backbone, "d =", data.config.d, "reduction =", data.config.reduction,
      f"images {data.config.image_size} px, crop {data.config.crop}, eps = {data.config.eps}, sigma = {data.config.sigma}")

# %% [markdown]
# Each run also saves two figures (the most and least anomalous test images with their heat maps,
# and the histogram of image scores) under `build/results/figures/` in the repository (`build/` is
# ignored by git); section 4 shows them for the hardest category.

# %%
RESULTS = (Path("..") / "build" / "results").resolve()  # the notebooks run in notebooks/: the repository's build/
records = []
for category in data.categories:
    record = experiment.run_benchmark(data.config, data.root, category, figures=RESULTS / "figures",
                                      progress=False)
    records.append(record)
    print(f"{category}: fitted on {record['n_train']} images, evaluated on {record['n_test']} "
          f"in {record['fit_seconds'] + record['predict_seconds']:.1f} s")
write_json(RESULTS / "benchmark.json", records)
print(f"{len(records)} record(s) -> {RESULTS / 'benchmark.json'}")

# %% [markdown]
# A record is a plain dict; here are its keys (the config is nested, so a record alone is enough to
# re-run the experiment):

# %%
print(json.dumps({k: v for k, v in records[0].items() if k != "config"}, indent=1, default=str)[:900])

# %% [markdown]
# ## 2. The paper's table
# The paper reports, per category, the image-level AUROC (detection), the pixel-level AUROC and the
# PRO score (localisation), grouped into 5 textures and 10 objects with their means.
# `paper_table(records)` lays our records out the same way, each of our numbers beside the
# published one (`ours / paper`), "–" where the paper gives none.
#
# Read the comparison with care:
# - **The embedded categories** (`carpet_syn`, `bottle_syn`) are not MVTec AD: the paper has no
#   numbers for them. As in chapter 10, each counts in the group it imitates (`carpet_syn` with the
#   textures, `bottle_syn` with the objects), so their means sit beside the paper's group means, as a
#   reference only.
# - **The backbone differs.** The paper's best model is Wide-ResNet50-2 with d = 550 (`PaDiM-WR50-Rd550`),
#   whose weights need a download; this course runs offline on EfficientNet-Lite0 (d = 100 at
#   256 px, no crop). On a real MVTec AD category the comparison is therefore *indicative*: the same
#   method with a smaller backbone, expected to be somewhat below the published row.
# - Some published cells are missing ("–"): `paper_results.json` only holds values its authors could
#   verify from a readable copy of the paper (its `_about` entry says where each one comes from).

# %%
PAPER_MODEL = paper_model_for("wide_resnet50_2")  # the paper's best row, for every backbone
show(paper_table(records, model=PAPER_MODEL))
print("Source of the published numbers:", CITATION)

# %% [markdown]
# The same numbers as a figure. Expect every bar well above chance (0.5 for the two AUROCs; 0.15 for
# AU-PRO, what a map of random scores gets, chapter 05) and the pixel AUROC (orange) above the AU-PRO
# (green) in each category: the pixel AUROC counts the many easy normal
# pixels, while AU-PRO weighs every defect region equally, however small, and only up to a 30 %
# false-positive rate (chapter 05). Black ticks mark the
# paper's value where one exists (on real MVTec AD categories only).

# %%
fig = plot_category_metrics(records, paper_model=PAPER_MODEL,
                            title=f"PaDiM {data.config.backbone}, d = {data.config.d}: metrics per category")

# %%
lowest = min(records, key=lambda r: r["pixel_aupro"])
highest = max(records, key=lambda r: r["pixel_aupro"])
for r in records:
    print(f"{r['category']:>12}: pixel AUROC {r['pixel_auroc']:.3f} vs AU-PRO {r['pixel_aupro']:.3f} "
          f"(gap {r['pixel_auroc'] - r['pixel_aupro']:+.3f})")
print(f"lowest AU-PRO: {lowest['category']} ({lowest['pixel_aupro']:.3f}); "
      f"highest: {highest['category']} ({highest['pixel_aupro']:.3f})")
CHANCE = {("image_auroc", "image AUROC"): 0.5, ("pixel_auroc", "pixel AUROC"): 0.5,
          ("pixel_aupro", "AU-PRO"): 0.15}  # what random scores get (chapter 05)
margin, category, metric = min((r[key] - c, r["category"], name) for r in records for (key, name), c in CHANCE.items())
compare("06.above-chance", margin, 0.1, category=category, metric=metric,
        more="Every bar is well above chance: the closest, {category}'s {metric}, is still {a:.3f} above it.",
        less="Not every bar is well above chance: {category}'s {metric} is only {a:+.3f} from it.")
narrowest = min(records, key=lambda r: r["pixel_auroc"] - r["pixel_aupro"])
compare("06.pixel-above-pro", narrowest["pixel_auroc"], narrowest["pixel_aupro"], category=narrowest["category"],
        more="In every category the pixel AUROC is above the AU-PRO (the smallest gap, {category}'s, is {diff:.3f}).",
        less="In {category} the AU-PRO is above the pixel AUROC (by {gap:.3f}): its regions are found evenly, "
             "small ones included, while some large region is missed.")

# %% [markdown]
# ## 3. What it costs
# The record times the fit (backbone pass over the training images + the Gaussians + their inverses)
# and the prediction (backbone pass + Mahalanobis distances + upsampling and blur) separately.
# Both are dominated by the backbone's forward pass, so expect the images per second of the two to
# be of the same order (within a factor of 10). Peak memory is the GPU's peak allocation on CUDA; on the CPU it is the whole
# process's peak resident memory (Python, torch, the datasets), which only ever grows: from the second
# category on it is the peak *so far*, not that category's own.

# %%
rows = [{"category": r["category"], "train images": r["n_train"], "fit s": r["fit_seconds"],
         "fit images/s": r["n_train"] / r["fit_seconds"], "test images": r["n_test"],
         "predict s": r["predict_seconds"], "predict images/s": r["n_test"] / r["predict_seconds"],
         "peak memory (MiB)": round(r["peak_memory_bytes"] / 2**20)} for r in records]
show(markdown_table(rows))
print("measured on:", records[0]["device_name"])
speeds = [r["fit images/s"] / r["predict images/s"] for r in rows]
spread = max(max(speeds), 1 / min(speeds))  # how far apart the two rates are, as a factor
compare("06.same-order", spread, 10.0,
        less="Fit and prediction run at the same order of images per second (within a factor of {a:.1f}): the "
             "backbone's forward pass dominates both.",
        more="Fit and prediction differ by a factor of {a:.1f} in images per second: on this data something "
             "besides the backbone (the Gaussians' inverses, or the maps) dominates one of them.")

# %% [markdown]
# The paper times inference on a laptop CPU (an Intel i7-4710HQ, one image at a time): its seconds per
# image are below, beside ours. Ours is batched, uses a smaller backbone and no crop, and runs on
# whatever machine executes this page, possibly shared with other jobs: read it as an order of
# magnitude for *this* machine, not as a contest (on a GPU expect well under 0.01 s per image).

# %%
cost = paper_entries("cost", "seconds_per_image")  # {model: CPU s per image}
ours = sum(r["predict_seconds"] for r in records) / sum(r["n_test"] for r in records)
show(markdown_table([{"model": k, "CPU s per image": v, "source": CITATION}
                     for k, v in cost.items()]
                    + [{"model": f"ours ({data.config.backbone}, d = {data.config.d}, "
                                 f"{data.config.out_size} px)", "CPU s per image": ours, "source": "this run"}]))

# %% [markdown]
# ## 4. The hardest category, up close
# The category with the lowest AU-PRO is where PaDiM struggles most. Its saved figure shows the most
# and least anomalous test images: image on top, ground truth in the middle, the anomaly map (jet
# colour map, blue = low, red = high, one colour scale shared by the six maps) at the bottom with the
# true defect outlined in white. Expect the hardest failures to be defects whose map stays blue, or
# good images with a red spot.

# %%
print(f"hardest category: {lowest['category']} (AU-PRO {lowest['pixel_aupro']:.3f}, "
      f"image AUROC {lowest['image_auroc']:.3f})")
display(Image(filename=str(RESULTS / "figures" / f"{lowest['category']}_examples.png")))

# %% [markdown]
# The image scores of its test set: the more the two histograms overlap, the lower the image AUROC.
# The dashed line is the threshold with the best F1 (chosen with the test labels, so optimistic:
# chapter 05 picks one from normal images only).

# %%
display(Image(filename=str(RESULTS / "figures" / f"{lowest['category']}_scores.png")))

# %% [markdown]
# ### Look inside
# This is the whole benchmark of one category: two datasets, `fit`, `predict_dataset`, `evaluate`,
# and the record.

# %%
show_source(experiment.run_benchmark)

# %% [markdown]
# ### Exercise 6.1
# From `records` alone, find the category with the **lowest AU-PRO** (`pixel_aupro`) and how far its
# AU-PRO lies below the mean AU-PRO over all the categories. Answer with a tuple
# `(category, gap)`, the gap a positive number (0 when there is a single category).
# *Hint:* a list comprehension and `min(..., key=...)`.

# %%
answer = ...  # your answer: (category, gap)

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# aupros = {r["category"]: r["pixel_aupro"] for r in records}
# worst = min(aupros, key=aupros.get)
# answer = (worst, sum(aupros.values()) / len(aupros) - aupros[worst])
# print(answer)

# %%
check_exercise("6.1", answer, records=records)

# %% [markdown]
# On real MVTec AD the paper's own hardest categories for localisation are objects with small or
# subtle defects (e.g. screw and capsule); try the benchmark on them if you have the data.
#
# ## Summary
# - `experiment.run_benchmark(cfg, root, category)` is PaDiM end to end: fit on `train/good`, predict,
#   evaluate; its record holds metrics, timings, memory and the config.
# - `paper_table(records)` sets our numbers beside the published ones: only real MVTec AD
#   categories have published numbers, and a different backbone makes the comparison indicative.
# - Fit and prediction are usually both dominated by the backbone's forward pass (section 3 measured it
#   here): the per-category cost is then images x (one forward pass) plus a small Gaussian fit.
#
# **Next:** 07 applies PaDiM to video: the ShanghaiTech Campus scenes.
