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
# # 05 · Evaluation
#
# **You will learn** what the numbers of every PaDiM table mean and how they are computed: image AUROC and
# F1 for detection; pixel AUROC and the per-region overlap (PRO) curve for localisation, built step by step
# on a tiny example you can read by eye, then on real maps; why the PRO area stops at a false positive rate
# of 0.3; why pixel AUROC looks so good; and how to choose a threshold **without** test labels.
#
# *Needs:* 04 (anomaly maps and image scores). *Time:* 20 min (under a minute with `PADIM_QUICK=1`).

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
from padim_utils.metrics import (aupro, evaluate, f1_at, f1_max, image_auroc, pixel_auroc, pro_at, pro_curve,
                                 threshold_from_normal)
from padim_utils.model import Padim
from padim_utils.plots import plot_lines, plot_pro_curve, plot_roc_curves, plot_score_histogram

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. A tiny example you can read
# Three 8×8 "images": two defective, one good. Each mask marks the defect pixels (1), each map holds a
# made-up anomaly score per pixel (higher = more anomalous). Image 0 has two defects: a 2×3 block, and
# two pixels that touch only at a corner; image 1 has one 3×3 defect; image 2 is good but its map has a
# few high pixels (false alarms).

# %%
tiny_masks = np.zeros((3, 8, 8), dtype=np.uint8)
tiny_masks[0, 1:3, 1:4] = 1  # region A: 2x3 block
tiny_masks[0, 5, 5] = tiny_masks[0, 6, 6] = 1  # region B: two pixels touching at a corner
tiny_masks[1, 2:5, 3:6] = 1  # region C: 3x3 block
tiny_maps = np.zeros((3, 8, 8))
tiny_maps[0][tiny_masks[0] == 1] = 3  # region A scored 3
tiny_maps[0, 5, 5] = tiny_maps[0, 6, 6] = 1  # region B scored only 1
tiny_maps[0, 7, 0] = 2  # a false alarm
tiny_maps[1][tiny_masks[1] == 1] = 2  # region C: 2 ...
tiny_maps[1, 2:4, 3:6] = 4  # ... and 4 on its upper 6 of 9 pixels
tiny_maps[2, 0, 0] = tiny_maps[2, 4, 4] = 3  # false alarms on the good image
tiny_maps[2, 7, 7] = 1
for i in range(3):
    print(f"image {i}  mask{' ' * 13}map")
    for row_m, row_s in zip(tiny_masks[i], tiny_maps[i].astype(int)):
        print("  " + " ".join(map(str, row_m)) + "    " + " ".join(map(str, row_s)))

# %% [markdown]
# ### Detection: one score per image
# As in chapter 04, an image's score is the maximum of its map: here 3, 4 and 3. **Image AUROC** is the
# probability that a randomly drawn defective image scores higher than a randomly drawn good one (a tie
# counts one half). With two defective and one good image there are two (defect, good) pairs: image 1
# beats image 2 (4 > 3), image 0 ties with it (3 = 3). Expect an AUROC of (1 + ½) / 2.
#
# **F1** needs a threshold $t$ (images with score $\ge t$ are called defective):
# $F_1 = \frac{2\,TP}{2\,TP + FP + FN}$. `f1_max` tries every score as $t$ and keeps the best. At $t = 4$
# only image 1 is flagged (one defect missed); at $t = 3$ all three are (one false alarm).

# %%
tiny_labels = np.array([1, 1, 0])
tiny_scores = tiny_maps.reshape(3, -1).max(1)
best_f1, best_t = f1_max(tiny_labels, tiny_scores)
print(f"image scores {tiny_scores}, labels {tiny_labels}")
print(f"image AUROC {image_auroc(tiny_labels, tiny_scores):.3f}; best F1 {best_f1:.3f} at threshold {best_t:g}; "
      f"F1 at threshold 4: {f1_at(tiny_labels, tiny_scores, 4):.3f}")

