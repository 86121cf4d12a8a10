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
# # 11 · From notebook to production line
#
# **You will learn** what a deployed PaDiM is: one ONNX graph that takes camera images and returns anomaly maps
# and scores, without the course's Python. You will export a fitted model, check the graph against torch,
# time both, predict the file's size from $P$ and $d$ before exporting, and see what float16 and a smaller
# $d$ cost; then what changes on a GPU.
#
# *Needs:* 04 (anomaly maps), 09 (saving a model), and the package's `onnx` extra (onnx, onnxruntime, onnxscript):
# the next cell installs it on Colab and Kaggle, and elsewhere stops with the line to install it.
# *Time:* 10 min (about a minute with `PADIM_QUICK=1`).

# %% tags=["install"] jupyter={"source_hidden": true} cellView="form"
#@title Install the course's package where it is missing (on Colab and Kaggle; elsewhere, only check)
# On Colab and Kaggle, pip installs padim-utils with every package already there held at its version:
# torch, numpy and the kernel stay as they are. Elsewhere, a missing package stops the chapter here.
import importlib, importlib.metadata, importlib.util, os, subprocess, sys, tempfile  # noqa: E401

PACKAGE = os.environ.get(
    "PADIM_PACKAGE", "padim-utils[notebooks,onnx] @ git+https://github.com/padim-course/padim-course")
NEEDS = ('padim_utils', 'ipykernel', 'ipywidgets', 'onnx', 'onnxruntime', 'onnxscript')
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
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from padim_utils.course import (check_exercise, compare, course_data, env_device, env_flag, markdown_table, show,
                                show_source)
from padim_utils.export import (PadimGraph, compare_with_torch, export_onnx, onnx_session, run_onnx,
                                size_breakdown, time_inference)
from padim_utils.metrics import evaluate
from padim_utils.model import Padim
from padim_utils.plots import plot_lines, plot_maps

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# A model fitted on the category's normal images, as in every chapter. The export runs on the CPU (the
# graph it writes runs anywhere), so the model lives there:

# %%
cfg = data.config.replace(device="cpu")
train, test = data.train(), data.test()
model = Padim(cfg).fit(train, progress=False)
images = torch.stack([test[i]["image"] for i in range(len(test))])  # (N, 3, S, S) uint8: the whole test set
labels = torch.tensor(test.labels)
masks = torch.stack([test[i]["mask"] for i in range(len(test))])
P, d = model.mean.shape
print(f"fitted {cfg.backbone}, d = {d}, on {model.n_train} images; grid {model.grid[0]} x {model.grid[1]} = {P} "
      f"positions; {len(test)} test images of {cfg.out_size} px")

# %% [markdown]
# ## 1. What goes into the graph
# On a production line there is a camera, a computer next to it and a program that must say "good" or
# "defective" within a cycle time, often written in C++ or C#, with no Python. The usual answer is to
# export the model to **ONNX**, a file format for computation graphs that runtimes on every platform read
# (onnxruntime, TensorRT, OpenVINO, ...).
#
# A PaDiM "model" is more than a network: the exported graph must hold **every** step of `Padim.predict`,
# from raw camera bytes to the score:
#
# | step | in the graph | shape |
# |---|---|---|
# | images | input, `uint8` | (B, 3, S, S), B free |
# | ImageNet normalisation | two constants (mean, std) | (B, 3, S, S) |
# | the backbone's stages up to its last hooked layer | convolutions and their weights | [(B, C_i, h_i, w_i)] |
# | channel gather (random d) / PCA projection / none | constant indices or matrix | (B, d, h, w) |
# | Mahalanobis distance to each position's Gaussian | the mean (P, d) and precision (P, d, d) | (B, h, w) |
# | upsampling + σ = 4 blur | two constant matrices (chapter 04: both steps are matrix products) | (B, S, S) |
# | image score | the maximum | (B,) |
#
# The module that the exporter traces runs the package's own functions, so the graph computes what
# `Padim.predict` computes:

# %%
show_source(PadimGraph.forward)

