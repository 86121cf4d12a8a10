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
# # 04 · Mahalanobis anomaly maps
#
# **You will learn** how PaDiM turns the per-position Gaussians of chapter 03 into a score for every patch
# (the Mahalanobis distance), then into a pixel-level anomaly map (bilinear upsampling and a Gaussian blur
# of σ = 4 pixels) and into one score per image (the map's maximum); and what two of these choices buy,
# measured by switching them off: the blur, and one Gaussian *per position*.
#
# *Needs:* 01–03 (embeddings, reduction, Gaussians). *Time:* 15 min (under a minute with `PADIM_QUICK=1`).

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
from padim_utils.gaussian import shared_gaussian
from padim_utils.metrics import evaluate
from padim_utils.model import Padim
from padim_utils.plots import pick_examples, plot_maps, plot_overlays, plot_score_histogram
from padim_utils.scoring import anomaly_maps, image_scores, mahalanobis

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. Fit once, then look at every step
# We take the backbone's layer outputs for the training and the test images (a `FeatureCache`, chapter 02:
# `data.features` reads them back from disk where an earlier chapter computed them), fit the per-position Gaussians on the training images (chapter 03), and reduce the test
# layer outputs to the same d channels. Everything after that is this chapter: no backbone pass again.

# %%
cfg = data.config
train_cache = data.features("train")
test_cache = data.features("test")
model = Padim(cfg).fit(train_cache, progress=False)
test_emb = model.reducer([f.to(model.device) for f in test_cache.layers])  # (N, d, h, w)
labels, masks = test_cache.labels, test_cache.masks  # (N,), (N, S, S)
N, d, h, w = test_emb.shape
S = cfg.out_size
print(f"{N} test images, embeddings of d = {d} channels on a {h}x{w} patch grid; images are {S}x{S} px, "
      f"so one patch position covers {S // h}x{S // w} px")
print(f"Gaussians: mean {tuple(model.mean.shape)}, precision {tuple(model.precision.shape)} "
      f"(one per position, fitted on {model.n_train} normal images)")

# %% [markdown]
# ## 2. The distance of each patch to its own Gaussian
# Position $(i, j)$ has its own normal model $\mathcal{N}(\mu_{ij}, \Sigma_{ij})$. The anomaly score of
# the test patch embedding $x_{ij}$ is its Mahalanobis distance to it (paper, eq. 2):
# $$M(x_{ij}) = \sqrt{(x_{ij}-\mu_{ij})^\top\, \Sigma_{ij}^{-1}\, (x_{ij}-\mu_{ij})} .$$
# It is the Euclidean distance after whitening: a step along a direction in which normal patches vary a
# lot counts little, the same step along a direction in which they barely vary counts a lot. The model
# stores $\Sigma_{ij}^{-1}$ (the *precision*), so scoring is one batched matrix product per chunk of
# positions.
#
# What to expect: if a normal test patch were drawn from exactly the fitted Gaussian, $M^2$ would follow a
# $\chi^2$ law with $d$ degrees of freedom, so $M \approx \sqrt{d}$. The Gaussians are *estimated* from few
# images, and a new normal image was not among them, so expect the good test patches to lie farther than
# $\sqrt{d}$, and the patches of defective images farther still.

# %%
dist = mahalanobis(test_emb, model.mean, model.precision)  # (N, h, w), paper eq. 2
good, bad = labels == 0, labels == 1
print(f"distance map per image: {tuple(dist.shape[1:])};  sqrt(d) = {d ** 0.5:.1f}")
print(f"median patch distance, good test images:      {dist[good].median():.1f}")
print(f"median patch distance, defective test images: {dist[bad].median():.1f}")
print(f"largest patch distance, good test images:      {dist[good].amax():.1f}")
print(f"largest patch distance, defective test images: {dist[bad].amax():.1f}")
compare("04.beyond-sqrt-d", float(dist[good].median()), d ** 0.5, d=d,
        more="Good test patches lie at a median {a:.1f}, beyond sqrt(d) = {b:.1f}, as expected for Gaussians "
             "estimated from few images.",
        less="Good test patches lie at a median {a:.1f}, within sqrt(d) = {b:.1f}: the Gaussians describe new "
             "normal images as well as the ones they were fitted on.")

