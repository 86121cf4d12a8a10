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
# # 02 · Dimension reduction
#
# **You will learn** why PaDiM keeps only $d$ of the $C$ embedding channels, the two ways to choose them
# (a **random** subset, as in the paper, or **PCA**), the paper's counter-intuitive finding that random
# channels do as well as PCA or better, and how to test that claim yourself in seconds from cached
# features.
#
# *Needs:* 01 (embeddings). *Time:* 15 min (under a minute with `PADIM_QUICK=1`).
#
# Chapter 03 fits one $d \times d$ covariance matrix per patch position and inverts it. Memory grows like
# $d^2$ and the inversion like $d^3$, so $d$ is the main cost knob. With ResNet18 the paper goes from
# $C = 448$ to $d = 100$, with Wide-ResNet50-2 from $C = 1792$ to $d = 550$.

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
import numpy as np
import torch

from padim_utils.course import (check_exercise, compare, course_data, env_device, env_flag, markdown_table, show,
                                show_source)
from padim_utils.experiments import sweep
from padim_utils.paper import CITATION, paper_ablation
from padim_utils.plots import plot_channel_layout, plot_lines
from padim_utils.reduction import Reducer, random_channels

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set
D_VALUES = [8, 16, 32, 64]  # the d's of the sweep (at most C)

# %% [markdown]
# ## 1. Features once, fits many times
# The backbone is the slow part; everything after it is cheap. `FeatureCache.compute(dataset, cfg)` runs
# the backbone once over a dataset and keeps every hooked layer's output, so each choice of $d$ and of the
# reduction below re-fits in about a second without touching the network again. `data.features("train")`
# calls it once per split for the whole course and keeps the result on disk (`$PADIM_DATA/features/`):
# chapters 03, 04, 05 and 08 read it back instead of running the backbone again.

# %%
cfg = data.config
train_cache = data.features("train")
test_cache = data.features("test")
print(train_cache)
print(test_cache)
C = sum(train_cache.channels)

# %% [markdown]
# ## 2. Random channels
# The paper draws $d$ channel indices out of $C$ once, uniformly without replacement, and keeps them for
# training and testing: `random_channels(C, d, seed)`. A channel is either kept or dropped, so expect each
# layer to contribute roughly in proportion to its number of channels: $d \cdot C_k / C$ on average.

# %%
index = random_channels(C, cfg.d, cfg.seed)  # (d,) sorted channel indices
bounds = np.cumsum([0] + train_cache.channels)
rows = [{"layer": name, "channels C_k": c, "picked": int(((index >= lo) & (index < hi)).sum()),
         "expected d C_k / C": f"{cfg.d * c / C:.1f}"}
        for name, c, lo, hi in zip(train_cache.layer_names, train_cache.channels, bounds[:-1], bounds[1:])]
show(markdown_table(rows))
fig = plot_channel_layout(train_cache.channels, train_cache.layer_names, picked=index,
                          title=f"random_channels: {cfg.d} of the {C} channels (seed {cfg.seed})")

# %% [markdown]
# ## 3. PCA
# PCA instead projects every embedding on the $d$ directions of largest variance of the **training**
# embeddings: $x \mapsto W^\top x$ with $W \in \mathbb{R}^{C \times d}$ the leading eigenvectors of their
# $C \times C$ covariance. It needs an extra pass over the training data and keeps, by construction, as
# much variance as any $d$-dimensional projection can. Expect it to keep a much larger share of the total
# variance than $d$ random channels do:

# %%
emb = train_cache.embeddings()  # (N, C, h, w): every training patch
X = emb.permute(0, 2, 3, 1).reshape(-1, C).double()  # (N h w, C)
pca = Reducer("pca", train_cache.channels, cfg.d)
pca.fit_pca([emb])  # the pipeline's PCA fit
total = X.var(0).sum()
kept_pca = (X @ pca.projection.double()).var(0).sum() / total
kept_random = X[:, index].var(0).sum() / total
compare("02.pca-keeps-variance", kept_pca, kept_random, d=cfg.d,
        more="With d = {d}, PCA keeps {a:.1%} of the total variance, the random channels {b:.1%}.",
        less="With d = {d}, the random channels keep {b:.1%} of the total variance, more than PCA's {a:.1%}: "
             "that cannot be (no projection keeps more than PCA's), so check the fit.")