# %% [markdown]
# ### Localisation, pixel by pixel: pixel AUROC
# The same AUROC, but over **every pixel** of the set: 17 defect pixels against 175 defect-free ones. Each
# pixel counts once, so the big 3×3 region C weighs 4.5 times more than region B.

# %%
n_defect, n_normal = int(tiny_masks.sum()), int((tiny_masks == 0).sum())
print(f"pixel AUROC {pixel_auroc(tiny_masks, tiny_maps):.3f} over {n_defect} defect and {n_normal} defect-free pixels")

# %% [markdown]
# ### Localisation, region by region: the PRO curve
# PRO (per-region overlap, Bergmann et al., MVTec AD) gives **each defect region the same weight**,
# whatever its size. Regions are the 8-connected groups of defect pixels of each mask (so region B, two
# pixels touching at a corner, is one region). At a threshold $t$:
# $$\mathrm{PRO}(t) = \frac{1}{R} \sum_{r=1}^{R} \frac{|\{p \in C_r : A(p) \ge t\}|}{|C_r|}, \qquad
# \mathrm{FPR}(t) = \frac{|\{p \text{ defect-free} : A(p) \ge t\}|}{|\{p \text{ defect-free}\}|} .$$
# Reading the arrays above, expect at $t = 4$: region A 0, B 0, C 6/9; at $t = 3$ region A joins; at
# $t = 2$ region C is complete; only at $t = 1$ is B found. Meanwhile the false alarms switch on one by one.
# `pro_at` computes one threshold straight from this definition:

# %%
thresholds = [4, 3, 2, 1]
points = [pro_at(tiny_masks, tiny_maps, t) for t in thresholds]
show(markdown_table([{"threshold t": f"{p.threshold:g}", "overlap A": f"{p.overlaps[0]:.3f}",
                      "overlap B": f"{p.overlaps[1]:.3f}", "overlap C": f"{p.overlaps[2]:.3f}",
                      "PRO (mean)": f"{p.pro:.3f}", "FPR": f"{p.fpr:.4f}"} for p in points]))

# %% [markdown]
# Lowering $t$ from above the highest score down to the lowest traces the **PRO curve** from (0, 0) to
# (1, 1). `pro_curve` computes all thresholds at once (one sort of the pixels); expect it to pass exactly
# through the four points of the table (red). Its area up to FPR 0.3, divided by 0.3, is the **AU-PRO**:
# 1 for a map that finds every region before any false alarm.

# %%
fpr, pro = pro_curve(tiny_masks, tiny_maps)
fig = plot_pro_curve(fpr, pro, limit=0.3, points=[(p.fpr, p.pro) for p in points],
                     title="tiny example: PRO curve through the pro_at points")
on_curve = all(np.any(np.isclose(fpr, p.fpr) & np.isclose(pro, p.pro)) for p in points)
print(f"every pro_at point lies on the curve: {on_curve};  AU-PRO (FPR <= 0.3) = {aupro(tiny_masks, tiny_maps):.3f}")

# %% [markdown]
# ## 2. The same metrics on real anomaly maps
# Now PaDiM's maps of this chapter's data, fitted on the backbone's layer outputs (`data.features`,
# chapter 02). We keep a quarter of the normal training images **aside** (section
# 5 needs normal images the model has not seen), fit on the rest, and predict the test set. Expect image
# AUROC and pixel AUROC to be high, and AU-PRO to be the lowest of the three: it is the strictest.

