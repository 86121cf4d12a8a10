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
# # 08 · Interactive ablations
#
# **You will learn** which of PaDiM's choices matter, by changing them one at a time: which backbone
# layers feed the embedding, how many channels d are kept, random channels vs PCA, the regulariser ε
# and the blur σ. Every change re-fits in seconds because the backbone runs only once, and every
# result sits beside the paper's own ablation numbers.
#
# *Needs:* 02 (reduction), 03 (covariance), 04 (maps), 05 (metrics). *Time:* 15 min, plus as long
# as you like with the controls (under a minute with `PADIM_QUICK=1`).
#
# The paper (Defard et al., 2020, [arXiv 2011.08785](https://arxiv.org/abs/2011.08785)) studies two
# choices on MVTec AD with a ResNet18: which layers to model (its Table I) and how to reduce the
# embedding (its Sec. 5.1 and Fig. 3). We repeat both studies on our data and backbone.

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
from padim_utils.experiments import ablations
from padim_utils.course import (check_exercise, compare, course_data, env_device, env_flag, markdown_table, show,
                                show_source)
from padim_utils.paper import CITATION, paper_ablation, paper_note
from padim_utils.plots import plot_ablation

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. Run the backbone once
# Everything after the backbone (reduction, Gaussians, distances, blur, metrics) is cheap; the
# backbone's forward pass is not. A `FeatureCache` keeps every hooked layer's output for every image
# (`data.features`, chapter 02: computed once for the course and read back from disk), so each ablation
# below re-fits from memory. Changing the **image size or crop** would change these
# features themselves (a new backbone pass, see chapter 01), so the controls leave geometry alone.

# %%
cfg = data.config
train_cache = data.features("train")
test_cache = data.features("test")
print(train_cache)
print(test_cache)

# %% [markdown]
# ## 2. The paper's numbers
# Both ablations of the paper, as all-class means over MVTec AD with a ResNet18 (pixel AUROC, PRO).
# The layer study keeps every channel of the layers used; the reduction study uses all three layers:

# %%
# {setting: {"pixel_auroc", "pixel_aupro"}}; None where not published, which the table shows as "–"
layers_table = paper_ablation("layers")
reduction_table = paper_ablation("reduction")
names = {"pixel_auroc": "pixel AUROC", "pixel_aupro": "PRO"}
show(markdown_table([{"paper setting (R18)": k, **{name: v[m] for m, name in names.items()}}
                     for k, v in (layers_table | reduction_table).items()]))
print("Source:", CITATION, "-", paper_note("reduction"))

# %% [markdown]
# Three lessons from the paper: (1) each layer alone is worse than the three together (modelling
# them *jointly* in one Gaussian beats even summing three separate maps); (2) a random subset of d
# channels is about as good as keeping all of them; (3) PCA at the same d is *worse* than random,
# although it keeps the directions of largest variance (those are the variations of normal images,
# not the ones that reveal defects). Sections 3 and 4 test (1) and (3); the controls of section 5
# test (2) (reduction "none").
#
# Our backbone, EfficientNet-Lite0, hooks three stages too (`blocks.1`, `blocks.2`, `blocks.4`, strides
# 4, 8 and 16 like ResNet's layers 1-3); the i-th hooked layer plays the role of the paper's layer i.

# %% [markdown]
# ## 3. Which layers? (the paper's Table I)
# `ablations.sweep` runs `ablations.run_ablation` for each setting: each hooked layer alone, then all
# of them. The paper keeps every channel here; we keep at most d (the config's) random channels per setting
# (a layer with fewer keeps all of its own), because inverting a covariance costs d³ per patch position:
# all 176 channels would make the joint model about (176 / 100)³ ≈ 5 times slower to fit. Try it with
# the controls below.
#
# Which single layer is best depends on the defects: a fine layer (small stride) sees small defects
# sharply, a deep one (its grid is 4 times smaller per side) brings more context but blurrier maps;
# in the paper layer 1 alone is the weakest. Whether the joint model beats the best single layer depends
# on how many training images there are per dimension: with fewer images than channels (as in quick
# mode) the covariance rests mostly on ε. The paper, with a few hundred images per class, finds the
# joint model best. The lines under the table say what happened here.

# %%
layer_rows = ablations.sweep(train_cache, test_cache, cfg, ablations.layer_settings(train_cache, d=cfg.d))
show(markdown_table(layer_rows, ablations.SWEEP_COLUMNS))  # {row key: column header}

# %%
best_single = max(layer_rows[:-1], key=lambda r: r["pixel_aupro"])  # rows: each layer alone, then all
joint = layer_rows[-1]
ranking = sorted(layer_rows[:-1], key=lambda r: -r["pixel_aupro"])
print("single layers, best AU-PRO first:", ", ".join(f"{r['layers']} {r['pixel_aupro']:.3f}" for r in ranking))
compare("08.joint-vs-single", joint["pixel_aupro"], best_single["pixel_aupro"], tol=0.005,
        best=best_single["layers"], n=len(train_cache), d=joint["d"],
        more="All layers jointly ({a:.3f} AU-PRO) beat the best single layer, {best} ({b:.3f}), as in the paper.",
        less="The best single layer, {best} ({b:.3f} AU-PRO), beats all layers jointly ({a:.3f}) here, unlike the "
             "paper, which keeps every channel: at the same d = {d} the joint model keeps a few random channels of "
             "each layer, a single layer most of its own, and with {n} training images every covariance rests "
             "mostly on ε.",
        same="All layers jointly ({a:.3f} AU-PRO) tie with the best single layer, {best} ({b:.3f}).")