# %% [markdown]
# ## 2. Export, and check the graph against torch
# `export_onnx(model, path)` traces that module with `torch.onnx.export(..., dynamo=True)` (opset 20, a free batch
# axis), writes the graph to a temporary file, runs it with **onnxruntime** on a few images against
# `Padim.predict`, and renames it into place only if they agree. Here we hand it four test images to check on.

# %%
work = Path(tempfile.mkdtemp(prefix="padim_11_"))
path = export_onnx(model, work / "padim.onnx", images=images[:4])
safetensors = model.save(work / "padim.safetensors")
print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB (the .safetensors model: "
      f"{safetensors.stat().st_size / 2**20:.1f} MiB, which needs the backbone from pip besides)")

# %% [markdown]
# What is inside? Expect a few dozen operators, mostly convolutions (the backbone), and the biggest constant
# to be the precision matrices, $P \times d \times d$ floats:

# %%
graph = onnx.load(str(path))
ops = Counter(node.op_type for node in graph.graph.node)
print(f"opset {graph.opset_import[0].version}, {len(graph.graph.node)} operators: "
      + ", ".join(f"{n} {op}" for op, n in ops.most_common()))
tensors = sorted(graph.graph.initializer, key=lambda t: -np.prod(t.dims))
show(markdown_table([{"constant": t.name, "shape": tuple(t.dims), "MiB": float(np.prod(t.dims)) * 4 / 2**20}
                     for t in tensors[:4]]))

# %% [markdown]
# The check that the export ran, now on the **whole** test set, once as one batch and once image by image
# (the batch axis is free): each map against its own peak value, and the order of the scores. The two runtimes
# do the same arithmetic in float32, in a different order (onnxruntime fuses operations of its own), so their
# features differ by about $10^{-6}$. The Mahalanobis distance amplifies that, most where
# the distance is small. Expect the maps to agree to between $10^{-6}$ and a few $10^{-5}$ of their peak (the real
# bottle at 256 px sits at the top of that range), inside the tolerance of $10^{-4}$, with single pixels a few times
# further apart, and the scores in the same order.

# %%
session = onnx_session(path)
validation = compare_with_torch(session, model, images)
print(validation)

# %% [markdown]
# One defective image, its torch map, the graph's map and their difference (each with its own colour bar):
# expect the two maps to look identical and the difference to be noise, at least ten thousand times smaller.

# %%
onnx_maps, onnx_scores = run_onnx(session, images)
torch_maps, torch_scores = model.predict(images)
k = int(torch.argmax(torch.where(labels == 1, torch_scores, -1.0)))  # the most anomalous defective image
fig = plot_maps(test[k]["image"], {"torch (Padim.predict)": torch_maps[k], "ONNX (onnxruntime)": onnx_maps[k],
                                   "|ONNX - torch|": (onnx_maps[k] - torch_maps[k]).abs()},
                mask=masks[k], title=f"test image {k}: the same map from two runtimes")

# %% [markdown]
# ## 3. Time it
# `time_inference` calls a predict function on batches of a given size (two warm-up calls, then the median
# of several) and reports the latency per batch and the throughput. Expect onnxruntime to be faster: it runs
# a graph it optimised once, at load (the elementwise steps fused, the batch norms already inside the
# convolutions), while eager torch runs each operation on its own, writing every intermediate tensor to memory.
# On real bottle at 256 px with 2 threads, `benchmarks/bench_export.py` measured 1.2× at batch 1 and 2.3× at
# batch 32. By how much depends on the CPU, its threads and the image size. These are **this machine's** numbers, now (on a shared machine they move from run to run);
# `benchmarks/bench_export.py` measures them with the machine to itself.

# %%
repeats, big = (3, 8) if QUICK else (5, 32)
rows = []
for batch in (1, big):
    for runtime, predict in (("torch", model.predict), ("onnxruntime", lambda x: run_onnx(session, x))):
        t = time_inference(predict, images, batch, repeats=repeats)
        rows.append({"runtime": runtime, "batch": batch, "latency (ms)": t["latency_s"] * 1e3,
                     "images / s": t["images_per_s"]})
