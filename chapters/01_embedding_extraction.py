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
# # 01 · Embedding extraction
#
# **You will learn** what a pretrained CNN "sees" at three depths, which layers PaDiM hooks (their
# channels, grids, strides and receptive fields), and how their outputs are upsampled and concatenated
# into one **patch embedding** per grid cell: the vectors every later chapter models.
#
# *Needs:* 00 (the data). *Time:* 15 min (under a minute with `PADIM_QUICK=1`).
#
# PaDiM never trains a network. It borrows an ImageNet classifier, runs each image through it once and
# keeps the activations of a few intermediate layers. Early layers respond to edges and colours in a
# small window; deeper layers respond to textures and parts in a large window, on a coarser grid. PaDiM
# wants both: fine position *and* rich context, for every patch.

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
import torch
import torch.nn.functional as F

from padim_utils.backbones import embed, feature_extractor, layer_geometry
from padim_utils.course import check_exercise, course_data, env_device, env_flag, markdown_table, show, show_source
from padim_utils.model import Padim
from padim_utils.plots import plot_channel_layout, plot_feature_maps, plot_gallery, plot_upsampling

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny images, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
data = course_data()  # real MVTec AD under $PADIM_DATA/mvtec_ad if present, else the embedded set

# %% [markdown]
# ## 1. The backbone and its hooked layers
# The course runs offline, so its backbone is **EfficientNet-Lite0**, whose ImageNet weights ship with
# pip. `Padim(config)` builds it frozen, in eval mode, and keeps only the stages up to the last hooked
# layer. For each hooked layer the table gives:
#
# - **channels** $C_k$: the length of that layer's feature vector;
# - **stride** $s_k$: how many input pixels lie between two neighbouring cells of its grid, so the grid is
#   $\frac{S}{s_k}\times\frac{S}{s_k}$ for an $S\times S$ image;
# - **receptive field** $r_k$: the side of the input window one cell depends on, from the recursion over
#   every convolution (kernel $k$, stride $s$) on the way, $r \leftarrow r + (k-1)\,j$, $j \leftarrow j\,s$.
#
# Expect the stride to double from layer to layer while the receptive field grows much faster: the
# deepest layer's cells each summarise a large part of the image.

# %%
cfg = data.config
S = cfg.out_size  # side of the images the network sees
model = Padim(cfg)  # the same object the whole pipeline uses; no fitting yet
show(markdown_table(layer_geometry(model.extractor, S)))
rf_last = layer_geometry(model.extractor, S)[-1]["receptive field (px)"]
print(f"images are {S}x{S} px; the deepest hooked layer's receptive field spans {rf_last} px "
      f"({rf_last / S:.1f}x the image side: convolutions near the border see zero padding)")

# %% [markdown]
# The paper uses **ResNet18** and **Wide-ResNet50-2**, hooking `layer1`, `layer2` and `layer3` (strides 4, 8
# and 16, like Lite0's three layers) on 224 px crops. We only need their *shapes* here, so we build them
# with `pretrained=False` on PyTorch's `meta` device: no weights are downloaded and no memory is used,
# but every layer's shape is exact. (Never report accuracy from a `pretrained=False` network.)

# %%
rows = []
for name in ("resnet18", "wide_resnet50_2"):
    with torch.device("meta"):  # shapes only: no weights, no memory
        fe = feature_extractor(name, pretrained=False)
    rows += [{"backbone": name, **row} for row in layer_geometry(fe, 224)]
    rows.append({"backbone": name, "layer": "**embedding**", "channels": sum(fe.channels)})
show(markdown_table(rows))

# %% [markdown]
# The paper's embeddings have 448 (ResNet18) and 1792 (Wide-ResNet50-2) channels before the reduction of
# chapter 02; ours has fewer, so its Gaussians will be cheaper.
#
# ## 2. One image through the network
# We take a defective test image and run it through the hooked layers with `model.forward_layers`, the
# pipeline's own forward pass (ImageNet normalisation, then the backbone). Expect one tensor per layer,
# shaped $(1, C_k, S/s_k, S/s_k)$.

# %%
test = data.test()
index = next(i for i, label in enumerate(test.labels) if label == 1)  # the first defective image
item = test[index]
fig = plot_gallery([item["image"]], masks=[item["mask"]], titles=[test.defect_types[index]],
                   title=f"{data.category}: the image we follow (red: ground-truth defect)")

layers = model.forward_layers(item["image"][None])  # [(1, C_k, h_k, w_k)]
for name, f in zip(model.extractor.layers, layers):
    print(f"{name:>9}: {tuple(f.shape)}")

