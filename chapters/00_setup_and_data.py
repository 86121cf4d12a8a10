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
# # 00 · Setup and data
#
# **You will learn** what this course runs on (your device, the library versions, which pretrained
# weights are available offline), where the data lives, and what an anomaly-detection dataset in the
# MVTec AD layout looks like: normal images to learn from, a test set with defects, and pixel masks
# that say where each defect is.
#
# *Needs:* nothing. *Time:* 10 min (under a minute with `PADIM_QUICK=1`).
#
# PaDiM (Defard et al., 2020, [arXiv 2011.08785](https://arxiv.org/abs/2011.08785)) learns only from
# **normal** images. At test time it must say which images are defective (detection) and where
# (localisation). Everything in this course runs through the tested package `padim_utils`; each chapter
# shows the code it calls with `show_source`.

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
from collections import Counter

import numpy as np

from padim_utils.course import (check_exercise, course_data, env_device, env_flag, environment_report,
                                markdown_table, show, show_source)
from padim_utils.datasets import MVTecDataset
from padim_utils.plots import plot_gallery

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. Your machine
# The table below lists the versions, the device PaDiM will run on, and where each backbone's ImageNet
# weights come from. Expect `efficientnet_lite0` to say *offline*: its weights are installed with pip,
# which is why the whole course runs without internet. The paper's backbones (ResNet18,
# Wide-ResNet50-2, EfficientNet-B5) are downloaded by torchvision on first use into `$TORCH_HOME`.

# %%
show(markdown_table(environment_report()))

# %% [markdown]
# ## 2. Where the data lives
# All data lives under `$PADIM_DATA` (default `./data`). A real MVTec AD category is looked for at
# `$PADIM_DATA/mvtec_ad/<category>`; without one, the course generates its **embedded synthetic data**:
# two categories drawn with numpy, `carpet_syn` (a texture) and `bottle_syn` (an object), with
# defects whose masks are exact to the pixel. They are not MVTec AD: numbers on them show that the
# method works, not how it compares with the paper. Every notebook prints which data it uses:

# %%
print(data.describe())
print("categories found:", ", ".join(data.categories))

# %% [markdown]
# The layout (MVTec AD's): `train/good` holds normal images only; `test/<defect type>` holds normal
# (`good`) and defective test images; `ground_truth/<defect type>/<name>_mask.png` marks the defective
# pixels. Here are the folders and how many images each holds:

# %%
train, test = data.train(), data.test()
counts = Counter(test.defect_types)
rows = [{"folder": "train/good", "images": len(train)}]
rows += [{"folder": f"test/{kind}", "images": n} for kind, n in sorted(counts.items())]
show(markdown_table(rows))

# %% [markdown]
# ## 3. What the model learns from, and what it must find
# First, normal training images. Look at how much they vary (position, lighting, colour): PaDiM has to
# learn that variation as "normal".

# %%
idx = np.linspace(0, len(train) - 1, 6).astype(int)
fig = plot_gallery([train[i]["image"] for i in idx], titles=[f"train #{i}" for i in idx],
                   title=f"{data.category}: normal training images")

# %% [markdown]
# Now one test image of each defect type, with its ground-truth mask outlined in red. Most defects
# cover a small part of the image, which is why pixel-level localisation is harder than telling a
# defective image from a good one.

# %%
first_of_kind = {}
for i, kind in enumerate(test.defect_types):
    first_of_kind.setdefault(kind, i)
shown = list(first_of_kind.values())
items = [test[i] for i in shown]
fig = plot_gallery([it["image"] for it in items], masks=[it["mask"] for it in items],
                   titles=[test.defect_types[i] for i in shown],
                   title=f"{data.category}: one test image per type (red: ground-truth defect)")

# %% [markdown]
# An item of a dataset is a dict: the image as `uint8` with shape `(3, S, S)` (ImageNet normalisation
# happens later, on the device), the mask `(S, S)` in {0, 1}, the label (1 = defective) and the path.

# %%
item = test[shown[-1]]
print({k: (tuple(v.shape), str(v.dtype)) if hasattr(v, "shape") else v for k, v in item.items()})

# %% [markdown]
# ### Look inside
# This is the code that turns a file into that item: a square resize, then an optional centre crop.
# The paper resizes to 256 and crops 224; anomalib (and `offline_lite0`) keep 256 without a crop.

# %%
show_source(MVTecDataset.__getitem__)

# %% [markdown]
# ### Exercise 0.1
# How many **defective** images does the test set hold, and what fraction of **all test pixels** is
# defective? Answer with a tuple `(n_defective, fraction)`. *Hint:* every item has `label` and `mask`.

# %%
answer = ...  # your answer: (n_defective, fraction)

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] jupyter={"outputs_hidden": true, "source_hidden": true} tags=["solution"]
# masks = np.stack([test[i]["mask"].numpy() for i in range(len(test))])  # (N, S, S)
# answer = (sum(test.labels), masks.mean())

# %%
check_exercise("0.1", answer, test=test)

# %% [markdown]
# Keep that fraction in mind for chapter 05. In MVTec AD, as here, defective pixels are a few percent of
# all test pixels at most, so a metric over all pixels (pixel AUROC) is dominated by the many easy normal
# pixels, which is why the paper also reports the per-region overlap (PRO).
#
# ## Summary
# - PaDiM learns from normal images only (`train/good`), then scores test images and their pixels.
# - Data lives under `$PADIM_DATA`; without real MVTec AD the course uses its embedded synthetic set.
# - Items are `uint8` images `(3, S, S)` with masks `(S, S)`; geometry: resize 256 (+ crop 224 in the paper).
#
# **Next:** 01 turns each image into a grid of patch embeddings with a pretrained CNN.