fig = plot_ablation(layer_rows, title="Which layers? Ours (bars) vs the paper (black ticks)")

# %% [markdown]
# The black ticks are the paper's *ResNet18 on MVTec AD* numbers: compare the direction of an effect
# (does adding layers help?), not the heights, which belong to another backbone and other images.

# %% [markdown]
# ## 4. Random channels or PCA? (the paper's Sec. 5.1)
# All layers, d channels kept by a seeded random choice (the joint row above) or by PCA. The paper finds
# random ≥ PCA at equal d; on our small embedded data the gap can go either way, so read the run's own
# numbers:

# %%
red_rows = [joint] + ablations.sweep(train_cache, test_cache, cfg, [{"reduction": "pca", "d": cfg.d}])
show(markdown_table(red_rows, ablations.SWEEP_COLUMNS))
fig = plot_ablation(red_rows, title=f"Reduction to d = {cfg.d}: ours vs the paper (black ticks)")

# %%
by = {r["reduction"]: r for r in red_rows}
compare("08.random-vs-pca", by["random"]["pixel_aupro"], by["pca"]["pixel_aupro"], tol=0.005, d=cfg.d,
        paper=reduction_table["random_100"]["pixel_aupro"] - reduction_table["pca_100"]["pixel_aupro"],
        more="Random channels beat PCA by {gap:.3f} AU-PRO at d = {d}, as in the paper ({paper:+.3f} for R18 at "
             "d = 100).",
        less="PCA beats random channels by {gap:.3f} AU-PRO at d = {d}, unlike the paper (random {paper:+.3f} "
             "for R18 at d = 100); chapter 02 lists how this setting differs (backbone, data, noise).",
        same="Random channels and PCA are within {gap:.3f} AU-PRO at d = {d}; the paper found random "
             "{paper:+.3f} ahead (R18, d = 100).")

# %% [markdown]
# ## 5. Your turn: the controls
# The widget below wires the same function, `ablations.run_ablation`, to controls: pick layers
# (ctrl/cmd-click for several), d (capped at the channels of the chosen layers), the reduction, ε (log
# scale; the paper uses 0.01) and σ (the blur of chapter 04; 0 = none), then press **re-fit**. The
# result appears under the button with the paper's closest row.
#
# On this rendered page the controls cannot appear (a static page has no Python behind it), so a note
# stands in their place: open the notebook in JupyterLab (`make lab`) to use them. The cell after the
# widget runs one setting the same way, so you can see what a click produces.

# %%
widget = ablations.AblationWidget(train_cache, test_cache, cfg)
widget.box

# %%
widget.controls["layers"].value = train_cache.layer_names[:2]  # the two finest layers
widget.controls["sigma"].value = 0.0  # no blur
result = widget.run()  # exactly what the button does
show(widget.last_markdown)

# %% [markdown]
# ### Look inside
# The callback is a plain, tested function: pick the layers from the cache, cap d, build the config,
# then `evaluate_cached` (fit + predict + metrics on cached features).

# %%
show_source(ablations.run_ablation)

# %% [markdown]
# ### Exercise 8.1
# How much does the Gaussian blur help localisation here? With `ablations.run_ablation`, compute the
# AU-PRO with σ = 4 (the paper's) minus the AU-PRO with σ = 0 (no blur), everything else as `cfg`.
# Answer with that number. *Hint:* the function returns a dict with `"pixel_aupro"`.

# %%
answer = ...  # your answer: AU-PRO(sigma=4) - AU-PRO(sigma=0)

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# with_blur = ablations.run_ablation(train_cache, test_cache, cfg, sigma=4)
# without_blur = ablations.run_ablation(train_cache, test_cache, cfg, sigma=0)
# answer = with_blur["pixel_aupro"] - without_blur["pixel_aupro"]
# print(f"AU-PRO with blur {with_blur['pixel_aupro']:.3f}, without {without_blur['pixel_aupro']:.3f}: {answer:+.3f}")

# %%
check_exercise("8.1", answer, train_cache=train_cache, test_cache=test_cache, config=cfg)

# %% [markdown]
# ## Summary
# - With the backbone's outputs cached, every other choice of PaDiM re-fits in seconds:
#   `ablations.run_ablation(train_cache, test_cache, cfg, layers=..., d=..., reduction=..., eps=..., sigma=...)`.
# - The paper's Table I: modelling several layers jointly beats any one layer; its Sec. 5.1: a random
#   subset of d channels is as good as all of them and better than PCA at the same d.
# - Compare our runs with the paper's by the direction of an effect: the numbers belong to another
#   backbone and other images.
#
# **Next:** 09 goes beyond the benchmark: your own images, saved models, the command line, and where
# PaDiM fails.