# %% [markdown]
# ## 3. What the layers see
# Each channel is a feature detector applied everywhere on the grid. Below are the eight channels of the
# first and of the last hooked layer that vary most over this image. Expect the first layer's maps to
# follow edges and colour changes at fine resolution, and the last layer's to be coarse blobs that light
# up on whole parts of the object (and often on the defect).

# %%
for name, f in ((model.extractor.layers[0], layers[0][0]), (model.extractor.layers[-1], layers[-1][0])):
    busiest = f.var(dim=(1, 2)).argsort(descending=True)[:8].tolist()  # channels with the most contrast
    fig = plot_feature_maps(f, channels=busiest, title=f"{name}: the 8 most varying channels, "
                            f"{f.shape[1]}x{f.shape[2]} grid")

# %% [markdown]
# ## 4. From three grids to one patch embedding
# The three grids have different sizes, so PaDiM brings every layer to the finest grid (layer 1's) by
# **nearest upsampling**: with $r = s_k / s_1$, cell $(i, j)$ of the fine grid takes the value of cell
# $(\lfloor i/r \rfloor, \lfloor j/r \rfloor)$ of layer $k$. It then **concatenates** along the channels, so
# the embedding of patch $(i, j)$ is
# $$x_{ij} = \big[\,f^{(1)}_{ij};\; f^{(2)}_{\lfloor i/2\rfloor \lfloor j/2\rfloor};\;
#   f^{(3)}_{\lfloor i/4\rfloor \lfloor j/4\rfloor}\big] \in \mathbb{R}^{C_1 + C_2 + C_3}.$$
# Nearest upsampling only copies: expect the upsampled map to show the same values in blocks of
# $r \times r$ fine cells, and its set of values to be exactly the coarse map's.

# %%
coarse = layers[-1][0, busiest[0]]  # one channel of the last layer, (h_3, w_3)
fine = F.interpolate(layers[-1], size=layers[0].shape[-2:], mode="nearest")[0, busiest[0]]  # (h_1, w_1)
fig = plot_upsampling({f"{model.extractor.layers[-1]} channel {busiest[0]}": coarse,
                       "after nearest upsampling": fine}, image_size=S,
                      title="nearest upsampling copies each coarse cell onto r x r fine cells")
print(f"upsampling factor r = {fine.shape[0] // coarse.shape[0]}; same set of values: "
      f"{torch.equal(coarse.unique(), fine.unique())}")

# %% [markdown]
# `backbones.embed` does exactly this for every layer at once. Expect the embedding to keep layer 1's grid
# and to have $C_1 + C_2 + C_3$ channels, laid out layer after layer:

# %%
emb = embed(layers)  # (1, C, h_1, w_1)
print(f"embedding: {tuple(emb.shape)} = 1 image x {emb.shape[1]} channels x "
      f"{emb.shape[2]}x{emb.shape[3]} patches; {sum(model.extractor.channels)} = "
      f"{' + '.join(map(str, model.extractor.channels))}")
fig = plot_channel_layout(model.extractor.channels, model.extractor.layers,
                          title=f"the {emb.shape[1]} channels of one patch embedding, by layer")

# %% [markdown]
# So each image becomes $h_1 w_1$ vectors of dimension $C$; a training set of $N$ images gives $N$
# vectors **per position**, which is what chapter 03 fits a Gaussian to.
#
# ### Look inside
# This is the tested function the pipeline calls (through `Reducer`, chapter 02):

# %%
show_source(embed)

# %% [markdown]
# ### Exercise 1.1
# Build the embedding of our image **by hand** from `layers`: upsample every layer to layer 1's grid with
# `F.interpolate(..., mode="nearest")` and concatenate along the channel dimension with `torch.cat`.
# Your answer is a tensor of shape `(1, C, h_1, w_1)`; it must equal `embed(layers)` exactly.

# %%
answer = ...  # your answer: a (1, C, h_1, w_1) tensor

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# size = layers[0].shape[-2:]  # (h_1, w_1)
# answer = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in layers], dim=1)
# print("identical to backbones.embed:", torch.equal(answer, embed(layers)))

# %%
check_exercise("1.1", answer, layers=layers)

# %% [markdown]
# ## Summary
# - PaDiM uses a frozen ImageNet CNN: three layers of strides 4, 8, 16 (ResNet `layer1`-`layer3`, Lite0
#   `blocks.1/2/4`), whose receptive fields grow from small windows to most of the image.
# - Nearest upsampling to the finest grid plus concatenation gives one $C$-dimensional embedding per patch.
# - An image becomes a $(C, h_1, w_1)$ tensor: fine position from layer 1, context from layer 3.
#
# **Next:** 02 keeps only $d$ of the $C$ channels, and compares random channels with PCA.
