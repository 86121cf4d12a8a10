"""Figures: heat-map overlays, example grids and score histograms.

Every figure of the course and of the command line is made by a function here,
so notebooks stay short and the pictures are the same everywhere. Functions
return a matplotlib Figure (or an RGB array) and never call `plt.show()`.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
from matplotlib.ticker import NullLocator

from .files import atomic_path
from .metrics import METRIC_LABELS
from .paper import paper_value

#: One colour map for every anomaly map of the course (low = blue, high = red).
ANOMALY_CMAP = "jet"


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc(image) -> np.ndarray:
    """uint8 image (3, H, W) or (H, W, 3), tensor or array -> (H, W, 3) uint8 array."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    return img


def overlay(image, amap, vmin: float | None = None, vmax: float | None = None, alpha: float = 0.5,
            cmap: str = ANOMALY_CMAP) -> np.ndarray:
    """Blend an anomaly map (H, W) over an image: returns (H, W, 3) float in [0, 1]."""
    img = to_hwc(image).astype(np.float32) / 255.0
    m = _np(amap).astype(np.float32)
    lo = float(m.min()) if vmin is None else vmin
    hi = float(m.max()) if vmax is None else vmax
    norm = np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1)
    heat = plt.get_cmap(cmap)(norm)[..., :3]
    return (1 - alpha) * img + alpha * heat


