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
# # 07 · PaDiM on video: ShanghaiTech Campus
#
# **You will learn** how PaDiM, a method for still images, is used on surveillance video: every frame is
# an image, one model is fitted per camera (scene) on frames of its normal training videos, and the
# paper reports a **frame-level** AUROC (is this frame anomalous?) and a **pixel-level** AUROC (where?).
#
# *Needs:* 04 (maps) and 05 (metrics), and the package's `video` extra (PyAV, to decode the videos): the next
# cell installs it on Colab and Kaggle, and elsewhere stops with the line to install it.
# *Time:* 10 min (under a minute with `PADIM_QUICK=1`).
#
# ShanghaiTech Campus (STC) holds 13 scenes filmed by fixed cameras; the training videos show only normal
# activity (people walking), the test clips contain anomalies such as cyclists, vehicles or people running.
# The paper (Defard et al., 2020, Sec. 4.1 and Table IV) resizes frames to 256 × 256 **without a crop**,
# fits one PaDiM per scene and reaches a pixel AUROC of 0.912 with ResNet18 (d = 100).

# %% tags=["install"] jupyter={"source_hidden": true} cellView="form"
#@title Install the course's package where it is missing (on Colab and Kaggle; elsewhere, only check)
# On Colab and Kaggle, pip installs padim-utils with every package already there held at its version:
# torch, numpy and the kernel stay as they are. Elsewhere, a missing package stops the chapter here.
import importlib, importlib.metadata, importlib.util, os, subprocess, sys, tempfile  # noqa: E401

PACKAGE = os.environ.get(
    "PADIM_PACKAGE", "padim-utils[notebooks,video] @ git+https://github.com/padim-course/padim-course")
NEEDS = ('padim_utils', 'ipykernel', 'ipywidgets', 'av')
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

from padim_utils.course import (check_exercise, compare, env_device, env_flag, markdown_table, show, show_source,
                                solved, stc_data)
from padim_utils.metrics import image_auroc, pixel_auroc
from padim_utils.model import Padim
from padim_utils.paper import CITATION, paper_number
from padim_utils.plots import plot_frame_scores, plot_gallery, plot_overlays
from padim_utils.experiments import run_stc

# %% tags=["parameters"]
QUICK = env_flag("PADIM_QUICK")  # PADIM_QUICK=1: tiny frames, seconds per notebook
DEVICE = env_device()  # PADIM_DEVICE: auto (the GPU if there is one), cpu or cuda
stc = stc_data()  # real STC under $PADIM_DATA/stc if present, else a synthetic set in the STC layout

# %% [markdown]
# Without the real STC (a 30 GB download, see the datasets section of the README), the course writes a
# small **synthetic** set in exactly the official layout: a static campus-like scene per camera, people
# walking along a path in the training videos, and test clips where a vehicle, a cyclist or a person off
# the path appears for a while, with masks exact to the pixel. Numbers on it show the method at work, not
# how it compares with the paper.
#
# ## 1. The layout
# `training/videos/<scene>_<clip>.avi` (normal only), `testing/frames/<scene>_<clip>/<frame>.jpg`, and for
# each test clip a 0/1 label per frame (`test_frame_mask/`) and a mask per frame (`test_pixel_mask/`).
# Training frames are decoded from the videos with PyAV, `frames_per_video` of them spread uniformly.

# %%
scene = stc.scenes[0]
train, test = stc.dataset(scene, "train"), stc.dataset(scene, "test")
rows = [{"scene": s, "training frames": len(stc.dataset(s, "train")), "test frames": len(stc.dataset(s, "test")),
         "anomalous test frames": sum(stc.dataset(s, "test").labels)} for s in stc.scenes]
show(markdown_table(rows))

# %% [markdown]
# Some training frames of scene `01`: the camera does not move, people do. Everything seen here is normal.

# %%
idx = np.linspace(0, len(train) - 1, 6).astype(int)
fig = plot_gallery([train[i]["image"] for i in idx], titles=[f"frame {i}" for i in idx],
                   title=f"scene {scene}: training frames (normal)")

# %% [markdown]
# And test frames: the anomalous ones carry a red outline (the pixel mask).