# %% [markdown]
# So PCA should win? The paper found the opposite. Its ablation (ResNet18, all MVTec AD classes, pixel
# AUROC and PRO; Table II of the paper):

# %%
ablation = paper_ablation("reduction")  # {setting: {"pixel_auroc", "pixel_aupro"}}, None where not published
names = {"none_448": "all 448 channels", "random_100": "random, d = 100", "pca_100": "PCA, d = 100",
         "random_200": "random, d = 200", "pca_200": "PCA, d = 200"}
show(markdown_table([{"reduction": label, "pixel AUROC": ablation[key]["pixel_auroc"],
                      "PRO": ablation[key]["pixel_aupro"]} for key, label in names.items()],
                    missing="not reported")
     + f"\n\nSource: {CITATION}, Table II.")

# %% [markdown]
# The paper's explanation: PCA keeps the directions along which **normal** patches vary most, but an
# anomaly need not stand out along those directions; the low-variance directions it drops are exactly
# where a small deviation is most surprising to a Gaussian. A random subset keeps a bit of everything.
#
# ## 4. Measured here: accuracy against $d$
# Now the same comparison on our data, for $d$ in `D_VALUES`, with `sweep`: each variant is fitted and
# evaluated by the pipeline's own `Padim.fit` / `predict_dataset` on the cached features. The metrics are
# chapter 05's: pixel AUROC and AU-PRO (localisation), image AUROC (detection). If the paper's result
# carries over, expect the random curve on or above PCA's. Either way, expect both to rise with $d$, each
# doubling adding less than the one before: somewhere the curves flatten, and where that happens depends
# on the data. (The sweep stops at $d = 64$ to stay fast: the fit's cost grows like $d^3$.)

# %%
d_values = [d for d in D_VALUES if d <= C]
records = sweep(train_cache, test_cache, cfg, [{"reduction": r, "d": d} for r in ("random", "pca") for d in d_values])
by = {(r["reduction"], r["d"]): r for r in records}
show(markdown_table([{"d": d, **{f"{name} {red}": by[(red, d)][key] for red in ("random", "pca")
                                 for key, name in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AU-PRO"),
                                                   ("image_auroc", "image AUROC"))}}
                     for d in d_values]))