# %% [markdown]
# How far above $\sqrt{d}$ depends on how well the Gaussians are estimated: with $N$ training images the
# sample covariance has rank at most $N-1$, and in the other directions only $\epsilon I$ is left, whose
# inverse $1/\epsilon$ is huge. The fewer images per channel, the larger the distances of new normal patches.
#
# Most patches of a defective image are normal, so expect the medians of good and defective images to be
# close, and the *largest* distances, where the defects are, to differ more:

# %%
medians, largest = [float(dist[s].median()) for s in (good, bad)], [float(dist[s].amax()) for s in (good, bad)]
compare("04.max-differs-more", largest[1] / largest[0] - 1, medians[1] / medians[0] - 1,
        more="The largest distance of the defective images is {a:.0%} above the good images', their median only "
             "{b:.0%}: what sets a defective image apart is its most distant patch. That is why the image "
             "score below is a maximum.",
        less="Here the medians differ as much as the largest distances ({b:.0%} against {a:.0%}): the defects "
             "change most of their images' patches, not only a few.")

# %% [markdown]
# ## 3. From the patch grid to pixels: upsample, then blur
# The grid is coarser than the image, so `anomaly_maps` first resizes the $h \times w$ distances to
# $S \times S$ pixels with the config's `interpolation`: **bicubic** in the paper, **bilinear** in anomalib
# and in this course's preset (the same interpolation as the images were resized with), then smooths them
# with a Gaussian kernel of $\sigma = 4$ pixels (the paper's value), $G_\sigma(u) \propto e^{-u^2 / 2\sigma^2}$,
# applied along rows then columns (it is separable), with mirrored borders:
# $$A = G_\sigma * \operatorname{resize}_{S \times S}(M) .$$
# (Bicubic can dip below 0 next to a sharp peak; distances are never negative, so the map is clamped at 0.)
# Expect the blocky grid (left) to become a smooth map whose hot spot covers the defect; the blur lowers
# sharp, isolated peaks more than broad ones.