# %%
anomalous = [i for i, y in enumerate(test.labels) if y == 1]
normal = [i for i, y in enumerate(test.labels) if y == 0]
pick = anomalous[:: max(1, len(anomalous) // 4)][:4] + normal[:2]
fig = plot_gallery([test[i]["image"] for i in pick], masks=[test[i]["mask"] for i in pick],
                   titles=[f"{'anomalous' if test.labels[i] else 'normal'} #{i}" for i in pick],
                   title=f"scene {scene}: test frames (red: ground-truth anomaly)")

# %% [markdown]
# ## 2. One model for one scene
# Nothing changes in the method: a frame is an image. We fit on the scene's training frames, then score
# every test frame. Expect the frame scores to rise while an anomaly is in view (shaded); a moving
# pedestrian is normal here, so it should light up the map less. How low the normal frames stay is the
# question the frame AUROC answers: the lines under the plot say what happened here.

# %%
model = Padim(stc.config).fit(train)
result = model.predict_dataset(test)
frame_auc = image_auroc(result["labels"], result["scores"])
pixel_auc = pixel_auroc(result["masks"], result["maps"])
print(f"scene {scene}: frame AUROC {frame_auc:.3f}, pixel AUROC {pixel_auc:.3f} "
      f"({len(train)} training frames, {len(test)} test frames)")

# %%
clips = [p.split("/")[-2] for p in test.paths]
fig = plot_frame_scores(result["scores"], result["labels"], clips=clips,
                        title=f"scene {scene}: frame score over the test clips (dotted: a new clip)")

# %%
frame_scores, frame_labels = result["scores"].numpy(), result["labels"].numpy()
median_anomalous = float(np.median(frame_scores[frame_labels == 1]))
compare("07.normal-frames-low", float(frame_scores[frame_labels == 0].max()), median_anomalous,
        tol=0.05 * median_anomalous, auc=frame_auc,  # within 5 %: "as high as", not "below"
        less="Every normal frame scores clearly below the median anomalous frame (highest normal {a:.1f}, "
             "median anomalous {b:.1f}): the scores stay low between the anomalies.",
        same="The highest normal frame ({a:.1f}) scores about as high as the median anomalous frame ({b:.1f}): "
             "the scores drop between the anomalies, but not always below the anomalous frames. A frame's "
             "score is the maximum of its map, so one unusual patch anywhere (a pedestrian where the few "
             "training frames had none) raises a whole normal frame; the frame AUROC ({auc:.3f}) counts "
             "these overlaps.",
        more="Normal frames do not all stay low: the highest scores {a:.1f}, above the median anomalous frame "
             "({b:.1f}). A frame's score is the maximum of its map, so one unusual patch anywhere (a pedestrian "
             "where the few training frames had none) raises a whole normal frame; the frame AUROC "
             "({auc:.3f}) counts these overlaps.")

# %% [markdown]
# The anomaly maps of the most and least anomalous test frames, on one colour scale (the bar on the right):

# %%
order = np.argsort(-result["scores"].numpy())
show_idx = [int(order[0]), int(order[1]), int(order[len(order) // 2]), int(order[-1])]
fig = plot_overlays([test[i]["image"] for i in show_idx], [result["masks"][i] for i in show_idx],
                    [result["maps"][i] for i in show_idx], scores=[result["scores"][i] for i in show_idx],
                    labels=[result["labels"][i] for i in show_idx],
                    titles=[clips[i] for i in show_idx], title=f"scene {scene}: anomaly maps, most to least anomalous")

# %% [markdown]
# ### Look inside
# `run_stc` does these steps for one scene and returns a record, as `run_benchmark` does for MVTec AD:

# %%
show_source(run_stc)

# %% [markdown]
# ## 3. Every scene, beside the paper
# One model per scene, as in the paper (scene `01` is the model fitted above; `run_stc` fits the others). The paper reports only the pixel AUROC averaged over the 13 real
# scenes (0.912 for PaDiM-R18-Rd100); on synthetic frames with the offline backbone expect a different
# number: the comparison only makes sense on the real data.

# %%
records = [{"scene": scene, "frame_auroc": frame_auc, "pixel_auroc": pixel_auc, "n_train": len(train)}]  # fitted above
records += [run_stc(stc.config, stc.root, s, frames_per_video=stc.frames_per_video, progress=False)
            for s in stc.scenes[1:]]
rows = [{"scene": r["scene"], "frame AUROC": r["frame_auroc"], "pixel AUROC": r["pixel_auroc"],
         "train frames": r["n_train"]} for r in records]
paper = paper_number("stc", "PaDiM-R18-Rd100", "pixel_auroc")
rows.append({"scene": f"**mean** ({stc.source})", "frame AUROC": np.mean([r["frame_auroc"] for r in records]),
             "pixel AUROC": np.mean([r["pixel_auroc"] for r in records])})
# the paper gives no frame AUROC: None, which the table shows as "–"
rows.append({"scene": "paper, PaDiM-R18-Rd100, 13 real scenes", "frame AUROC": None, "pixel AUROC": paper})
show(markdown_table(rows) + f"\n\nPaper: {CITATION}, Table IV.")

# %% [markdown]
# ### Exercise 7.1
# The paper's frame score is the **maximum** of the anomaly map. Score each test frame of scene `01` by the
# **mean** of its map instead and compute the frame-level AUROC. Is it higher or lower than with the
# maximum? (Answer with the AUROC as a number; `result["maps"]` holds the maps, `result["labels"]` the
# frame labels.)

# %%
answer = ...  # the frame AUROC with mean-of-map scores

# %% [markdown]
# *Stuck?* The worked solution is folded below; open it to read it. In JupyterLab it is a raw cell that
# *Run All* skips, so the check after it judges your own answer. To run the solution: select its cell,
# press `Y` (it becomes a code cell), then `Shift+Enter`.

# %% [raw] tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# mean_scores = result["maps"].mean(dim=(1, 2))  # (N,)
# answer = image_auroc(result["labels"], mean_scores)
# print(f"max of the map: {frame_auc:.3f}, mean of the map: {answer:.3f}")

# %%
check_exercise("7.1", answer, maps=result["maps"], labels=result["labels"])

# %% [markdown]
# Which of the two scores ranks the frames better depends on the anomalies: a small one raises the maximum
# of the map but barely moves the mean of a large frame, while a large one moves the mean too, and the
# maximum also picks up single unusual patches of normal frames. Once your answer is right, the cell below
# compares it with the maximum's frame AUROC:

# %%
if solved("7.1"):
    compare("07.max-vs-mean", frame_auc, answer, tol=0.005,
            more="The maximum ranks the frames better here: frame AUROC {a:.3f} against {b:.3f} for the mean. "
                 "The anomalies are small against the frame, the usual case, hence the paper's choice.",
            less="The mean ranks the frames better here: frame AUROC {b:.3f} against {a:.3f} for the maximum. "
                 "These anomalies (vehicles, cyclists) cover much of the frame and raise the whole map, while the "
                 "maximum of a normal frame is raised by single unusual patches. The paper keeps the maximum: on "
                 "real campus video the anomalies are small against the frame.",
            same="Both scores rank the frames alike here (frame AUROC {a:.3f} for the maximum, {b:.3f} for the mean).")
else:
    print("Answer exercise 7.1 first: this cell compares your number with the maximum's.")

# %% [markdown]
# ## 4. Which frames to train on
# The paper does not say how many training frames it used, and more normal data sounds always better.
# On video it is not, for two reasons that a scene built for them shows plainly. The *walkway* scene has
# STC's official layout and codecs (MPEG-4 training videos, JPEG test frames): a static, finely textured
# wall, lawn and path; dark figures walking the middle of the path; in the test clips, a bright red cart
# crossing the whole path. (It is synthetic even when the real STC is installed: we need to know where
# the background is static.)
#
# 1. **The codec gap.** At a wall position every training frame is the same picture up to the video
#    codec's tiny noise, so the Gaussian fitted there is extremely narrow (in many directions only ε wide).
#    A test JPEG of the very same wall carries other compression errors and lands far outside it, so the
#    whole static background scores high, in every test frame.
# 2. **Normal activity widens the path.** Every frame with a walker on a path position widens that
#    position's Gaussian, so a cart on the path looks less unusual the more walker frames the model has seen.
#
# With the training frames as decoded (`train_codec="none"`), the two add up: the background stays high
# while the cart's score falls with every added frame, until the maximum of a frame's map is often the
# wall and not the cart. Expect, in the table and the figure below, the frame AUROC and AU-PRO of
# "frames as decoded" to be clearly lower with all 48 frames per video than with 8. The loader's default,
# `train_codec="match"`, closes the codec gap: each decoded training frame is stored as the test frames are
# (JPEG with their own quantisation tables), after noise as large as that compression's error, so two
# codecs' versions of one wall no longer look different. Expect its background scores to fall as frames
# are added, several times below the decoded ones with all frames, and its metrics to stay near 1.

# %%
from padim_utils.datasets import STCDataset, data_home, make_walkway_stc, match_test_codec
from padim_utils.experiments import frames_study
from padim_utils.plots import plot_maps, plot_training_frames

walkway = make_walkway_stc(data_home() / ("stc_walkway_quick" if QUICK else "stc_walkway"),
                           image_size=(144, 256) if QUICK else (240, 424))
study = frames_study(walkway, stc.config, frames_per_video=(8, 24, None), train_codecs=("none", "match"))
show(markdown_table([{"training frames": r["train_frames"], "train_codec": r["train_codec"],
                      "frame AUROC": r["frame_auroc"], "pixel AUROC": r["pixel_auroc"], "AU-PRO": r["aupro"],
                      "background (median score)": r["background_median"], "cart (median score)": r["cart_median"]}
                     for r in study]))
fig = plot_training_frames(study, title="walkway scene: more training frames, frames as decoded or matched")

# %%
row = {(r["train_frames"], r["train_codec"]): r for r in study}
few, every = min(k[0] for k in row), max(k[0] for k in row)
for codec in ("none", "match"):
    a, b = row[few, codec], row[every, codec]
    print(f"{codec:5s}: {few} -> {every} frames: frame AUROC {a['frame_auroc']:.3f} -> {b['frame_auroc']:.3f}, "
          f"AU-PRO {a['aupro']:.3f} -> {b['aupro']:.3f}, background {a['background_median']:.1f} -> "
          f"{b['background_median']:.1f}, cart {a['cart_median']:.1f} -> {b['cart_median']:.1f}")
compare("07.decoded-more-frames", row[few, "none"]["frame_auroc"], row[every, "none"]["frame_auroc"], tol=0.01,
        more="As decoded, more training frames made the model blinder: frame AUROC {a:.3f} with {few} frames, "
             "{b:.3f} with all {every}.",
        less="As decoded, more training frames did not hurt in this run: frame AUROC {a:.3f} with {few} frames, "
             "{b:.3f} with all {every}.",
        same="As decoded, the frame AUROC barely moved with more frames here ({a:.3f} with {few}, {b:.3f} with "
             "{every}).", few=few, every=every)
compare("07.matched-background", row[every, "none"]["background_median"], row[every, "match"]["background_median"],
        more="With every frame, matching the codec lowers the background's median score from {a:.1f} to {b:.1f} "
             "({ratio:.1f} times lower).",
        less="With every frame, matching the codec did not lower the background's median score here ({a:.1f} "
             "as decoded, {b:.1f} matched).")

# %% [markdown]
# The maps say the same for one test frame with the cart in the middle of the path, both models fitted on
# every frame. Each map has its own colour scale, as each model's own maximum is what scores the frame:
# expect the decoded model's brightest place to be the static background, the matched model's the cart.

# %%
test_walkway = STCDataset(walkway, "01", "test", geometry=stc.config.geometry)  # STC frames: resized, no crop
i = row[every, "match"]["example_frame"]  # the frame whose map frames_study kept
fig = plot_maps(test_walkway[i]["image"], {f"{codec}, {every} frames": row[every, codec]["example"]
                                           for codec in ("none", "match")},
                mask=test_walkway[i]["mask"],
                title="walkway test frame: anomaly maps with frames as decoded and matched")

# %% [markdown]
# ### Look inside
# What the default does to every decoded training frame before it is resized:

# %%
show_source(match_test_codec)

# %% [markdown]
# ### How to choose the training frames
# - **Keep `train_codec="match"`** whenever training frames come out of videos and test frames out of image
#   files (STC, and most surveillance data): it costs a JPEG round trip per frame. Check it on your own
#   data: the background of normal test frames should score like that of held-out training frames.
# - **Spread the frames over every video** (`frames_per_video` samples uniformly): neighbouring frames of
#   a fixed camera are near copies; what the Gaussians need is the *variety* of normal activity
#   (people at every place they walk), not the count.
# - **More frames trade sensitivity for fewer false alarms where normal things move.** Each position's
#   Gaussian must cover all the normal activity seen there, so busy places (the path) become less
#   sensitive, while with too few frames a walker where none was seen is flagged. Start with a few dozen
#   frames per video, add frames while the scores of held-out normal frames keep falling, and check the
#   result on a labelled clip.

# %% [markdown]
# ## Summary
# - On video, PaDiM treats frames as independent images: one model per fixed camera, fitted on frames of
#   normal training videos (resize 256, no crop in the paper).
# - Frame-level AUROC scores each frame by the maximum of its map; pixel-level AUROC scores every pixel.
# - Nothing in PaDiM uses time: motion is only "seen" through what it changes in one frame.
# - More training frames are not always better: a static background's Gaussians are only as wide as the video
#   codec's noise, and normal activity widens the Gaussians where it happens. Train on frames stored as the
#   test frames are (`train_codec="match"`, the default) and spread over every video.
#
# **Next:** 08 lets you change each of PaDiM's choices with sliders and see the effect.
