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
# # 03 · Covariance estimation
#
# **You will learn** to fit one multivariate Gaussian per patch position from a stream of batches (and
# why that makes memory independent of the number of training images), why PaDiM adds $\epsilon I$ to every
# covariance, and what the Gaussians cost in memory as $d$ and the grid grow.
#
# *Needs:* 01 (embeddings), 02 (reduction to $d$ channels). *Time:* 15 min (under a minute with
# `PADIM_QUICK=1`).
#
# For each position $(i, j)$ of the patch grid, the $N$ normal training images give $N$ embeddings
# $x^1_{ij}, \dots, x^N_{ij} \in \mathbb{R}^d$. PaDiM models them as $\mathcal{N}(\mu_{ij}, \Sigma_{ij})$ with
# $$\mu_{ij} = \frac{1}{N}\sum_{k=1}^N x^k_{ij}, \qquad
#   \Sigma_{ij} = \frac{1}{N-1}\sum_{k=1}^N (x^k_{ij}-\mu_{ij})(x^k_{ij}-\mu_{ij})^\top + \epsilon I$$
# (the paper's eq. 1, with $\epsilon = 0.01$). One Gaussian **per position**, because a bottle's neck and
# its label do not look alike; chapter 04 measures how far a test patch lies from its own position's
# Gaussian.

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
from padim_utils.errors import PadimError
from padim_utils.gaussian import GaussianStats
from padim_utils.metrics import image_auroc, pixel_auroc
from padim_utils.paper import CITATION, paper_entries
from padim_utils.plots import plot_lines, plot_spectra
from padim_utils.reduction import Reducer
from padim_utils.scoring import anomaly_maps, image_scores, mahalanobis

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set
BATCH = 4  # training images per streamed batch
EPS_VALUES = [0.01, 1.0, 100.0]  # the paper uses 0.01

# %% [markdown]
# ## 1. The training embeddings
# As in chapter 02: the backbone's layer outputs once (`data.features`, a `FeatureCache`), then the configured reduction to $d$
# channels, the same `Reducer` that `Padim.fit` uses.

# %%
cfg = data.config
train_cache = data.features("train")
reducer = Reducer(cfg.reduction, train_cache.channels, cfg.d, cfg.seed)
emb = reducer(train_cache.layers)  # (N, d, h, w)
N, d, h, w = emb.shape
P = h * w
print(f"N = {N} training images, d = {d} channels, grid {h}x{w} = {P} positions")

# %% [markdown]
# ## 2. Streaming: mean and covariance batch by batch
# The training set need not fit in memory. `GaussianStats` keeps only the count $n$, the means
# $\mu$ $(P, d)$ and the scatter $M_2 = \sum_k (x^k-\mu)(x^k-\mu)^\top$ $(P, d, d)$, in float64. A new batch $b$
# (its own mean $\mu_b$ and scatter $M_{2,b}$ over $n_b$ images) is folded into the running statistics
# $a$ with **Chan et al.'s** pairwise update:
# $$\delta = \mu_b - \mu_a, \quad n = n_a + n_b, \quad \mu = \mu_a + \delta\,\frac{n_b}{n}, \quad
#   M_2 = M_{2,a} + M_{2,b} + \delta\delta^\top \frac{n_a n_b}{n}.$$
# The buffers have the same size after 10 images or 10 000: **memory does not depend on $N$**. Expect the
# streamed result to equal the covariance of all the embeddings at once, to float64 rounding (~1e-12
# relative), and two half fits `merge`d to equal it too.

# %%
stats = GaussianStats(P, d)
for start in range(0, N, BATCH):
    stats.update(emb[start : start + BATCH])  # (B, d, h, w), one batch at a time
x = emb.reshape(N, d, P).permute(2, 0, 1).double()  # (P, N, d): all at once, for comparison
mean_all = x.mean(1)  # (P, d)
cov_all = torch.einsum("pni,pnj->pij", x - mean_all[:, None], x - mean_all[:, None]) / (N - 1)  # (P, d, d)
cov_stream = stats.covariance()  # (P, d, d), eps = 0