def save_overlay(path, image, amap, vmin=None, vmax=None) -> None:
    """Write `overlay(...)` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        plt.imsave(tmp, overlay(image, amap, vmin, vmax), format="png")


def plot_examples(images, masks, maps, scores=None, labels=None, titles=None, vmin=None, vmax=None,
                  title: str | None = None):
    """One column per example: the image, its ground-truth mask (if any) and the heat map.

    All heat maps share one colour scale (vmin/vmax, default: over the shown maps),
    so a brighter map really means a more anomalous image.
    """
    maps = [_np(m) for m in maps]
    n = len(maps)
    vmin = min(float(m.min()) for m in maps) if vmin is None else vmin
    vmax = max(float(m.max()) for m in maps) if vmax is None else vmax
    rows = 3 if masks is not None else 2
    fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.2 * rows), squeeze=False)
    for i in range(n):
        img = to_hwc(images[i])
        axes[0, i].imshow(img)
        caption = titles[i] if titles is not None else ""
        if scores is not None:
            caption += f"\nscore {float(scores[i]):.2f}"
        if labels is not None:
            caption += " (defect)" if int(labels[i]) == 1 else " (good)"
        axes[0, i].set_title(caption.strip(), fontsize=8)
        if masks is not None:
            axes[1, i].imshow(_np(masks[i]), cmap="gray", vmin=0, vmax=1)
        axes[rows - 1, i].imshow(overlay(img, maps[i], vmin, vmax))
        if masks is not None and _np(masks[i]).any():
            axes[rows - 1, i].contour(_np(masks[i]), levels=[0.5], colors="white", linewidths=0.8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("image")
    if masks is not None:
        axes[1, 0].set_ylabel("ground truth")
    axes[rows - 1, 0].set_ylabel("anomaly map")
    if title:
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    else:
        fig.tight_layout()
    return fig


def plot_score_histogram(scores, labels, threshold: float | None = None, title: str = ""):
    """Image scores of good vs defective test images, the picture behind image AUROC."""
    s, y = _np(scores).astype(float), _np(labels).astype(int)
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(s.min(), s.max(), 30)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="good")
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label="defect")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set_xlabel("image score (max of the anomaly map)")
    ax.set_ylabel("images")
    ax.set_title(title or "image scores, good vs defective")
    ax.legend()
    fig.tight_layout()
    return fig


def pick_examples(scores, labels, n: int = 6) -> list[int]:
    """Indices worth showing: the most and least anomalous defects and goods."""
    s, y = _np(scores), _np(labels)
    order = np.argsort(-s)
    bad = [i for i in order if y[i] == 1]
    good = [i for i in order if y[i] == 0]
    k = max(n // 2, 1)
    picks = bad[: (k + 1) // 2] + bad[::-1][: k // 2] + good[: (n - k + 1) // 2] + good[::-1][: (n - k) // 2]
    seen, out = set(), []
    for i in picks + list(order):
        if int(i) not in seen:
            seen.add(int(i))
            out.append(int(i))
        if len(out) == n:
            break
    return out


def save_figure(fig, path, dpi: int = 110) -> None:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


# ------------------------------------------------------------------ course figures
def _legend_beside(ax, fontsize: int = 8) -> None:
    """The axes' legend to their right, top-aligned: beside the curves and bars, it hides no plotted point."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _grid(n: int, ncols: int | None, size: float = 2.2, rows_per_item: int = 1):
    ncols = min(n, ncols or 6)
    nrows = -(-n // ncols) * rows_per_item
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_gallery(images, masks=None, titles=None, title: str = "", ncols: int | None = None):
    """Images in a grid; where a mask has defect pixels its outline is drawn in red (no anomaly maps needed)."""
    n = len(images)
    fig, axes = _grid(n, ncols)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(to_hwc(images[i]))
        if masks is not None and _np(masks[i]).any():
            ax.contour(_np(masks[i]), levels=[0.5], colors="red", linewidths=1.0)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.suptitle(title or "images (red outline: ground-truth defect)")
    fig.tight_layout()
    return fig


def plot_feature_maps(features, n: int = 8, title: str = "", channels=None):
    """The first `n` (or the listed) channels of one image's layer output (C, h, w), one panel each."""
    f = _np(features)
    channels = list(range(min(n, f.shape[0]))) if channels is None else list(channels)
    fig, axes = _grid(len(channels), min(len(channels), 8), size=1.6)
    for ax, c in zip(axes.flat, channels):
        im = ax.imshow(f[c], cmap="viridis")
        ax.set_title(f"channel {c}", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="activation (last panel)")
    fig.suptitle(title or f"feature maps {f.shape[1]}x{f.shape[2]}")
    return fig


def plot_maps(image, maps: dict, mask=None, title: str = "", shared_scale: bool = False):
    """One image and several anomaly maps of it side by side (e.g. with and without the blur), each with
    a colour bar; the ground truth outlined in white where given."""
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.0), squeeze=False)
    axes = axes[0]
    axes[0].imshow(to_hwc(image))
    axes[0].set_title("image", fontsize=9)
    values = [_np(m) for m in maps.values()]
    lo, hi = (min(v.min() for v in values), max(v.max() for v in values)) if shared_scale else (None, None)
    for ax, (name, m) in zip(axes[1:], zip(maps, values)):
        im = ax.imshow(m, cmap=ANOMALY_CMAP, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="anomaly score")
        ax.set_title(name, fontsize=9)
    if mask is not None and _np(mask).any():
        for ax in axes:
            ax.contour(_np(mask), levels=[0.5], colors="white", linewidths=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "anomaly maps")
    fig.tight_layout()
    return fig


