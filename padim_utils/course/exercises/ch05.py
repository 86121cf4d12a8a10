"""Chapter 05: evaluation."""

import numpy as np
from sklearn.metrics import roc_auc_score

from . import exercise
from ._common import as_array, as_number, close, compare_number, tolerance


@exercise("5.1")
def auroc_by_pairs(answer, labels, scores):
    """Image AUROC, checked against scikit-learn's roc_auc_score."""
    y, s = as_array(labels).astype(int).ravel(), as_array(scores).ravel()
    expected = roc_auc_score(y, s)
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number (a float), got {type(answer).__name__}."
    bad, good = s[y == 1], s[y == 0]
    # float32's precision (or the answer's own dtype's), below the quarter of a pair's weight 1 / pairs
    tol = min(tolerance(answer), 0.25 / (len(bad) * len(good)))
    if close(a, 1 - expected, tol) and not close(a, expected, tol):
        return f"{a:.4f} is 1 - AUROC: count the pairs where the *defective* image scores higher."
    ties = (bad[:, None] == good[None, :]).sum() / (len(bad) * len(good))
    if ties and (close(a, expected - ties / 2, tol) or close(a, expected + ties / 2, tol)):
        return f"{a:.4f} counts the tied pairs as 0 or 1; a tie counts one half."
    return compare_number(a, expected, "the AUROC", tol=tol,
                          hint="over every (defective, good) pair count 1 when the defective image scores "
                               "higher, 1/2 for a tie, and divide by the number of pairs.")


def _regions(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected groups of nonzero pixels of one (H, W) mask, by a plain flood fill."""
    seen, regions = set(), []
    h, w = mask.shape
    for start in zip(*np.nonzero(mask)):
        if start in seen:
            continue
        seen.add(start)
        stack, region = [start], []
        while stack:
            r, c = stack.pop()
            region.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    q = (r + dr, c + dc)
                    if 0 <= q[0] < h and 0 <= q[1] < w and mask[q] and q not in seen:
                        seen.add(q)
                        stack.append(q)
        regions.append(region)
    return regions


@exercise("5.2")
def pro_at_one_threshold(answer, masks, maps, threshold):
    """PRO at `threshold`: the mean over 8-connected regions of the fraction of pixels scoring >= threshold."""
    m, a = as_array(masks) > 0, as_array(maps)
    overlaps = [np.mean([a[i][p] >= threshold for p in region]) for i in range(len(m)) for region in _regions(m[i])]
    expected = float(np.mean(overlaps))
    try:
        got = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number (a float), got {type(answer).__name__}."
    if close(got, expected, tolerance(answer)):
        return None
    if close(got, float((a[m] >= threshold).mean()), tolerance(answer)):
        return "that is the fraction of all defect pixels found; PRO averages the overlap of each *region*."
    return (f"the PRO is {got:.4f}, which is not right. Hint: average the overlaps of the {len(overlaps)} regions "
            "(8-connected: pixels touching at a corner belong to the same region).")