series = {f"{red}: {name}": [by[(red, d)][key] for d in d_values]
          for key, name in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AU-PRO")) for red in ("random", "pca")}
fig = plot_lines(d_values, series, xlabel="d (channels kept)", ylabel="score (1 = perfect)",
                 title=f"{data.category}: random channels vs PCA", logx=True)

# %% [markdown]
# What did this run show? The cell below counts, metric by metric, at how many of the $d$ values random
# channels scored at least as well as PCA, and the scores at the largest $d$; then it says which came out
# ahead on average, and whether the curves have flattened by the largest $d$ (the last doubling of $d$
# adding under 0.01 to every curve).
# It also prints the mean fit times: PCA adds a pass over the training features and a $C \times C$
# eigendecomposition, which on a small dataset is lost in the noise of the timings.

# %%
for key, name in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AU-PRO"), ("image_auroc", "image AUROC")):
    wins = sum(by[("random", d)][key] >= by[("pca", d)][key] for d in d_values)
    gap = np.mean([by[("random", d)][key] - by[("pca", d)][key] for d in d_values])
    print(f"{name:>12}: random >= PCA at {wins} of {len(d_values)} values of d "
          f"(mean difference random - PCA {gap:+.3f}); at d = {d_values[-1]}: random {by[('random', d_values[-1])][key]:.3f}, "
          f"PCA {by[('pca', d_values[-1])][key]:.3f}")
fit_random = np.mean([by[("random", d)]["fit_seconds"] for d in d_values])
fit_pca = np.mean([by[("pca", d)]["fit_seconds"] for d in d_values])
print(f"mean fit time: random {fit_random:.2f} s, PCA {fit_pca:.2f} s")
mean_aupro = {red: np.mean([by[(red, d)]["pixel_aupro"] for d in d_values]) for red in ("random", "pca")}
compare("02.random-vs-pca", mean_aupro["random"], mean_aupro["pca"], tol=0.005,
        more="On average over the values of d, random channels scored {gap:.3f} AU-PRO above PCA, "
             "as in the paper.",
        less="On average over the values of d, PCA scored {gap:.3f} AU-PRO above random channels: the "
             "opposite of the paper's finding (see below why this setting differs).",
        same="On average over the values of d, random channels and PCA are within {gap:.3f} AU-PRO of each "
             "other: a tie at this precision, as the paper's 'as good or better' allows.")
gains = {f"{red} {name}": by[(red, d_values[-1])][key] - by[(red, d_values[-2])][key]
         for red in ("random", "pca") for key, name in (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AU-PRO"))}
curve = max(gains, key=gains.get)  # the curve that still climbs most over the last doubling of d
compare("02.flatten", gains[curve], 0.01, curve=curve, lo=d_values[-2], hi=d_values[-1],
        more="The curves have not flattened yet: from d = {lo} to {hi} the {curve} still gains {a:+.3f}. On "
             "this data more channels would still pay, at d² memory and d³ time.",
        less="The curves flatten: from d = {lo} to {hi} no curve gains more than {a:+.3f}, so more channels "
             "would cost memory (d²) and time (d³) for little accuracy.")

# %% [markdown]
# Read these numbers honestly. Where they agree with the paper, random channels are the cheaper and
# equally good choice. Where PCA wins here, especially at very small $d$, remember how this setting
# differs from the paper's:
#
# - **the backbone**: Lite0's embedding has far fewer channels than ResNet18's 448, and most of them come
#   from the deepest layer; at small $d$ a random draw can miss a whole layer's information, which PCA
#   never does;
# - **the data**: the embedded synthetic set has few training images (8 in quick mode) and clean,
#   simple defects that change the dominant directions themselves, so high-variance directions are
#   informative here; on real MVTec AD, with 200+ training images and subtle defects, the paper's
#   averages over 15 classes are the better guide;
# - **noise**: with a few dozen test images, differences in the third decimal are within noise.
#
# Wherever the curves flatten, on this data or on yours, $d$ can stop there: beyond it more channels cost
# memory and time ($d^2$, $d^3$) for little accuracy, which is the point of the reduction. The paper keeps
# $d = 100$ of ResNet18's 448 channels.
#
# ### Look inside
# The random reduction never builds the full embedding: it picks each layer's channels **before**
# upsampling (exact, because nearest upsampling copies channel by channel), which saves memory on big
# backbones.

# %%
show_source(Reducer.__call__)

# %% [markdown]
# ### Exercise 2.1
# What **fraction of the total variance** of the training patch embeddings do the top-$d$ PCA directions
# explain, for $d$ = `cfg.d`? Use `X` from section 3 (one row per training patch, one column per channel):
# compute the covariance matrix of the columns, its eigenvalues, and the share of the $d$ largest in their
# sum. Answer with a float in $[0, 1]$. *Careful:* `torch.linalg.eigvalsh` returns eigenvalues in
# **ascending** order.

# %%
answer = ...  # your answer: a float, the explained-variance fraction

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# cov = torch.cov(X.T)  # (C, C): rows of X.T are the variables
# eigenvalues = torch.linalg.eigvalsh(cov).flip(0)  # largest first
# answer = float(eigenvalues[: cfg.d].sum() / eigenvalues.sum())
# print(f"top {cfg.d} of {C} directions explain {answer:.1%} of the variance")

# %%
check_exercise("2.1", answer, X=X, d=cfg.d)

# %% [markdown]
# It matches the share PCA kept in section 3: the eigenvalues *are* the variances along the principal
# directions. A large share of the variance is not the same as a large share of the anomalies.
#
# ## Summary
# - $d$ sets PaDiM's cost: $d^2$ memory and $d^3$ inversion per position; the paper keeps 100 of 448 (R18).
# - A seeded random channel subset needs no fitting; PCA keeps the most variance but needs an extra pass.
# - The paper finds random as good as or better than PCA at equal $d$; measure it on your own data with
#   `FeatureCache` + `sweep`, and read small differences as noise.
#
# **Next:** 03 fits one Gaussian per patch position on these $d$-dimensional embeddings.