def plot_lines(x, series: dict, xlabel: str, ylabel: str, title: str, reference: dict | None = None,
               logx: bool = False, logy: bool = False, ylim=None):
    """Curves y(x), one per entry of `series` (name -> y values); `reference` draws horizontal dashed lines
    (name -> value), e.g. the paper's numbers."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, y in series.items():
        ax.plot(list(x), [float(v) for v in _np(y)], marker="o", label=name)
    for i, (name, v) in enumerate((reference or {}).items()):
        if v is not None:
            ax.axhline(float(v), ls="--", lw=1, color=f"C{len(series) + i}", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:  # ticks at the x values themselves, written plainly (8, 16, 32, not 2x10^1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(list(x), [f"{float(v):g}" for v in x])
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    _legend_beside(ax)
    fig.tight_layout()
    if logx:  # close values (400 and 550 on a log axis) would print over each other: keep the first label
        fig.canvas.draw()
        labels, last = ax.get_xticklabels(), None
        for label in labels:
            box = label.get_window_extent()
            if last is not None and box.x0 < last.x1 + 2:
                label.set_text("")
            else:
                last = box
        ax.set_xticks(ax.get_xticks(), [label.get_text() for label in labels])
    return fig


def plot_roc_curves(curves: dict, title: str = "ROC curves"):
    """ROC curves from (labels, scores) pairs: name -> (labels, scores), AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (labels, scores) in curves.items():
        y, s = _np(labels).ravel().astype(int), _np(scores).ravel()
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_pro_curve(fpr, pro, limit: float = 0.3, title: str = "PRO curve", points=None, xmax: float | None = None):
    """The PRO curve with the area up to FPR = `limit` shaded (the AU-PRO before its division by `limit`);
    `points` marks (fpr, pro) pairs, e.g. from `metrics.pro_at`. The axes show FPR 0 to `xmax` (default:
    just past the last point, or past `limit` when there are no points or they reach it), where the curve
    is read; an inset shows the whole curve, FPR 0 to 1, with that window outlined."""
    fpr, pro = _np(fpr).astype(float), _np(pro).astype(float)
    points = list(points or [])
    if xmax is None:
        far = max([x for x, _ in points], default=limit)
        xmax = 1.1 * limit if far >= 0.5 * limit else 1.25 * far
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for a, whole in ((ax, False), (ax.inset_axes((0.58, 0.1, 0.38, 0.38)) if xmax < 1 else None, True)):
        if a is None:
            continue
        a.plot(fpr, pro, color="C0", label="PRO curve")
        keep = fpr <= limit
        a.fill_between(fpr[keep], pro[keep], alpha=0.25, color="C0", label=f"area up to FPR {limit}")
        a.axvline(limit, ls="--", color="k", lw=1)
        for i, (x, y) in enumerate(points):
            a.plot([x], [y], "o", color="C3", ms=4 if whole else 6, label="pro_at points" if i == 0 else None)
        a.set(xlim=(0, 1 if whole else xmax), ylim=(0, 1.01))
        if whole:
            a.set_title("whole curve, FPR 0-1", fontsize=7)
            a.tick_params(labelsize=6)
            a.axvspan(0, xmax, color="C1", alpha=0.15)  # the window the main axes show
    ax.set(xlabel="false positive rate (defect-free pixels)", ylabel="per-region overlap (PRO)", title=title)
    _legend_beside(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_spectra(spectra: dict, title: str = "eigenvalue spectra"):
    """Sorted eigenvalues (largest first) on a log scale, one curve per entry (name -> eigenvalues)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, ev in spectra.items():
        v = np.sort(_np(ev))[::-1]
        ax.plot(np.arange(1, len(v) + 1), np.clip(v, 1e-12, None), label=name)
    ax.set_yscale("log")
    ax.set(xlabel="eigenvalue rank", ylabel="eigenvalue (log scale)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ chapters 01-03 (embeddings, reduction)
def plot_upsampling(panels: dict, image_size: int, title: str = "nearest upsampling",
                    label: str = "activation"):
    """2-D maps of different grid sizes drawn over the same image extent (x, y in pixels), one panel each
    (name -> (h, w) array), with one shared colour bar: how a coarse layer's cells are copied onto the
    finest grid by nearest upsampling."""
    values = [_np(v).astype(float) for v in panels.values()]
    lo, hi = min(v.min() for v in values), max(v.max() for v in values)
    fig, axes = plt.subplots(1, len(values), figsize=(3.5 * len(values) + 0.8, 3.3), squeeze=False)
    for ax, (name, v) in zip(axes[0], zip(panels, values)):
        im = ax.imshow(v, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest",
                       extent=(0, image_size, image_size, 0))
        ax.set_title(f"{name}\n{v.shape[0]}x{v.shape[1]} cells", fontsize=9)
        ax.set(xlabel="x (px)", ylabel="y (px)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label=label)
    fig.suptitle(title)
    return fig


def plot_channel_layout(channels, names, picked=None, title: str = "channels of the embedding"):
    """The embedding's channels as one bar split into the layers they come from (name, count each);
    `picked` (channel indices, e.g. a random subset) are marked as ticks above the bar."""
    channels = [int(c) for c in channels]
    fig, ax = plt.subplots(figsize=(8, 1.9 if picked is None else 2.3))
    start = 0
    for i, (name, c) in enumerate(zip(names, channels)):
        ax.barh(0, c, left=start, height=0.6, color=f"C{i}", alpha=0.75, edgecolor="k")
        ax.text(start + c / 2, 0, f"{name}\n{c} ch", ha="center", va="center", fontsize=8)
        start += c
    if picked is not None:
        ax.vlines(_np(picked), 0.4, 0.7, color="k", lw=0.8, label=f"{len(_np(picked))} picked channels")
        ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1, 1.45))
    ax.set(xlim=(0, start), ylim=(-0.4, 0.4 if picked is None else 0.8), xlabel="channel index in the embedding",
           title=title)
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_category_metrics(records, metrics=("image_auroc", "pixel_auroc", "pixel_aupro"), paper_model=None,
                          title: str = "results per category"):
    """Grouped bars of benchmark records (one group per category, one bar per metric), with the paper's
    published value of `paper_model` (e.g. "PaDiM-WR50-Rd550") as a black tick where one exists."""
    cats = [r["category"] for r in records]
    x = np.arange(len(cats))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(cats) * len(metrics) / 2 + 2) + 2.2, 3.8))
    shown_paper = False
    for j, m in enumerate(metrics):
        xs = x - 0.4 + width * (j + 0.5)
        values = [float(r[m]) for r in records]
        bars = ax.bar(xs, values, width, label=METRIC_LABELS.get(m, m), color=f"C{j}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, label_type="center", color="white")  # clear of the paper's ticks
        if paper_model is not None:
            for xi, c in zip(xs, cats):
                v = paper_value(paper_model, c, m)
                if v is not None:
                    ax.plot([xi - width / 2, xi + width / 2], [v, v], color="k", lw=2,
                            label=f"paper ({paper_model})" if not shown_paper else None)
                    shown_paper = True
    lo = min(min(float(r[m]) for r in records) for m in metrics)
    ax.set_ylim(max(0.0, min(0.5, lo - 0.05)), 1.05)
    ax.set_xticks(x, cats)
    ax.set(xlabel="category", ylabel="metric value (1 = perfect)", title=title)
    ax.grid(axis="y", alpha=0.3)
    _legend_beside(ax)
    fig.tight_layout()
    return fig


def plot_frame_scores(scores, labels, clips=None, threshold: float | None = None, title: str = "frame scores"):
    """A video's frame scores over time, anomalous frames shaded; `clips` (one name per frame) draws a line
    where a clip ends and another begins."""
    s, y = _np(scores).astype(float), _np(labels).astype(int)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    t = np.arange(len(s))
    ax.fill_between(t, s.min(), s.max(), where=y == 1, step="mid", color="C3", alpha=0.2,
                    label="anomalous frames (ground truth)")
    ax.plot(t, s, color="C0", lw=1.2, label="frame score (max of the map)")
    if clips is not None:
        for i in range(1, len(clips)):
            if clips[i] != clips[i - 1]:
                ax.axvline(i - 0.5, color="gray", lw=0.8, ls=":")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="test frame (clips one after another)", ylabel="anomaly score", title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)  # off the curve
    fig.tight_layout()
    return fig


#: How `plot_training_frames` names each STC `train_codec`.
CODEC_LABELS = {"none": "frames as decoded", "match": "matched to the test JPEGs"}


def plot_training_frames(rows, title: str = "more training frames: where the scores go"):
    """Why more normal video frames can make PaDiM blinder (chapter 07), from rows as
    `padim_utils.experiments.stc.frames_study` returns them. Left: the median anomaly score of a static
    background and of the anomaly against the number of training frames (log scale); right: frame AUROC
    and AU-PRO. One line style per `train_codec` (solid the first one met, dashed the next)."""
    codecs = list(dict.fromkeys(r["train_codec"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 5.0))
    for j, codec in enumerate(codecs):
        rs = sorted((r for r in rows if r["train_codec"] == codec), key=lambda r: r["train_frames"])
        x, ls, name = [r["train_frames"] for r in rs], "-" if j == 0 else "--", CODEC_LABELS.get(codec, codec)
        left.plot(x, [r["background_median"] for r in rs], ls, marker="o", color="C0",
                  label=f"static background, {name}")
        left.plot(x, [r["cart_median"] for r in rs], ls, marker="s", color="C3", label=f"anomaly, {name}")
        right.plot(x, [r["frame_auroc"] for r in rs], ls, marker="o", color="C2", label=f"frame AUROC, {name}")
        right.plot(x, [r["aupro"] for r in rs], ls, marker="s", color="C1", label=f"AU-PRO, {name}")
    left.set(xlabel="training frames", ylabel="median anomaly score (log scale)", yscale="log",
             title="scores of the background and of the anomaly")
    right.set(xlabel="training frames", ylabel="metric (1 = perfect, 0.5 = chance)", ylim=(0.45, 1.02),
              title="frame AUROC and AU-PRO")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17))  # under the axes: it hides no point
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_overlays(images, masks, maps, scores=None, labels=None, titles=None, title: str = "",
                  vmin: float | None = None, vmax: float | None = None, label: str = "anomaly score"):
    """`plot_examples` (image, ground truth, heat map per column) with a title and one colour bar for the
    heat maps: they share one scale (vmin/vmax, default: over the shown maps), drawn with ANOMALY_CMAP."""
    maps = [_np(m) for m in maps]
    vmin = min(float(m.min()) for m in maps) if vmin is None else vmin
    vmax = max(float(m.max()) for m in maps) if vmax is None else vmax
    fig = plot_examples(images, masks, maps, scores=scores, labels=labels, titles=titles, vmin=vmin, vmax=vmax)
    fig.suptitle(title or "anomaly maps (white outline: ground-truth defect)")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bottom = fig.axes[-1].get_position()  # the last heat map: the colour bar sits beside the map row
    cax = fig.add_axes((0.915, bottom.y0, 0.015, bottom.height))
    sm = plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=ANOMALY_CMAP)
    fig.colorbar(sm, cax=cax, label=label)
    return fig


def plot_ablation(rows, title: str = "ablation"):
    """Ablation rows (`ablations.result_row` / `ablations.sweep`): pixel AUROC and AU-PRO bars per setting,
    the paper's value for the closest setting ("paper pixel AUROC" / "paper PRO") as a black tick."""
    labels = [str(r.get("layers", r["setting"])) + ("" if r.get("reduction") is None else
              f"\n{r['reduction']}" + ("" if r.get("reduction") == "none" else f" d={r.get('d')}")) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 * len(rows) + 1.5) + 2.5, 3.8))
    shown = False
    for j, (key, ref) in enumerate((("pixel_auroc", "paper pixel AUROC"), ("pixel_aupro", "paper PRO"))):
        xs = x - 0.2 + 0.4 * j
        bars = ax.bar(xs, [float(r[key]) for r in rows], 0.4, label=f"ours: {METRIC_LABELS[key]}", color=f"C{j}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7, label_type="center", color="white")  # clear of the paper's ticks
        for xi, r in zip(xs, rows):
            if r.get(ref) is not None:
                ax.plot([xi - 0.2, xi + 0.2], [r[ref]] * 2, color="k", lw=2,
                        label="paper, closest setting (R18, all classes)" if not shown else None)
                shown = True
    lo = min(min(float(r["pixel_auroc"]), float(r["pixel_aupro"])) for r in rows)
    ax.set_ylim(max(0.0, min(0.5, lo - 0.1)), 1.08)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(xlabel="setting (hooked layers, reduction)", ylabel="metric value (1 = perfect)", title=title)
    ax.grid(axis="y", alpha=0.3)
    _legend_beside(ax, fontsize=7)
    fig.tight_layout()
    return fig


def _spread_label(table: dict) -> str:
    """What our bars' error bars are: SEM over seeds (over preprocessings in Table VI), or none for one run."""
    several = any((r["ours"].get(c["key"]) or {}).get("n", 0) > 1 for r in table["rows"] for c in table["columns"])
    if not several:
        return "ours (one run per row, no error bar)"
    return "ours (± SEM over random preprocessings)" if table["table"] == "VI" else "ours (± SEM over seeds)"


def _legend_below(fig, handles: dict, fontsize: int = 8) -> float:
    """A figure legend under the axes, in as many columns as fit the figure's width (never clipped);
    returns the fraction of the figure's height it takes."""
    ncol = len(handles)
    while True:
        legend = fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=ncol, fontsize=fontsize,
                            frameon=False)
        fig.canvas.draw()
        box = legend.get_window_extent()
        if box.width <= 0.98 * fig.bbox.width or ncol == 1:
            return box.height / fig.bbox.height + 0.01
        legend.remove()
        ncol -= 1


