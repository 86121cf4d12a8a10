"""Figures: heat-map overlays, example grids and score histograms.

Every figure of the course and of the command line is made by a function here,
so notebooks stay short and the pictures are the same everywhere. Functions
return a matplotlib Figure (or an RGB array) and never call `plt.show()`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np

from .files import atomic_path


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
            cmap: str = "jet") -> np.ndarray:
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


def plot_examples(images, masks, maps, scores=None, labels=None, titles=None, vmin=None, vmax=None):
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
        title = titles[i] if titles is not None else ""
        if scores is not None:
            title += f"\nscore {float(scores[i]):.2f}"
        if labels is not None:
            title += " (defect)" if int(labels[i]) == 1 else " (good)"
        axes[0, i].set_title(title.strip(), fontsize=8)
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
    fig.tight_layout()
    return fig


def plot_score_histogram(scores, labels, threshold: float | None = None):
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