# %%
cfg = data.config
train_cache = data.features("train")
test_cache = data.features("test")
n_held = max(2, len(train_cache) // 4)  # normal images kept aside for section 5
fit_cache = train_cache.subset(slice(0, len(train_cache) - n_held))
held_cache = train_cache.subset(slice(len(train_cache) - n_held, None))
model = Padim(cfg).fit(fit_cache, progress=False)
result = model.predict_dataset(test_cache, progress=False)
print(f"fitted on {len(fit_cache)} normal images ({n_held} kept aside), {len(test_cache)} test images scored")
labels, scores, masks, maps = result["labels"], result["scores"], result["masks"], result["maps"]
metrics = evaluate(labels, scores, masks, maps)
show(markdown_table({"image AUROC": metrics["image_auroc"], "image F1 (best threshold)": metrics["image_f1"],
                     "pixel AUROC": metrics["pixel_auroc"], "AU-PRO (FPR 0.3)": metrics["pixel_aupro"]}))
compare("05.aupro-lowest", metrics["pixel_aupro"], min(metrics["image_auroc"], metrics["pixel_auroc"]),
        less="AU-PRO ({a:.3f}) is the lowest of the three, as expected of the strictest.",
        more="AU-PRO ({a:.3f}) is not the lowest here: detection (image AUROC) is the weaker side on this data.")

# %% [markdown]
# ### ROC curves
# Each ROC curve plots, as the threshold falls, the true positive rate against the false positive rate;
# AUROC is the area under it. The image curve is a staircase with one step per test image; the pixel curve
# is smooth (it has a step per pixel).

# %%
fig = plot_roc_curves({"image (one score per image)": (labels, scores), "pixel (every pixel)": (masks, maps)},
                      title=f"{data.category}: image and pixel ROC curves")

# %% [markdown]
# ## 3. Why pixel AUROC is so high: many easy normal pixels
# Defect pixels are a small minority of the test set. The pixel ROC's false positive rate divides by the
# number of defect-free pixels, so "FPR = 5 %" sounds small, yet it can flag about as many good pixels as
# there are defect pixels, or more. Let us count, at the threshold where 5 % of the defect-free pixels are
# flagged:

# %%
normal_px = maps[masks == 0]  # (n_normal,)
defect_px = maps[masks == 1]  # (n_defect,)
t5 = float(np.quantile(normal_px.numpy(), 0.95))  # 95th percentile of the defect-free scores
flagged_normal = int((normal_px >= t5).sum())
found = int((defect_px >= t5).sum())
at_t5 = pro_at(masks, maps, t5)
print(f"{defect_px.numel():,} defect pixels vs {normal_px.numel():,} defect-free pixels "
      f"({defect_px.numel() / maps.numel():.1%} of all pixels)")
print(f"at threshold {t5:.1f}: FPR {at_t5.fpr:.3f} -> {flagged_normal:,} false-alarm pixels, "
      f"{flagged_normal / defect_px.numel():.2f} per defect pixel")
print(f"pixel TPR {found / defect_px.numel():.3f} (all defect pixels together) vs PRO {at_t5.pro:.3f} "
      f"(mean over {len(at_t5.overlaps)} regions)")

# %% [markdown]
# Two lessons. A "low" pixel FPR still paints many good pixels red, which a pixel AUROC near 1 hides. And
# the pixel TPR is dominated by the **large** defects, which are usually the easy ones, while PRO averages
# regions, so a missed small defect costs as much as a missed big one. Expect PRO below the pixel TPR:

# %%
compare("05.pro-below-tpr", at_t5.pro, found / defect_px.numel(), tol=0.005,
        less="At this threshold PRO ({a:.3f}) is below the pixel TPR ({b:.3f}): the small regions are the ones "
             "missed.",
        more="At this threshold PRO ({a:.3f}) is above the pixel TPR ({b:.3f}): here the large defects are the "
             "ones missed, and the many small ones are found.",
        same="At this threshold PRO ({a:.3f}) and the pixel TPR ({b:.3f}) agree: small and large defects are "
             "found alike.")

# %% [markdown]
# ## 4. The PRO curve of real maps, and why it stops at FPR 0.3
# Below, the full PRO curve with `pro_at` at the thresholds that flag 1 %, 5 %, 10 % and 30 % of the
# defect-free pixels. Expect the curve to climb steeply at first and the points to lie on it.

# %%
flag = (0.01, 0.05, 0.1, 0.3)  # fraction of defect-free pixels flagged
real_points = [pro_at(masks, maps, t) for t in np.quantile(normal_px.numpy(), [1 - f for f in flag])]
fpr, pro = pro_curve(masks, maps)
fig = plot_pro_curve(fpr, pro, limit=0.3, points=[(p.fpr, p.pro) for p in real_points],
                     title=f"{data.category}: PRO curve of PaDiM's maps")
show(markdown_table([{"threshold": f"{p.threshold:.1f}", "FPR": f"{p.fpr:.3f}", "PRO": f"{p.pro:.3f}",
                      "regions": len(p.overlaps)} for p in real_points]))

# %% [markdown]
# Beyond FPR 0.3 a third of the defect-free surface is flagged: no inspector would use such a threshold,
# yet that part of the curve is most of the area to FPR 1. The MVTec AD authors therefore integrate only up
# to 0.3 and divide by 0.3. A map of **random** scores shows what the extra area is worth: its PRO equals
# its FPR (each region's overlap is the flagged fraction), so its normalised area up to $L$ is $L/2$:
# expect about 0.15 at the standard limit and 0.5 at $L = 1$. Expect PaDiM's lead over chance (the ratio of
# the two areas) to shrink as $L$ grows: the larger $L$, the less the number says about useful thresholds.

# %%
limits = [0.05, 0.1, 0.3, 0.6, 1.0]
random_maps = torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
series = {"PaDiM maps": [aupro(masks, maps, L) for L in limits],
          "random maps": [aupro(masks, random_maps, L) for L in limits]}
fig = plot_lines(limits, series, xlabel="FPR limit L of the integration", ylabel="AU-PRO (area / L)",
                 title=f"{data.category}: AU-PRO depends on where it stops", ylim=(0, 1.02))
show(markdown_table([{"FPR limit L": L, "PaDiM": a, "random": b, "PaDiM / random": f"{a / b:.1f}x"}
                     for L, a, b in zip(limits, *series.values())]))
lead = [a / b for a, b in zip(*series.values())]
compare("05.lead-shrinks", lead[-1], lead[limits.index(0.3)],
        less="PaDiM's lead over random maps shrinks from {b:.1f}x at L = 0.3 to {a:.1f}x at L = 1: the area "
             "beyond 0.3 says little about useful thresholds.",
        more="PaDiM's lead over random maps does not shrink here ({b:.1f}x at L = 0.3, {a:.1f}x at L = 1).")

# %% [markdown]
# ## 5. A threshold chosen without test labels
# The best F1 of section 2 picks its threshold by looking at the test labels: on a production line there
# are no labels. An honest recipe: score the **normal training images kept out of the fit** (section 2),
# and put the threshold just above (almost) all of them, here at most 5 % false alarms on these held-out
# images (`threshold_from_normal`). Expect its F1 on the test set to be at most the best F1 (which peeked
# at the answers), and the gap to show what a real deployment would lose.

# %%
held_scores = model.predict_dataset(held_cache, progress=False)["scores"]  # (n_held,) normal, unseen
t_normal = threshold_from_normal(held_scores, max_fpr=0.05)
f1_best, t_best = f1_max(labels, scores)
show(markdown_table([
    {"threshold": "from held-out good images (no test labels)", "value": f"{t_normal:.1f}",
     "test F1": f1_at(labels, scores, t_normal)},
    {"threshold": "best F1 (peeks at the test labels)", "value": f"{t_best:.1f}", "test F1": f1_best}]))
fig = plot_score_histogram(scores, labels, threshold=t_normal,
                           title=f"{data.category}: test image scores and the label-free threshold")
flagged = scores >= t_normal
print(f"threshold from {n_held} held-out good images: "
      f"on the test set it flags {flagged[labels == 1].float().mean():.0%} of the defective and "
      f"{flagged[labels == 0].float().mean():.0%} of the good images")

# %% [markdown]
# With few held-out images the threshold can only sit above the highest held-out score, and a handful of
# images says little about the tail of normal scores: more held-out images give a steadier threshold. If
# the held-out good images score lower than the good test images (other lighting, another day of
# production), the threshold lands too low and flags good test images. Did it happen here? The threshold
# allowed 5 % false alarms on the held-out images:

# %%
compare("05.threshold-holds", float(flagged[labels == 0].float().mean()), 0.05, tol=0.03, n=n_held,
        more="On the good test images it raises {a:.0%} false alarms, above the 5 % it allowed on the {n} "
             "held-out ones: those score lower than the good test images here. Hold out images that look like "
             "what the line will see, and re-check the threshold when conditions change.",
        less="On the good test images it raises {a:.0%} false alarms, within the 5 % it allowed on the {n} "
             "held-out ones: the held-out images stand for the good test images well.",
        same="On the good test images it raises {a:.0%} false alarms, close to the 5 % it allowed on the {n} "
             "held-out ones: the held-out images stand for the good test images about as well as {n} images can.")

# %% [markdown]
# ### Look inside
# The PRO curve at one threshold, straight from its definition (the fast `pro_curve` and `aupro` compute
# all thresholds from one sort and pass through these points):

# %%
show_source(pro_at)

# %% [markdown]
# and the label-free threshold:

# %%
show_source(threshold_from_normal)

# %% [markdown]
# ### Exercise 5.1
# Compute the image AUROC of the real test set (`labels`, `scores` of section 2) **by counting pairs**:
# over every (defective image, good image) pair, count 1 when the defective one scores higher, ½ for a
# tie, 0 otherwise, and divide by the number of pairs (the Mann–Whitney statistic). Answer with one float.

# %%
answer = ...  # your answer: a float

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# s, y = scores.numpy(), labels.numpy()
# bad, good = s[y == 1], s[y == 0]
# wins = (bad[:, None] > good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()  # all pairs at once
# answer = float(wins / (len(bad) * len(good)))
# print(f"by counting {len(bad) * len(good)} pairs: {answer:.4f};  image_auroc: {image_auroc(labels, scores):.4f}")

# %%
check_exercise("5.1", answer, labels=labels, scores=scores)

# %% [markdown]
# ### Exercise 5.2
# Back to the tiny example of section 1 (`tiny_masks`, `tiny_maps`): compute the PRO at
# threshold $t = 2$ yourself. Find the regions with `scipy.ndimage.label` (mind the connectivity: 8
# neighbours), compute each region's overlap, and average. Answer with one float.

# %%
answer = ...  # your answer: a float

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# from scipy import ndimage
#
# overlaps = []
# for m, a in zip(tiny_masks, tiny_maps):
#     regions, n = ndimage.label(m, structure=np.ones((3, 3)))  # 8-connected regions 1..n of this image
#     overlaps += [(a[regions == r] >= 2).mean() for r in range(1, n + 1)]
# answer = float(np.mean(overlaps))
# print(f"{len(overlaps)} regions, overlaps {np.round(overlaps, 3)}, PRO {answer:.3f}")

# %%
check_exercise("5.2", answer, masks=tiny_masks, maps=tiny_maps, threshold=2)

# %% [markdown]
# ## Summary
# - Detection: image AUROC is the chance that a defective image outscores a good one (ties ½); F1 needs a
#   threshold, and the best F1 peeks at the test labels; a threshold from held-out good images does not.
# - Localisation: pixel AUROC counts every pixel, so the many easy normal pixels and the large defects
#   dominate it; PRO gives each defect region one vote and is the stricter number.
# - AU-PRO integrates the PRO curve only up to FPR 0.3 (and divides by 0.3): beyond that, thresholds flag
#   so much of the good surface that even random maps collect area.
#
# **Next:** 06 runs the whole pipeline over every category and sets the results beside the paper's.