def plot_reproduced_table(table: dict):
    """One of `padim reproduce`'s tables (`experiments.tables`): per metric, our mean as bars (± SEM error bars
    where there are several seeds or preprocessings), the paper's published values as black markers beside
    each bar (one marker per paper model, never over our value's label); a log scale where values span more
    than two orders of magnitude (times, memory)."""
    cols, rows = table["columns"], table["rows"]
    names = [str(r["labels"][table["labels"][0]]) for r in rows]  # the first label column, if it tells rows apart
    xlabel = table["labels"][0]
    if len(set(names)) < len(names):
        names = [" / ".join(str(r["labels"][k]) for k in table["labels"]) for r in rows]
        xlabel = " / ".join(table["labels"])
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, len(cols), figsize=(max(5.0, 0.55 * len(rows) + 2.5) * len(cols), 4.8), squeeze=False)
    markers = ("D", "s", "^", "v")
    for ax, c in zip(axes[0], cols):
        stats = [r["ours"].get(c["key"]) or {} for r in rows]
        mean = [np.nan if s.get("mean") is None else s["mean"] for s in stats]
        sem = [0.0 if s.get("sem") is None else s["sem"] for s in stats]
        bars = ax.bar(x, mean, 0.5, yerr=sem if any(sem) else None, capsize=3, color="C0", label=_spread_label(table))
        ax.bar_label(bars, labels=["" if np.isnan(m) else format(m, c["fmt"]) for m in mean], fontsize=6, padding=2)
        for j, model in enumerate(table["paper_models"]):  # beside the bar (x + 0.32, + 0.40, ...), not over it
            pts = [(xi + 0.32 + 0.08 * j, p["value"]) for xi, r in zip(x, rows) for p in r["paper"]
                   if p["model"] == model and p["metric"] == c["key"] and p["value"] is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=markers[j % len(markers)], s=18, color="k", zorder=3,
                           label=f"paper: {model}")
        unit = f" ({c['unit']})" if c["unit"] else ""
        ax.set(title=c["name"], xlabel=xlabel, ylabel=f"{c['name']}{unit}")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        values = [v for v in mean if not np.isnan(v)] + [p["value"] for r in rows for p in r["paper"]
                                                        if p["metric"] == c["key"] and p["value"] is not None]
        positive = [v for v in values if v > 0]
        if c["unit"] == "" and values:  # a score in [0, 1]
            ax.set_ylim(max(0.0, min(values) - 0.1), 1.04)
        elif positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    handles = dict(sorted(handles.items(), key=lambda kv: not kv[0].startswith("ours")))  # ours first
    backbones = ", ".join(table["run"]["backbones"].values())
    width = int(fig.get_figwidth() * 12)  # characters of a 10 pt title line that fit the figure
    fig.suptitle("\n".join(textwrap.wrap(f"Table {table['table']}: {table['title']}", width)
                           + textwrap.wrap(f"ours: {backbones}", width)), fontsize=10)
    fig.tight_layout(rect=(0, _legend_below(fig, handles), 1, 1))
    return fig