show(markdown_table(rows))
speed = {(r["runtime"], r["batch"]): r["images / s"] for r in rows}
for batch in (1, big):
    compare(f"11.onnx-vs-torch-batch{batch}", speed["onnxruntime", batch], speed["torch", batch], tol=0.05 * speed["torch", batch],
            more="At batch {batch}, onnxruntime ran {ratio:.1f} times as many images a second as torch here.",
            less="At batch {batch}, torch was the faster here ({b:.1f} against {a:.1f} images a second): the "
                 "expectation above did not hold on this machine, now.",
            same="At batch {batch}, the two ran alike here ({a:.1f} and {b:.1f} images a second).", batch=batch)

# %% [markdown]
# ## 4. What fills the file
# Almost all of it is numbers, 4 bytes each in float32:
# - the **precision matrices**: one $d \times d$ matrix per position, $P \cdot d^2$ numbers;
# - the **means**: $P \cdot d$ numbers;
# - the **backbone's weights**: its parameters (the package folds each batch norm into the convolution
#   before it, `backbones.fold_batchnorm`, so the network's parameters are exactly what the file holds).
#
# The graph's own description (operators, names) adds under 0.1 MB. `size_breakdown` counts the three parts:

# %%
parts = size_breakdown(model)
show(markdown_table({name: f"{n / 2**20:.2f} MiB" for name, n in parts.items()}
                    | {"the file": f"{path.stat().st_size / 2**20:.2f} MiB"}))

# %% [markdown]
# ### Exercise 11.1
# We re-fit the model with **half the channels**, `d_small` below, from the same features. **Before we
# export it**, predict the size of its float32 ONNX file **in bytes**, from the number of positions `P`, `d_small`
# and the backbone's parameter count `n_backbone`. (The check accepts a prediction within 5 % of the real file.)

# %%
d_small = d // 2
small = Padim(cfg.replace(d=d_small)).fit(train, progress=False)
n_backbone = sum(p.numel() for p in small.extractor.parameters())
print(f"P = {P}, d_small = {d_small}, n_backbone = {n_backbone}")
answer = ...  # your prediction, in bytes

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# answer = 4 * (P * d_small**2 + P * d_small + n_backbone)  # precision, mean, backbone: 4 bytes a number
# print(f"predicted: {answer / 2**20:.2f} MiB")

# %% [markdown]
# Now export it and compare with the real file:

# %%
small_path = export_onnx(small, work / "padim_small.onnx", images=images[:4])
print(f"{small_path.name}: {small_path.stat().st_size} bytes ({small_path.stat().st_size / 2**20:.2f} MiB)")
check_exercise("11.1", answer, positions=P, d=d_small, backbone_parameters=n_backbone,
               file_bytes=small_path.stat().st_size)

# %% [markdown]
# ## 5. Making it smaller, and what that costs
# The precision matrices grow with $d^2$: at the course's full size ($P = 64 \times 64$, $d = 100$) they are
# 156 MiB of the file's 161 MiB, and with Wide-ResNet50 ($d = 550$, $P = 56 \times 56$) 3.5 GiB, over ONNX's
# 2 GiB limit for one file (`export_onnx` refuses it and says what to do). Two levers:
#
# - **float16 storage** (`precision="float16"`, or `padim export --precision float16`): the matrices are
#   stored in 2 bytes a number and cast back to float32 once, when onnxruntime loads the file. Half the
#   bytes; the computation is unchanged, only the matrices are rounded (about 3 significant digits).
# - **a smaller $d$**: fewer random channels, quadratically smaller matrices; chapter 02 showed what that
#   costs in accuracy.
#
# The sizes from the formula, for a range of $d$ (the lines), against $d$:

