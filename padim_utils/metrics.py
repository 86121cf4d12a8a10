"""Evaluation metrics for anomaly detection, exactly as MVTec AD defines them.

Image level (one score per image, label 1 = anomalous):

* :func:`image_auroc` - area under the ROC curve.
* :func:`f1_max`, :func:`f1_at`, :func:`threshold_from_normal` - F1 score at
  the best threshold, at a given threshold, and a threshold chosen from
  held-out good images only (no test labels).

Pixel level (masks ``(N, H, W)`` bool or 0/1, maps ``(N, H, W)`` float):

* :func:`pixel_auroc` - ROC AUC over every pixel of the set.
* :func:`pro_at` - one point of the PRO curve, region by region (to learn
  what the curve is made of).
* :func:`pro_curve`, :func:`aupro` - the PRO curve and the normalised area
  under it up to a false-positive-rate limit (default 0.3).
* :func:`evaluate` - all of the above in one call (one sort of the pixels).

Higher scores mean "more anomalous"; a pixel or image is predicted anomalous
at threshold ``t`` when its score is ``>= t``.

Conventions (the ones of the official MVTec AD evaluation script,
``generic_util.compute_pro`` and ``generic_util.trapezoid``)
-----------------------------------------------------------------------------
* Ground-truth regions are the **8-connected** components of each mask
  (``scipy.ndimage.label`` with a 3x3 block of ones); a region never spans two
  images. Two defect pixels that touch only at a corner are one region.
* At threshold ``t`` a region's overlap is the fraction of its pixels with
  score ``>= t``. The PRO value is the **mean over all regions of the whole
  set**, not a mean of per-image means. Images without defects contribute
  only defect-free pixels.
* The FPR at ``t`` is the fraction of **all defect-free pixels of the set**
  (good images included) with score ``>= t``.
* The curve is exact: one point per distinct score value, taken in
  decreasing order, after all pixels tied at that value were added, preceded
  by the point ``(0, 0)`` (threshold above the maximum). There is no binning.
  It ends at ``(1, 1)``.
* The area is the trapezoid rule along that polyline up to ``fpr_limit``;
  when the limit falls between two curve points the curve is linearly
  interpolated between them. The area is then divided by ``fpr_limit``, so a
  perfect localisation scores 1.
* The only intended difference from the official script: it stores the FPR
  in float32 (values can differ in the 7th digit), this module keeps float64
  throughout and counts pixels in integers.

ROC AUC follows ``sklearn.metrics.roc_auc_score``: ties are one step of the
ROC curve, i.e. a tied positive/negative pair counts one half. It is computed
as the Mann-Whitney statistic from integer counts, so it is exact up to the
final division.

How it stays fast (113 M pixels in a few seconds on two CPU cores)
------------------------------------------------------------------
One sort of all pixel scores (numpy uses SIMD sorting) serves every pixel
metric. Defect pixels are few: they are sorted on their own, and for each
distinct defect score ``u`` two binary searches in the sorted set give the
number of defect-free pixels below ``u`` and at or below ``u``. Between two
consecutive defect scores only defect-free pixels change, so the PRO curve is
flat there and the corner points ``(#neg > u, PRO above u)`` and
``(#neg >= u, PRO at u)`` describe the same polyline as the full curve; the
AU-PRO is integrated on these ``2 * distinct defect scores + 2`` points.
:func:`pro_curve` returns the full curve (one point per distinct score), which
needs several arrays as long as the pixel set.

numpy arrays and torch tensors are accepted. CUDA tensors are processed with
torch operations on their device; only the labelling of connected components
runs on the CPU (the masks are copied there). Tensors on the CPU (or another
device) are converted to numpy, without a copy where possible: numpy's SIMD
sort is about ten times faster than torch's CPU sort. Scores keep their dtype
(float64 maps are ranked in float64); float16 and bfloat16 are widened to
float32, integers are ranked exactly. `metric_inputs` checks and converts the inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .metric_inputs import NumpyOps, as_numpy, check_limit, image_inputs, pixel_inputs, scores_dtype

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "f1_max",
    "f1_at",
    "threshold_from_normal",
    "pro_curve",
    "pro_at",
    "aupro",
    "evaluate",
    "METRIC_LABELS",
]

#: How tables and figures name each metric: the one spelling of every label.
METRIC_LABELS = {"image_auroc": "image AUROC", "image_f1": "image F1", "pixel_auroc": "pixel AUROC",
                 "pixel_aupro": "AU-PRO (FPR 0.3)", "frame_auroc": "frame AUROC"}

# 3x3 block of ones: 8-connectivity, as in the official evaluation script.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------
# the shared core: one sort, then counts per distinct defect score
# ---------------------------------------------------------------------------


def _label_regions(masks_np):
    """8-connected defect regions, numbered over the whole set.

    Returns ``(region, n_regions)``: ``region`` ``(P,)`` int64 gives for each
    defect pixel, in C order over ``(N, H, W)``, its region in
    ``0..n_regions-1`` (the same order as ``maps[masks]``).
    """
    parts, n_regions = [], 0
    for i in np.flatnonzero(masks_np.any(axis=(1, 2))):
        labelled, k = ndimage.label(masks_np[i], structure=_EIGHT_CONNECTED)  # (H, W)
        parts.append(labelled[masks_np[i]].astype(np.int64) + (n_regions - 1))
        n_regions += k
    return np.concatenate(parts), n_regions


class _Sorted(NamedTuple):
    ops: object
    all_sorted: object  # (n,) every pixel score, ascending
    pos: object  # (P,) defect-pixel scores, ascending
    weight: object  # (P,) float64 1 / |region| per defect pixel (or None)
    n_pos: int
    n_neg: int
    n_regions: int
    n_images: int


def _sort_pixels(masks, maps, regions):
    """Validate, sort all scores once, and sort the defect pixels with weights."""
    ops, masks, maps, masks_np = pixel_inputs(masks, maps)
    all_sorted = ops.sort(maps.reshape(-1))  # (n,) the one big sort
    lo, hi = float(all_sorted[0]), float(all_sorted[-1])  # NaN sorts last
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("maps contain NaN or infinite values")
    pos = maps[masks]  # (P,) defect-pixel scores, C order
    n_pos = int(pos.shape[0])
    n_neg = int(all_sorted.shape[0]) - n_pos
    if n_pos == 0:
        raise ValueError("masks contain no defect pixel: pixel AUROC and AU-PRO are undefined")
    if n_neg == 0:
        raise ValueError("masks contain no defect-free pixel: the false positive rate is undefined")
    weight, n_regions = None, 0
    if regions:
        region, n_regions = _label_regions(masks_np)  # (P,)
        weight = ops.from_numpy((1.0 / np.bincount(region))[region])  # (P,) 1/|region|
        order = ops.argsort(pos)
        pos, weight = pos[order], weight[order]
    else:
        pos = ops.sort(pos)
    return _Sorted(ops, all_sorted, pos, weight, n_pos, n_neg, n_regions, int(maps.shape[0]))


class _Counts(NamedTuple):
    """Per distinct defect score ``u`` (ascending), all numpy ``(k,)``."""

    n_at: np.ndarray  # defect pixels with score == u
    neg_below: np.ndarray  # defect-free pixels with score < u
    neg_upto: np.ndarray  # defect-free pixels with score <= u
    w_above: np.ndarray  # sum of 1/|region| over defect pixels with score > u
    w_from: np.ndarray  # ... with score >= u


def _counts(s: _Sorted) -> _Counts:
    ops = s.ops
    values, starts, ends = ops.runs(s.pos)  # (k,) distinct defect scores
    # starts = #defect pixels < u, ends = #defect pixels <= u
    neg_below = ops.searchsorted(s.all_sorted, values) - starts
    neg_upto = ops.searchsorted(s.all_sorted, values, right=True) - ends
    w_above = w_from = None
    if s.weight is not None:
        suffix = ops.suffix_sum(s.weight)  # (P+1,)
        w_above, w_from = ops.to_numpy(suffix[ends]), ops.to_numpy(suffix[starts])
    n_at = ops.to_numpy(ends - starts)
    return _Counts(n_at, ops.to_numpy(neg_below), ops.to_numpy(neg_upto), w_above, w_from)


def _auroc_from_counts(c: _Counts, n_pos, n_neg):
    """Mann-Whitney: P(score_pos > score_neg) + P(tie) / 2, from integer counts."""
    twice_u = int(np.sum(c.n_at.astype(np.int64) * (c.neg_below + c.neg_upto)))
    return twice_u / (2 * n_pos * n_neg)  # Python ints: one correctly rounded division


def _corner_pro_curve(c: _Counts, n_neg, n_regions):
    """The PRO polyline through its corners only, ``(fpr, pro)`` ``(2k+2,)``.

    For each distinct defect score u, from the highest down: the point just
    before u's pixels are added, ``(#neg > u, PRO above u)``, and the point
    after, ``(#neg >= u, PRO at u)``. Between them the full curve only moves
    horizontally, so the polyline is the same as :func:`pro_curve`'s.
    """
    k = c.n_at.shape[0]
    fpr = np.empty(2 * k + 2)
    pro = np.empty(2 * k + 2)
    fpr[0] = pro[0] = 0.0
    fpr[1:-1:2] = (n_neg - c.neg_upto)[::-1] / n_neg
    fpr[2:-1:2] = (n_neg - c.neg_below)[::-1] / n_neg
    pro[1:-1:2] = c.w_above[::-1] / n_regions
    pro[2:-1:2] = c.w_from[::-1] / n_regions
    np.minimum(pro, 1.0, out=pro)  # rounding of the weight sums
    fpr[-1] = pro[-1] = 1.0
    return fpr, pro


def _area_to_limit(fpr, pro, limit):
    """Trapezoid area under the polyline for fpr in [0, limit], divided by limit.

    ``fpr`` is non-decreasing and starts at 0; a limit between two points
    interpolates linearly between them (official ``trapezoid`` semantics).
    """
    j = int(np.searchsorted(fpr, limit, side="right"))  # fpr[:j] <= limit
    x, y = fpr[:j], pro[:j]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]))) / 2.0
    if j < fpr.shape[0] and x[-1] < limit:  # limit lies inside segment j-1 -> j
        x0, y0, x1, y1 = fpr[j - 1], pro[j - 1], fpr[j], pro[j]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_limit) / 2.0
    return float(area / limit)


# ---------------------------------------------------------------------------
# public API: pixel level
# ---------------------------------------------------------------------------


def pixel_auroc(masks, maps) -> float:
    """ROC AUC over every pixel of the set.

    Parameters
    ----------
    masks : array or tensor, shape (N, H, W)
        Ground truth, bool or 0/1 (1 = defect).
    maps : array or tensor, shape (N, H, W)
        Anomaly scores, finite.

    Returns
    -------
    float
        Equal to ``sklearn.metrics.roc_auc_score(masks.ravel(), maps.ravel())``
        (ties count one half), computed exactly from integer counts.

    Raises
    ------
    ValueError
        Bad shape or dtype, NaN/inf scores, or no defect or no defect-free pixel.
    """
    s = _sort_pixels(masks, maps, regions=False)
    return _auroc_from_counts(_counts(s), s.n_pos, s.n_neg)


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit``.

    Parameters
    ----------
    masks : array or tensor, shape (N, H, W)
        Ground truth, bool or 0/1. Regions are its 8-connected components.
    maps : array or tensor, shape (N, H, W)
        Anomaly scores, finite.
    fpr_limit : float, default 0.3
        Upper integration limit in (0, 1].

    Returns
    -------
    float
        Area under the exact PRO curve (see the module docstring) for FPR in
        ``[0, fpr_limit]`` divided by ``fpr_limit``; in [0, 1].

    Raises
    ------
    ValueError
        Bad shape or dtype, NaN/inf scores, a bad ``fpr_limit``, no defect
        region in the set, or no defect-free pixel.
    """
    limit = check_limit(fpr_limit)
    s = _sort_pixels(masks, maps, regions=True)
    fpr, pro = _corner_pro_curve(_counts(s), s.n_neg, s.n_regions)
    return _area_to_limit(fpr, pro, limit)


def pro_curve(masks, maps):
    """The exact PRO curve: one point per distinct score value.

    Parameters
    ----------
    masks, maps : array or tensor, shape (N, H, W)
        As for :func:`aupro`.

    Returns
    -------
    fpr, pro : numpy.ndarray, float64, shape (M + 1,)
        ``M`` is the number of distinct scores. Point 0 is ``(0, 0)``
        (threshold above every score); point ``i`` is the (FPR, PRO) after
        all pixels with the ``i``-th largest distinct score were added. ``fpr``
        is non-decreasing and the last point is ``(1, 1)``.

    Notes
    -----
    Needs several arrays as long as the pixel set (about 30 bytes per pixel);
    :func:`aupro` does not build this curve.
    """
    s = _sort_pixels(masks, maps, regions=True)
    ops = s.ops
    values, starts, _ = ops.runs(s.all_sorted)  # (M,) every distinct score, ascending
    pos_below = ops.searchsorted(s.pos, values)  # (M,) defect pixels < v
    n = s.n_pos + s.n_neg
    neg_from = (n - starts) - (s.n_pos - pos_below)  # (M,) defect-free pixels >= v
    w_from = ops.suffix_sum(s.weight)[pos_below]  # (M,) sum of 1/|region| over defect pixels >= v
    fpr = np.concatenate(([0.0], ops.to_numpy(neg_from)[::-1] / s.n_neg))
    pro = np.concatenate(([0.0], ops.to_numpy(w_from)[::-1] / s.n_regions))
    np.minimum(pro, 1.0, out=pro)
    fpr[-1] = pro[-1] = 1.0
    return fpr, pro


class ProPoint(NamedTuple):
    """One point of the PRO curve, with the overlaps it averages."""

    threshold: float
    fpr: float  # defect-free pixels with score >= threshold / all defect-free pixels
    pro: float  # mean of `overlaps`
    overlaps: np.ndarray  # (R,) per region: its pixels with score >= threshold / its size
    region_image: np.ndarray  # (R,) index of the image each region lies in


def pro_at(masks, maps, threshold: float) -> ProPoint:
    """The PRO curve at one threshold, spelled out region by region.

    Straight from the definition: label the 8-connected regions of each mask,
    count for each region the fraction of its pixels scoring ``>= threshold``,
    average these overlaps over all regions of the set; the FPR is the
    fraction of all defect-free pixels scoring ``>= threshold``. Slow on large
    sets (one pass per region) but easy to read; :func:`pro_curve` computes
    every threshold at once and passes through these points.
    """
    _, masks_b, maps_f, _ = pixel_inputs(masks, maps)
    masks_b, maps_f = np.asarray(masks_b), np.asarray(maps_f)
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    above = maps_f >= threshold  # (N, H, W)
    normal = ~masks_b
    if not normal.any():
        raise ValueError("masks hold no defect-free pixel: the FPR is undefined")
    overlaps, images = [], []
    for i in range(masks_b.shape[0]):
        labels, n = ndimage.label(masks_b[i], structure=_EIGHT_CONNECTED)  # (H, W) region ids 1..n
        for r in range(1, n + 1):
            region = labels == r
            overlaps.append(above[i][region].mean())
            images.append(i)
    if not overlaps:
        raise ValueError("masks hold no defect region: PRO is undefined")
    overlaps = np.asarray(overlaps, dtype=np.float64)
    fpr = float(above[normal].sum()) / float(normal.sum())
    return ProPoint(threshold, fpr, float(overlaps.mean()), overlaps, np.asarray(images))


# ---------------------------------------------------------------------------
# public API: image level
# ---------------------------------------------------------------------------


def image_auroc(labels, scores) -> float:
    """ROC AUC of image scores, equal to ``sklearn.metrics.roc_auc_score``.

    Parameters
    ----------
    labels : array or tensor, shape (N,)
        1 (or True) = anomalous image, 0 = good.
    scores : array or tensor, shape (N,)
        Finite image anomaly scores.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Bad shape/dtype, NaN/inf, or only one class present.

    Examples
    --------
    Two good images (0.1, 0.4) and two defective ones (0.35, 0.8): of the 2 x 2 (defective, good) pairs,
    three rank the defective image higher, so the AUROC is 3 / 4; a tie counts one half:

    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), (1 + 0 + 1 + 1) / 4
    (0.75, 0.75)
    >>> image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.8]), (1 + 0.5 + 1 + 1) / 4
    (0.875, 0.875)
    """
    labels, scores = image_inputs(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels hold only one class: ROC AUC is undefined")
    ops = NumpyOps()
    s = _Sorted(ops, np.sort(scores), np.sort(scores[labels]), None, n_pos, n_neg, 0, len(scores))
    return _auroc_from_counts(_counts(s), n_pos, n_neg)


def f1_max(labels, scores):
    """Best F1 over all thresholds.

    Every distinct score ``t`` is tried as threshold (anomalous when
    ``score >= t``); ``F1 = 2 TP / (2 TP + FP + FN)``.

    Parameters
    ----------
    labels, scores : array or tensor, shape (N,)
        As for :func:`image_auroc`; at least one anomalous label.

    Returns
    -------
    (f1, threshold) : (float, float)
        The best F1 and the lowest threshold reaching it (the threshold
        ``argmax`` picks on scikit-learn's or anomalib's increasing curve).
    """
    labels, scores = image_inputs(labels, scores)
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError("labels hold no anomalous image: F1 is undefined")
    ops = NumpyOps()
    values, starts, _ = ops.runs(np.sort(scores))  # (k,) candidate thresholds, ascending
    predicted = scores.shape[0] - starts  # (k,) images with score >= t
    tp = n_pos - np.searchsorted(np.sort(scores[labels]), values)  # (k,)
    f1 = 2.0 * tp / (predicted + n_pos)
    best = int(np.argmax(f1))  # first maximum = lowest threshold
    return float(f1[best]), float(values[best])


def f1_at(labels, scores, threshold: float) -> float:
    """F1 when images with ``score >= threshold`` are called anomalous.

    Parameters
    ----------
    labels, scores : array or tensor, shape (N,)
        As for :func:`image_auroc`; at least one anomalous label.
    threshold : float

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)``; 0 when nothing is predicted anomalous.
    """
    labels, scores = image_inputs(labels, scores)
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError("labels hold no anomalous image: F1 is undefined")
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    return 2.0 * tp / (int(predicted.sum()) + n_pos)


def threshold_from_normal(normal_scores, max_fpr: float = 0.01) -> float:
    """A threshold chosen from held-out good images only (no test labels).

    Pass the scores of defect-free images that the model did not see in
    training (e.g. a held-out part of the ``train/good`` folder): image scores
    for an image threshold, or whole maps (any shape) for a pixel threshold.
    The result is the lowest threshold ``t`` for which at most
    ``floor(max_fpr * n)`` of these ``n`` scores satisfy ``score >= t``, so the
    false positive rate on the held-out good scores is at most ``max_fpr``.
    With ``max_fpr * n < 1`` this is the next float above the highest score.

    Parameters
    ----------
    normal_scores : array or tensor, any shape
        Finite scores of good images.
    max_fpr : float, default 0.01
        Allowed false positive rate on these scores, in [0, 1).

    Returns
    -------
    float
        Threshold to use as ``score >= threshold`` (e.g. with :func:`f1_at`).
    """
    a = scores_dtype(as_numpy(normal_scores, "normal_scores")).reshape(-1)
    if a.shape[0] == 0:
        raise ValueError("normal_scores is empty")
    if not np.isfinite(a).all():
        raise ValueError("normal_scores contain NaN or infinite values")
    if not 0.0 <= float(max_fpr) < 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1), got {max_fpr!r}")
    a = np.sort(a)
    n = a.shape[0]
    allowed = min(n, math.floor(float(max_fpr) * n + 1e-9))  # tolerate 0.29 * 100 = 28.999...
    if allowed > 0:
        t = a[n - allowed]  # allowed-th largest score
        if n - np.searchsorted(a, t) <= allowed:  # ties do not push the count over
            return float(t)
        nxt = np.searchsorted(a, t, side="right")  # next larger distinct score
        if nxt < n:
            return float(a[nxt])
    return float(np.nextafter(a[-1], np.inf))  # above every score, in the scores' dtype


# ---------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------


def evaluate(labels, scores, masks, maps, fpr_limit: float = 0.3) -> dict:
    """Image and pixel metrics of a test set in one call.

    The pixel scores are sorted once for both pixel metrics.

    Parameters
    ----------
    labels, scores : array or tensor, shape (N,)
        Image labels (1 = anomalous) and image scores.
    masks, maps : array or tensor, shape (N, H, W)
        Ground-truth masks and anomaly maps of the same N images.
    fpr_limit : float, default 0.3
        Integration limit of the AU-PRO.

    Returns
    -------
    dict
        ``image_auroc``, ``image_f1`` (best F1), ``image_f1_threshold``,
        ``pixel_auroc``, ``pixel_aupro``, all floats.

    Raises
    ------
    ValueError
        As the single metrics; in particular a set without any defect pixel
        has no pixel metrics and raises.
    """
    limit = check_limit(fpr_limit)
    f1, threshold = f1_max(labels, scores)
    result = {"image_auroc": image_auroc(labels, scores), "image_f1": f1, "image_f1_threshold": threshold}
    s = _sort_pixels(masks, maps, regions=True)
    if s.n_images != len(scores):
        raise ValueError(f"{len(scores)} image scores but {s.n_images} maps")
    c = _counts(s)
    result["pixel_auroc"] = _auroc_from_counts(c, s.n_pos, s.n_neg)
    result["pixel_aupro"] = _area_to_limit(*_corner_pro_curve(c, s.n_neg, s.n_regions), limit)
    return result