half_a, half_b = GaussianStats(P, d), GaussianStats(P, d)
half_a.update(emb[: N // 2])
half_b.update(emb[N // 2 :])
merged = half_a.merge(half_b)
scale = cov_all.abs().max()
print(f"streamed in batches of {BATCH}: max |mean difference| {float((stats.mean - mean_all).abs().max()):.1e}, "
      f"max |covariance difference| / max |covariance| {float((cov_stream - cov_all).abs().max() / scale):.1e}")
print(f"two halves merged: max |covariance difference| / max |covariance| "
      f"{float((merged.covariance() - cov_all).abs().max() / scale):.1e}")
print(f"memory held by the statistics: {(stats.mean.nbytes + stats.m2.nbytes) / 2**20:.1f} MiB "
      f"(= P d 8 + P d^2 8 bytes), for any N")

# %% [markdown]
# ## 3. Why $\epsilon I$
# A sample covariance of $N$ points is a sum of $N$ rank-one terms around their mean, so its rank is at most
# $N - 1$. Chapter 04 needs $\Sigma^{-1}$; when $d > N - 1$, $\Sigma$ is **singular** and has no inverse, and even
# when $d \le N - 1$ its smallest eigenvalues are tiny and noisy, so the inverse blows them up. Adding
# $\epsilon I$ shifts **every eigenvalue up by exactly $\epsilon$** (the eigenvectors stay), so the matrix becomes
# invertible and its **condition number** $\kappa = \lambda_{\max} / \lambda_{\min}$ drops to at most
# $(\lambda_{\max} + \epsilon)/\epsilon$. Here is how $d$ and $N - 1$ compare; the rank and the spectrum of the
# centre position's covariance confirm it:

# %%
centre = (h // 2) * w + w // 2  # flat index of the centre position
cov_c = cov_stream[centre]  # (d, d)
rank = int(torch.linalg.matrix_rank(cov_c))
print(f"d = {d}, N - 1 = {N - 1}: {'d > N - 1, expect a singular covariance' if d > N - 1 else 'd <= N - 1'}; "
      f"measured rank {rank} of {d}")
ev_c = torch.linalg.eigvalsh(cov_c)  # ascending
shift_error = max(float((torch.linalg.eigvalsh(stats.covariance(eps)[centre]) - (ev_c + eps)).abs().max())
                  for eps in EPS_VALUES)
print(f"eigenvalues of Σ + εI minus (eigenvalues of Σ + ε): at most {shift_error:.1e}")
fig = plot_spectra({"ε = 0": ev_c, **{f"ε = {eps:g}": ev_c + eps for eps in EPS_VALUES}},
                   title=f"eigenvalues of Σ + εI at the centre position (d = {d}, N = {N})")

# %% [markdown]
# Without $\epsilon$ the curve falls off a cliff after rank $\min(d, N-1)$: those eigenvalues are zero up to
# rounding (drawn at the plot's floor). With $\epsilon$ the spectrum ends in a floor at $\epsilon$. The table
# gives the condition numbers over a sample of positions (median and worst). Expect $\epsilon = 0$ to be
# infinite or astronomically large, and $\kappa$ to shrink as $\epsilon$ grows.

# %%
sample = torch.arange(0, P, max(1, P // 256))  # up to 256 positions: enough for the statistics, and fast
ev = torch.linalg.eigvalsh(stats.covariance()[sample])  # (n, d) ascending, eps = 0
rows = []
for eps in [0.0] + EPS_VALUES:
    lo, hi = ev[:, 0] + eps, ev[:, -1] + eps
    kappa = torch.where(lo > 1e-12 * hi, hi / lo.clamp_min(1e-300), torch.full_like(hi, float("inf")))
    rows.append({"ε": f"{eps:g}", "smallest eigenvalue (median)": f"{float(lo.median()):.3g}",
                 "largest eigenvalue (median)": f"{float(hi.median()):.3g}",
                 "κ median": f"{float(kappa.median()):.3g}", "κ worst": f"{float(kappa.max()):.3g}"})
show(markdown_table(rows))

# %% [markdown]
# So how large should $\epsilon$ be? Compare it with the largest eigenvalues above: an $\epsilon$ far below them
# only regularises the degenerate directions, one far above them swamps the data and turns the Mahalanobis
# distance into a scaled Euclidean distance. Where does the paper's 0.01 sit for these activations?

# %%
compare("03.eps-small", 0.01, 0.01 * float(ev[:, -1].median()), largest=float(ev[:, -1].median()),
        less="The paper's ε = 0.01 is far below the largest eigenvalues here (median {largest:.3g}): it only "
             "regularises the degenerate directions, the data keeps the rest.",
        more="The paper's ε = 0.01 is not small for these activations: the median largest eigenvalue is only "
             "{largest:.3g}, so ε reaches into directions the data itself describes.")

# %% [markdown]
# ## 4. Several ε on one fit: `finalize(eps, keep=True)`
# `finalize` turns the statistics into what chapter 04 needs, the means and the **precisions**
# $\Sigma_{ij}^{-1}$ via a Cholesky factorisation, position chunk by chunk. By default it consumes the scatter
# buffer to save memory; `keep=True` leaves it intact, so we can finalise the same fit for several $\epsilon$
# and score the test set with each (chapter 04's Mahalanobis distance, max-of-map image score). Expect
# $\epsilon = 0$ to be refused whenever the covariances are singular, and the scores to change with $\epsilon$:

# %%
test_cache = data.features("test")
test_emb = reducer(test_cache.layers)  # (M, d, h, w)
try:
    stats.finalize(0.0, keep=True)
    print("ε = 0: every covariance was invertible")
except PadimError as e:
    print(f"ε = 0: PadimError: {e}")
rows = []
for eps in EPS_VALUES:
    mean, precision = stats.finalize(eps, keep=True)  # (P, d), (P, d, d) float32; stats stay usable
    maps = anomaly_maps(mahalanobis(test_emb, mean, precision), cfg.out_size, cfg.sigma, cfg.interpolation)
    check = float((precision[centre].double() @ stats.covariance(eps)[centre] - torch.eye(d)).abs().max())
    rows.append({"ε": f"{eps:g}", "max error of Σ⁻¹Σ vs I (centre)": f"{check:.1e}",
                 "image AUROC": image_auroc(test_cache.labels, image_scores(maps)),
                 "pixel AUROC": pixel_auroc(test_cache.masks, maps)})
show(markdown_table(rows))

# %% [markdown]
# The first column checks each inverse: small, though it grows with the condition number (the precisions
# are stored in float32). The accuracy columns show how much $\epsilon$ matters on this data: an $\epsilon$ far
# above the largest eigenvalues turns the Mahalanobis distance into a scaled Euclidean one and throws away
# what the covariance learned. Chapter 08 lets you sweep $\epsilon$ interactively.
#
# ## 5. Memory as a function of $d$ and the grid
# The Gaussians cost $P \cdot d^2$ numbers: the float64 scatter buffer while fitting is $P d^2 \cdot 8$ bytes,
# the float32 precisions kept by the model $P d^2 \cdot 4$ bytes (the means, $P d$, are negligible). Expect
# the formula to match our buffer exactly, and memory to grow with the **square** of $d$ and linearly in $P$:

# %%
print(f"our fit: P = {P}, d = {d}: formula P d^2 8 = {P * d * d * 8:,} bytes; "
      f"stats.m2 holds {stats.m2.nbytes:,} bytes")
d_axis = [10, 25, 50, 100, 200, 550, 800]
grids = {"28x28 (ResNet layer1 at 112 px)": 28 * 28, "56x56 (224 px, the paper)": 56 * 56,
         "64x64 (256 px, no crop)": 64 * 64}
fig = plot_lines(d_axis, {name: [p * dd * dd * 8 / 2**30 for dd in d_axis] for name, p in grids.items()},
                 xlabel="d (channels per embedding)", ylabel="float64 scatter buffer (GiB)",
                 title="memory of the per-position Gaussians: P · d² · 8 bytes", logx=True, logy=True)

# %% [markdown]
# The paper's two main models, on 224 px crops (a 56x56 grid, the 56x56 curve above at d = 100 and 550).
# Expect the float32 precisions to account for most of the memory the paper reports (the rest: means,
# network, buffers), and the float64 buffer we fit in to be twice the precisions.

# %%
paper_memory = paper_entries("cost", "model_gb", "mvtec")  # {model: GB} on MVTec AD
P224 = 56 * 56
rows = [{"model": name, "d": dd, "float64 fit buffer (GB)": P224 * dd * dd * 8 / 1e9,
         "float32 precisions (GB)": P224 * dd * dd * 4 / 1e9, "paper's memory (GB)": paper_memory[name]}
        for name, dd in (("PaDiM-R18-Rd100", 100), ("PaDiM-WR50-Rd550", 550))]
show(markdown_table(rows) + f"\n\nPaper numbers: {CITATION}.")

# %% [markdown]
# ### Look inside
# The streaming update: each batch's own mean, then **one** batched matrix product per chunk of positions
# that adds both the batch's scatter and Chan's correction. The correction $\delta\delta^\top n_a n_b / n$ is
# the outer product of a single extra row $\sqrt{n_a n_b / n}\,\delta$, so it is appended to the batch's
# centred rows $R$ and $M_2 \mathrel{+}= R^\top R$ does both at once.

# %%
show_source(GaussianStats.update)

# %% [markdown]
# ### Exercise 3.1
# Compute the covariance matrix of the **centre position** (`centre`, i.e. grid cell `(h // 2, w // 2)`)
# yourself from `emb` $(N, d, h, w)$, with torch or numpy, **without** $\epsilon$: the $N$ embeddings of that
# position are `emb[:, :, h // 2, w // 2]`. Answer with a $(d, d)$ array or tensor; it should equal
# `stats.covariance()[centre]`.

# %%
answer = ...  # your answer: a (d, d) covariance matrix

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# xs = emb[:, :, h // 2, w // 2].double()  # (N, d): one row per training image
# xc = xs - xs.mean(0)  # centred
# answer = xc.T @ xc / (N - 1)  # unbiased: divide by N - 1
# print("equal to GaussianStats:", torch.allclose(answer, stats.covariance()[centre]))

# %%
check_exercise("3.1", answer, emb=emb, position=(h // 2, w // 2))

# %% [markdown]
# ## Summary
# - PaDiM fits $\mathcal{N}(\mu_{ij}, \Sigma_{ij})$ per position; `GaussianStats` streams it batch by batch with
#   Chan's update, so memory is $P(d + d^2)$ float64 numbers whatever $N$ is.
# - With $d > N - 1$ the sample covariance is singular; $\Sigma + \epsilon I$ makes it invertible and
#   bounds its condition number; `finalize(eps, keep=True)` tries several $\epsilon$ on one fit.
# - Memory grows as $P d^2$: about a tenth of a GB of precisions for ResNet18 at $d = 100$, several GB for
#   Wide-ResNet50-2 at $d = 550$: $d$ is the cost knob, hence chapter 02.
#
# **Next:** 04 turns these Gaussians into Mahalanobis anomaly maps.