# %%
ds = sorted({max(1, d // 4), d // 2, d, 3 * d // 2, 2 * d})
sizes = {f"precision in {dtype}": [(P * x * x * nbytes + P * x * 4 + parts["backbone"]) / 2**20 for x in ds]
         for dtype, nbytes in (("float32", 4), ("float16", 2))}
fig = plot_lines(ds, sizes, "d (channels kept)", "ONNX file size (MiB)",
                 f"File size against d ({P} positions, {cfg.backbone})")

# %% [markdown]
# And what each choice costs, **measured on the exported graphs themselves**: onnxruntime over the whole
# test set, scored with chapter 05's metrics. Expect float16 storage to change the metrics by at most a few
# units in the fourth decimal (rounding the matrices to 3 significant digits moves the maps by about $10^{-4}$ of
# their values), and halving $d$ to cost more, as in chapter 02; how much depends on the data: about a thousandth
# of pixel AUROC on the real bottle, several points of AU-PRO on the embedded synthetic set.

# %%
half_path = export_onnx(model, work / "padim_fp16.onnx", precision="float16", images=images[:4])
variants = {f"d = {d}, float32": path, f"d = {d}, float16": half_path, f"d = {d_small}, float32": small_path}
rows = []
for name, file in variants.items():
    maps, scores = run_onnx(onnx_session(file), images, batch_size=16)
    r = evaluate(labels, scores, masks, maps)
    rows.append({"export": name, "MiB": file.stat().st_size / 2**20, "image AUROC": r["image_auroc"],
                 "pixel AUROC": r["pixel_auroc"], "AU-PRO": r["pixel_aupro"]})
show(markdown_table(rows))
full, half, smaller = rows
for name, other in (("float16 storage", half), (f"d = {d_small}", smaller)):
    print(f"{name}: {other['MiB'] / full['MiB']:.0%} of the size; "
          + ", ".join(f"{m} {other[m] - full[m]:+.4f}" for m in ("image AUROC", "pixel AUROC", "AU-PRO")))
compare("11.smaller-d-costs-more", full["AU-PRO"] - smaller["AU-PRO"], full["AU-PRO"] - half["AU-PRO"], tol=1e-4,
        more="Halving d cost more AU-PRO ({a:.4f}) than float16 storage ({b:.4f}) here.",
        less="Float16 storage cost more AU-PRO ({b:.4f}) than halving d ({a:.4f}) here.",
        same="Neither lever moved AU-PRO by more than 1e-4 here (halving d {a:+.4f}, float16 {b:+.4f}).")

# %% [markdown]
# Both levers combine (float16 at the smaller $d$). `benchmarks/bench_export.py` measures the same on real
# MVTec AD bottle at 256 px, with the timings; the README shows its table.
#
# ## 6. What changes on a GPU
# Nothing in the file. The same `.onnx` runs on an NVIDIA GPU with the **`onnxruntime-gpu`** package (it
# replaces `onnxruntime`; then `onnx_session(path, providers=["CUDAExecutionProvider"])`), or is compiled by
# **TensorRT** (`trtexec --onnx=padim.onnx`, or onnxruntime's `TensorrtExecutionProvider`), which can also run
# the backbone in float16. Things to know before you try, on your own machine:
# - the whole precision tensor ($P \cdot d^2$ numbers) must sit in GPU memory, next to the activations of a
#   batch; the batched matrix product over positions is then fast;
# - larger batches use a GPU better than batch 1; measure latency *and* throughput for your line's rhythm
#   with `time_inference`, and check the maps against `Padim.predict` with `compare_with_torch` (GPU kernels
#   round differently too);
# - this course has not measured either on a GPU, so we quote no number here.
#
# The providers this onnxruntime offers here:

# %%
print(onnxruntime.get_available_providers())

# %% [markdown]
# ## Summary
# - A deployed PaDiM is one ONNX graph holding every step of `Padim.predict`, from `uint8` images to maps and
#   scores: the backbone's weights, the chosen channels, and one Gaussian (mean and precision) per position.
# - `export_onnx` / `padim export` write it only after onnxruntime has reproduced `Padim.predict` on real
#   images (within $10^{-4}$ of each map's peak, scores in the same order); a failed check leaves no file.
# - Its size is about $4\,(P d^2 + P d + n_\text{backbone})$ bytes: the precision matrices dominate. float16
#   storage halves them at almost no cost in accuracy; a smaller $d$ shrinks them quadratically and costs more.
#
# **Next:** the end of the course. Go back to chapter 08 to choose your $d$, layers and σ on your own data,
# then export that model.