# %%
k = int(torch.argmax(torch.where(bad, image_scores(dist), -1.0)))  # the defective image with the highest patch
blocks = dist[k].repeat_interleave(S // h, 0).repeat_interleave(S // w, 1)  # each patch drawn as a block
test = data.test()
fig = plot_maps(test[k]["image"],
                {f"patch distances ({h}x{w})": blocks,
                 f"{cfg.interpolation} upsampling": anomaly_maps(dist[k:k + 1], S, 0, cfg.interpolation)[0],
                 "+ blur sigma = 4 px": anomaly_maps(dist[k:k + 1], S, 4.0, cfg.interpolation)[0]},
                mask=masks[k], title=f"test image {k} ({test_cache.defect_types[k]}): from patch grid to anomaly map")

# %% [markdown]
# ## 4. One score per image: the maximum of the map
# $s(\text{image}) = \max_{u,v} A(u, v)$. One very anomalous spot is enough to make the image anomalous,
# however small. Expect the defective images' scores mostly to the right of the good ones'; where the two
# overlap, the detector will make mistakes whatever threshold we pick (chapter 05 measures this).

# %%
maps = anomaly_maps(dist, S, cfg.sigma, cfg.interpolation)  # (N, S, S), the maps Padim.predict returns
scores = image_scores(maps)  # (N,)
fig = plot_score_histogram(scores, labels, title=f"{data.category}: image scores of the test set")

# %%
compare("04.scores-right", float(scores[bad].median()), float(scores[good].median()),
        more="The median defective image scores {a:.1f}, the median good one {b:.1f}: the defective histogram "
             "lies to the right.",
        less="The median defective image scores {a:.1f}, not above the median good one ({b:.1f}): on this "
             "data the image score barely separates them.")

# %% [markdown]
# ## 5. Good and defective images side by side
# The most and least anomalous defective images, then the most and least anomalous good ones, all heat
# maps on **one** colour scale so that red means the same score everywhere. Expect the most anomalous
# defects to light up exactly inside the white outline, and the most anomalous good image to show where
# the model's idea of "normal" is weakest (often edges and borders, which vary most between images).

# %%
idx = pick_examples(scores, labels, n=6)
fig = plot_overlays([test[i]["image"] for i in idx], [masks[i] for i in idx], [maps[i] for i in idx],
                    scores=[scores[i] for i in idx], labels=[labels[i] for i in idx],
                    titles=[f"#{i} {test_cache.defect_types[i]}" for i in idx],
                    title=f"{data.category}: most and least anomalous defects, then goods (one colour scale)",
                    label="anomaly score")

# %% [markdown]
# ## 6. What the blur and the per-position Gaussians buy
# Two variants, scored with the same metrics (chapter 05 explains them: image AUROC for detection; pixel
# AUROC and AU-PRO for localisation):
#
# - **No blur** ($\sigma = 0$): the upsampled distances as they are. The blur averages each pixel with
#   its neighbours, which removes single noisy patches but also spreads a defect over its surroundings.
#   σ is in *pixels*: at 256 px (the paper's scale) 4 px is a small smoothing; in quick mode (64 px images)
#   the same 4 px is four times wider relative to the image and can blur small defects away. So expect the
#   blur to change little at 256 px, and possibly to cost localisation at 64 px.
# - **One Gaussian shared by all positions**: fit $\mathcal{N}(\mu, \Sigma)$ on every patch of every
#   training image, as if position did not matter. On an object such as a bottle, the centre, the rim
#   and the background look very different; a single Gaussian must call all of them normal, so it is
#   wider, and a defect that would be odd *at its position* can look normal somewhere else. Expect a lower
#   pixel AUROC. How much lower depends on the data: the shared Gaussian is estimated from $h \cdot w$ times
#   more samples, so on a well-centred object with many training images (the real MVTec AD bottle) it can
#   come close, while with few training images and coarse patches (quick mode) it falls far behind.
#
# Both variants reuse what we already have: the same distances with another σ, or the same embeddings with
# another Gaussian (`shared_gaussian` fits it with `GaussianStats`, all positions pooled into one).

# %%
train_emb = model.reducer([f.to(model.device) for f in train_cache.layers])  # (N_train, d, h, w)
shared_mean, shared_precision = shared_gaussian(train_emb, eps=cfg.eps)  # (P, d), (P, d, d): one Gaussian
dist_shared = mahalanobis(test_emb, shared_mean, shared_precision)  # (N, h, w)
variants = {"PaDiM (per position, sigma = 4)": maps,
            "no blur (sigma = 0)": anomaly_maps(dist, S, 0, cfg.interpolation),
            "one shared Gaussian (sigma = 4)": anomaly_maps(dist_shared, S, cfg.sigma, cfg.interpolation)}
results = {name: evaluate(labels, image_scores(m), masks, m) for name, m in variants.items()}
show(markdown_table([{"variant": name, "image AUROC": r["image_auroc"], "pixel AUROC": r["pixel_auroc"],
                      "AU-PRO (FPR 0.3)": r["pixel_aupro"]} for name, r in results.items()]))

# %%
ref, noblur, shared = results.values()
compare("04.shared-lower", shared["pixel_auroc"], ref["pixel_auroc"], tol=0.002, size=S,
        less="One shared Gaussian loses {gap:.3f} pixel AUROC against PaDiM's per-position Gaussians at {size} px: "
             "where a patch is matters on this data.",
        more="One shared Gaussian scores {gap:.3f} pixel AUROC *above* the per-position Gaussians at {size} px: "
             "on this data position matters less than the extra samples a shared Gaussian is fitted on.",
        same="One shared Gaussian is within {gap:.3f} pixel AUROC of the per-position Gaussians at {size} px: "
             "on this data position barely matters.")
compare("04.blur", ref["pixel_aupro"], noblur["pixel_aupro"], tol=0.005, size=S,
        more="The blur (σ = 4 px) adds {gap:.3f} AU-PRO at {size} px: it removes more isolated noisy patches "
             "than it spreads the defects.",
        less="The blur (σ = 4 px) costs {gap:.3f} AU-PRO at {size} px: at this image size it spreads the defects "
             "over their surroundings more than it removes noise.",
        same="The blur (σ = 4 px) changes AU-PRO by {diff:+.3f} at {size} px: next to nothing at this size.")

# %% [markdown]
# The same defective image under the three variants (each map with its own colour bar: compare the shapes,
# not the colours). Expect the unblurred map to be noisier, and the shared Gaussian to light up normal
# structures (edges, background) as brightly as the defect.

# %%
fig = plot_maps(test[k]["image"], {"PaDiM (sigma 4)": maps[k], "no blur": variants["no blur (sigma = 0)"][k],
                                   "one shared Gaussian": variants["one shared Gaussian (sigma = 4)"][k]},
                mask=masks[k], title=f"test image {k}: three ways to score it")

# %% [markdown]
# PaDiM's case for per-position Gaussians is that normal appearance depends on *where* in the image a patch
# is; the numbers above measure how much that holds for this data. On a texture (`carpet_syn`, or the MVTec
# AD textures) every position looks alike, so there a shared Gaussian loses little by construction.
#
# ### Look inside
# The distance (paper eq. 2) as the pipeline computes it, chunk of positions by chunk:

# %%
show_source(mahalanobis)

# %% [markdown]
# and the step from the patch grid to the pixel map:

# %%
show_source(anomaly_maps)

# %% [markdown]
# ### Exercise 4.1
# Compute **by hand, with numpy**, the Mahalanobis distance of one patch: the patch with the largest
# distance in test image `k` (the image of section 3), at grid position `(r, c)` below. Take its embedding
# from `test_emb`, and the mean and precision of its position from `model.mean` and `model.precision`
# (positions are stored row by row: index `r * w + c`). Answer with one float.

# %%
r, c = np.unravel_index(int(dist[k].argmax()), (h, w))
r, c = int(r), int(c)
print(f"image {k}, position (r, c) = ({r}, {c})")
answer = ...  # your answer: a float

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# x = test_emb[k, :, r, c].double().cpu().numpy()  # (d,)
# mu = model.mean[r * w + c].double().cpu().numpy()  # (d,)
# precision = model.precision[r * w + c].double().cpu().numpy()  # (d, d) = inverse covariance
# delta = x - mu
# answer = float(np.sqrt(delta @ precision @ delta))
# print(f"by hand {answer:.4f}, mahalanobis() {dist[k, r, c]:.4f}")

# %%
check_exercise("4.1", answer, embeddings=test_emb, mean=model.mean, precision=model.precision, image=k,
               position=(r, c))

# %% [markdown]
# ## Summary
# - Each patch is scored by its Mahalanobis distance to the Gaussian **of its own position** (eq. 2); the
#   precision $\Sigma^{-1}$ is stored, so scoring is a batched matrix product.
# - The $h \times w$ distances are upsampled to the image (bicubic in the paper, bilinear here as in
#   anomalib: `cfg.interpolation`) and blurred with σ = 4 px; the image score is the map's maximum.
# - One Gaussian shared by all positions ignores where a patch is and lowers pixel AUROC (by how much depends
#   on the data); the blur's effect is small at 256 px and depends on the image size, because σ is in pixels.
#
# **Next:** 05 explains the metrics used here (image AUROC, pixel AUROC, AU-PRO) step by step, and how to
# pick a threshold without test labels.
