"""Tests for padim_utils.metrics.

Oracles: scikit-learn for ROC AUC and F1, curves worked out by hand in the
comments below, and a slow reference PRO implementation written directly
from the definition (a loop over every distinct threshold, regions from
``skimage.measure.label(connectivity=2)``).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.measure import label as sk_label
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from padim_utils import metric_inputs
from padim_utils import metrics as M

# ---------------------------------------------------------------------------
# independent slow reference for the PRO curve
# ---------------------------------------------------------------------------


def reference_pro_curve(masks, maps):
    """PRO curve straight from the definition, one threshold at a time."""
    masks, maps = np.asarray(masks, bool), np.asarray(maps, np.float64)
    regions, negatives = [], []
    for mask, scores in zip(masks, maps):
        lab = sk_label(mask, connectivity=2, background=0)  # 8-connected
        regions += [scores[lab == r] for r in range(1, lab.max() + 1)]
        negatives.append(scores[~mask])
    negatives = np.concatenate(negatives)
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:  # every distinct score, high to low
        fpr.append(np.count_nonzero(negatives >= t) / negatives.size)
        pro.append(np.mean([np.count_nonzero(r >= t) / r.size for r in regions]))
    return np.array(fpr), np.array(pro)


def reference_area(fpr, pro, limit):
    """Trapezoids segment by segment, the last one cut at the limit."""
    area = 0.0
    for x0, y0, x1, y1 in zip(fpr[:-1], pro[:-1], fpr[1:], pro[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def reference_aupro(masks, maps, limit=0.3):
    return reference_area(*reference_pro_curve(masks, maps), limit)


def random_set(seed, n=4, h=9, w=11, levels=None, p_defect=0.25):
    """Random masks with blobs and maps (ties when `levels` is given)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < p_defect
    masks[0] = False  # one clean image
    masks[1, 2, 3] = True  # at least one defect
    if levels is None:
        maps = rng.random((n, h, w)).astype(np.float32) + masks * 0.4
    else:
        maps = (rng.integers(0, levels, (n, h, w)) + masks * rng.integers(0, 2, (n, h, w))).astype(np.float32)
    return masks, maps


@pytest.fixture
def torch_path(monkeypatch):
    """Run CPU tensors through the torch code path (as CUDA tensors would)."""
    monkeypatch.setattr(metric_inputs, "CPU_TENSORS_VIA_NUMPY", False)


# ---------------------------------------------------------------------------
# AU-PRO on hand-built cases
# ---------------------------------------------------------------------------


def test_two_regions_of_different_size_and_limit_between_points():
    # Region A = 2x2 block (scores 9 8 7 6), region B = one pixel (score 2,
    # tied with one defect-free pixel); 7 defect-free pixels 1 2 3 0 4 1 0.
    masks = np.array([[[1, 1, 0, 0],
                       [1, 1, 0, 1],
                       [0, 0, 0, 0]]], bool)
    maps = np.array([[[9, 8, 1, 2],
                      [7, 6, 3, 2],
                      [0, 4, 1, 0]]], np.float32)
    # threshold: 9      8      7      6     4     3     2     1     0
    # FPR:       0      0      0      0     1/7   2/7   3/7   5/7   1
    # PRO: (A+B)/2 with A = 1/4 .. 1, B = 0 until t = 2:
    #            1/8    1/4    3/8    1/2   1/2   1/2   1     1     1
    fpr, pro = M.pro_curve(masks, maps)
    expect_fpr = [0, 0, 0, 0, 0, 1 / 7, 2 / 7, 3 / 7, 5 / 7, 1]
    expect_pro = [0, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 1 / 2, 1 / 2, 1, 1, 1]
    np.testing.assert_allclose(fpr, expect_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pro, expect_pro, rtol=0, atol=1e-15)
    # Area to 0.3: PRO 1/2 on [0, 2/7] -> 1/7. The limit 0.3 = 2/7 + 1/70 lies
    # on the segment (2/7, 1/2) -> (3/7, 1) of slope 7/2, where the PRO is
    # 1/2 + 7/2 * 1/70 = 11/20; trapezoid 1/70 * (1/2 + 11/20) / 2 = 3/400.
    # (1/7 + 3/400) / 0.3 = 421/840.
    assert M.aupro(masks, maps) == pytest.approx(421 / 840, abs=1e-12)
    # Limit exactly on the point 2/7: area 1/7, normalised 1/2.
    assert M.aupro(masks, maps, fpr_limit=2 / 7) == pytest.approx(0.5, abs=1e-12)
    # Averaging pixels instead of regions would give PRO 4/5 at t = 6; the
    # mean over regions keeps 1/2 as worked out above.
    assert M.aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_diagonal_touch_is_one_region():
    # (0,1) and (1,2) touch only at a corner: 8-connected -> one region of 3.
    masks = np.array([[[1, 1, 0],
                       [0, 0, 1],
                       [0, 0, 0]]], bool)
    maps = np.array([[[2, 2, 0],
                      [1, 0, 5],
                      [3, 0, 0]]], np.float32)
    # defect-free scores 0 1 0 3 0 0 (6 pixels)
    # t = 5: FPR 0,   PRO 1/3      t = 3: FPR 1/6, PRO 1/3
    # t = 2: FPR 1/6, PRO 1        t = 1: FPR 2/6, PRO 1
    # area to 0.3: 1/3 * 1/6 + 1 * (0.3 - 1/6) = 1/18 + 2/15 = 17/90 -> 17/27
    assert M.aupro(masks, maps) == pytest.approx(17 / 27, abs=1e-12)
    # With 4-connectivity (two regions of 2 and 1 pixels) the PRO at t = 5
    # would be 1/2 and the result (1/12 + 2/15) / 0.3 = 13/18.
    assert M.aupro(masks, maps) != pytest.approx(13 / 18, abs=1e-3)


def test_heavy_ties_and_a_clean_image():
    # Every score is 0 or 1. Region = the two pixels (0,0), (0,1).
    masks = np.zeros((2, 2, 3), bool)
    masks[0, 0, :2] = True
    maps = np.array([[[1, 0, 1],
                      [0, 1, 0]],
                     [[1, 1, 0],   # clean image: only defect-free pixels
                      [0, 0, 0]]], np.float32)
    # 10 defect-free pixels, 4 of them score 1. At t = 1 half the region and
    # 4/10 of the defect-free pixels are flagged: the curve is a straight
    # diagonal (0,0) -> (0.4, 0.5) -> (1, 1). At 0.3 the PRO is 0.375:
    # area 0.3 * 0.375 / 2 = 0.05625, normalised 0.1875.
    assert M.aupro(masks, maps) == pytest.approx(0.1875, abs=1e-12)
    fpr, pro = M.pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0.4, 1], atol=1e-15)
    np.testing.assert_allclose(pro, [0, 0.5, 1], atol=1e-15)
    # Whole curve: 0.4 * 0.25 + 0.6 * 0.75 = 0.55.
    assert M.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.55, abs=1e-12)
    # Without the clean image the FPR at t = 1 is 2/4: (0,0) -> (0.5,0.5),
    # PRO 0.3 at the limit, area 0.045, normalised 0.15.
    assert M.aupro(masks[:1], maps[:1]) == pytest.approx(0.15, abs=1e-12)


def test_region_that_no_threshold_in_range_detects():
    # Two one-pixel regions; region C scores below every defect-free pixel.
    masks = np.zeros((1, 3, 3), bool)
    masks[0, 0, 0] = masks[0, 2, 2] = True
    maps = np.array([[[9, 4, 3],
                      [2, 1, 0],
                      [0, 0, -1]]], np.float32)
    # PRO is 1/2 from t = 9 on and reaches 1 only at t = -1, where the FPR
    # is already 1: the curve is (0,0) (0,1/2) ... (1,1/2) (1,1).
    assert M.aupro(masks, maps) == pytest.approx(0.5, abs=1e-12)
    assert M.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)
    fpr, pro = M.pro_curve(masks, maps)
    assert (fpr[-2], pro[-2], fpr[-1], pro[-1]) == (1.0, 0.5, 1.0, 1.0)


def test_mean_over_all_regions_of_the_set_not_per_image():
    # Image 1: three one-pixel regions at 9; image 2: one region at 1.
    masks = np.array([[[1, 0, 1, 0, 1]], [[1, 0, 0, 0, 0]]], bool)
    maps = np.array([[[9, 0, 9, 0, 9]], [[1, 2, 0, 0, 0]]], np.float32)
    # 6 defect-free pixels (one at 2). t = 9: PRO 3/4 (3 of 4 regions),
    # FPR 0; t = 2: FPR 1/6; t = 1: PRO 1. Area 3/4 * 1/6 + (0.3 - 1/6)
    # = 31/120 -> 31/36. A mean of per-image means (1 and 0 -> 1/2) would
    # give 13/18 instead.
    assert M.aupro(masks, maps) == pytest.approx(31 / 36, abs=1e-12)


def test_no_defect_region_is_an_error():
    masks = np.zeros((2, 4, 4), bool)
    maps = np.random.default_rng(0).random((2, 4, 4))
    for fn in (M.aupro, M.pro_curve, M.pixel_auroc):
        with pytest.raises(ValueError, match="no defect pixel"):
            fn(masks, maps)
    with pytest.raises(ValueError, match="no defect-free pixel"):
        M.aupro(np.ones((1, 2, 2), bool), maps[:1, :2, :2])


# ---------------------------------------------------------------------------
# AU-PRO against the reference and direct integration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 3, 10])
@pytest.mark.parametrize("limit", [0.3, 0.05, 0.5, 1.0])
def test_aupro_and_curve_match_reference(levels, limit):
    masks, maps = random_set(seed=levels or 7, levels=levels)
    ref_fpr, ref_pro = reference_pro_curve(masks, maps)
    fpr, pro = M.pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=1e-12)
    assert M.aupro(masks, maps, limit) == pytest.approx(reference_area(ref_fpr, ref_pro, limit), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_area_equals_direct_integration(seed):
    # Integrate over the FPR axis strip by strip: each defect-free pixel owns
    # a strip of width 1/N_neg. Along the strip the curve rises linearly from
    # the PRO with thresholds strictly above its score to the PRO at its
    # score (ties share one straight segment), so the strip's area is
    # (PRO(> s) + PRO(>= s)) / 2 / N_neg.
    masks, maps = random_set(seed, levels=4 + seed)
    regions = []
    for m, a in zip(masks, maps):
        lab = sk_label(m, connectivity=2)
        regions += [a[lab == r] for r in range(1, lab.max() + 1)]

    def pro_at(s, strict):
        return np.mean([np.mean(r > s) if strict else np.mean(r >= s) for r in regions])

    strips = [(pro_at(s, True) + pro_at(s, False)) / 2 for s in maps[~masks]]
    assert M.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(np.mean(strips), abs=1e-12)


def test_float64_maps_are_ranked_in_float64():
    # 1 and 1 + 1e-12 are one value in float32 but two thresholds here.
    masks = np.zeros((1, 2, 3), bool)
    masks[0, 0, 0] = True
    maps = np.array([[[1 + 1e-12, 1.0, 0.5], [1.0, 0.2, 0.1]]])
    assert M.pixel_auroc(masks, maps) == roc_auc_score(masks.ravel(), maps.ravel()) == 1.0
    assert M.aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12) == 1.0
    assert M.aupro(masks, maps.astype(np.float32)) < 1.0  # the tie in float32


@pytest.mark.parametrize("dtype, base", [(np.int64, 2**62), (np.int64, -(2**62)), (np.uint64, 2**64 - 16)])
@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_integer_scores_are_ranked_exactly(dtype, base, path, monkeypatch):
    # neighbouring integers this large are one float64: widened, every pair would tie (AUROC 0.5)
    if path == "torch":
        if dtype == np.uint64:
            pytest.skip("torch has no general uint64 tensors")
        monkeypatch.setattr(metric_inputs, "CPU_TENSORS_VIA_NUMPY", False)
    assert np.float64(base) == np.float64(base + 3)  # the scores below, as float64, are all one number
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([base + k for k in (0, 1, 2, 3, 1, 1)], dtype=object).astype(dtype)
    # pairs (defective, good): 2 and 3 beat all three good scores; 1 beats 0 and ties the two 1s:
    # (3 + 3 + 1 + 2 * 0.5) / 9
    assert M.image_auroc(labels, scores) == roc_auc_score(labels, scores) == 8 / 9
    masks = labels.reshape(1, 2, 3).astype(bool)
    maps = torch.from_numpy(scores.reshape(1, 2, 3)) if path == "torch" else scores.reshape(1, 2, 3)
    assert M.pixel_auroc(masks, maps) == 8 / 9


# ---------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------

small_sets = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(bool, shape),
        hnp.arrays(np.int64, shape, elements=st.integers(0, 7)),
    )
).filter(lambda mm: mm[0].any() and not mm[0].all())


@settings(max_examples=60, deadline=None)
@given(small_sets, st.sampled_from([0.3, 0.1, 0.77, 1.0]))
def test_property_matches_reference(mm, limit):
    masks, maps = mm
    assert M.aupro(masks, maps, limit) == pytest.approx(reference_aupro(masks, maps, limit), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(small_sets, st.sampled_from([0.3, 0.05, 1.0]))
def test_property_invariant_to_increasing_transform_and_in_unit_interval(mm, limit):
    masks, maps = mm
    value = M.aupro(masks, maps, limit)
    assert 0.0 <= value <= 1.0
    # strictly increasing on the integers 0..7 (and distinct after rounding)
    transformed = np.exp(maps / 3.0) * 5.0 - 2.0 + maps.astype(np.float64) ** 3
    assert M.aupro(masks, transformed, limit) == pytest.approx(value, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(small_sets)
def test_property_pixel_auroc_matches_sklearn(mm):
    masks, maps = mm
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


# ---------------------------------------------------------------------------
# AUROC and F1 against scikit-learn
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 2, 5])
def test_pixel_auroc_matches_sklearn(levels):
    masks, maps = random_set(seed=3, n=6, h=20, w=17, levels=levels)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert M.pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    as_uint8_float64 = masks.astype(np.uint8), maps.astype(np.float64)
    assert M.pixel_auroc(*as_uint8_float64) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_image_auroc_and_f1_match_sklearn(tied):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    if tied:
        scores = np.round(scores)  # a handful of values, many ties across classes
    assert M.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)

    precision, recall, _ = precision_recall_curve(labels, scores)
    ok = precision + recall > 0
    best = np.max(2 * precision[ok] * recall[ok] / (precision[ok] + recall[ok]))
    f1, threshold = M.f1_max(labels, scores)
    assert f1 == pytest.approx(best, abs=1e-12)
    # the threshold reproduces the F1, and no other score does better
    assert M.f1_at(labels, scores, threshold) == pytest.approx(f1, abs=1e-15)
    assert f1_score(labels, scores >= threshold) == pytest.approx(f1, abs=1e-12)
    assert max(M.f1_at(labels, scores, t) for t in np.unique(scores)) == pytest.approx(f1, abs=1e-15)


def test_f1_by_hand():
    # scores 0.1 0.4 0.35 0.8 with labels 0 0 1 1:
    # t = 0.8 -> TP 1 FP 0 FN 1 -> F1 2/3; t = 0.4 -> TP 1 FP 1 FN 1 -> 1/2;
    # t = 0.35 -> TP 2 FP 1 -> 4/5; t = 0.1 -> TP 2 FP 2 -> 2/3.
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert M.f1_max(labels, scores) == (pytest.approx(0.8), 0.35)
    assert M.f1_at(labels, scores, 0.5) == pytest.approx(2 / 3)
    assert M.f1_at(labels, scores, 0.9) == 0.0
    # labels 0 1 1, scores 0.2 0.8 0.9: t = 0.9 -> 2/3, t = 0.8 -> 1, t = 0.2 -> 4/5
    assert M.f1_max([0, 1, 1], [0.2, 0.8, 0.9]) == (1.0, 0.8)
    # a tie for the best: labels 1 0 0 1, scores 1 2 3 4; t = 4 -> TP 1 FN 1
    # -> 2/3; t = 3 -> 1/2; t = 2 -> 2/5; t = 1 -> TP 2 FP 2 -> 4/6 = 2/3.
    # The lowest of the tied thresholds is returned.
    assert M.f1_max([1, 0, 0, 1], [1, 2, 3, 4]) == (2 / 3, 1.0)


def test_threshold_from_normal():
    good = np.arange(1, 11, dtype=np.float64)  # 1..10
    # 20 % of 10 -> at most 2 flagged: threshold 9 (flags 9 and 10)
    assert M.threshold_from_normal(good, max_fpr=0.2) == 9.0
    assert M.threshold_from_normal(good, max_fpr=0.29) == 9.0
    # ties: 0.34 * 6 -> 2 allowed; t = 3 would flag four, so the next score 4
    assert M.threshold_from_normal([1, 2, 3, 3, 3, 4], max_fpr=0.34) == 4.0
    # none allowed: the next float32 above the maximum, which flags nothing
    scores32 = np.array([0.5, 1.0], np.float32)
    t = M.threshold_from_normal(scores32, max_fpr=0.0)
    assert t == float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    assert not (scores32 >= t).any()
    # maps of any shape, and a torch tensor
    assert M.threshold_from_normal(torch.arange(1.0, 11.0).reshape(2, 5), 0.2) == 9.0
    with pytest.raises(ValueError, match="max_fpr"):
        M.threshold_from_normal(good, max_fpr=1.0)


# ---------------------------------------------------------------------------
# numpy / torch, evaluate, input errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 4])
def test_torch_inputs_give_the_same_values(levels, monkeypatch):
    masks, maps = random_set(seed=5, n=5, h=13, w=12, levels=levels)
    labels = masks.any(axis=(1, 2)).astype(np.int64)
    scores = maps.max(axis=(1, 2))
    want = M.evaluate(labels, scores, masks, maps)
    want_curve = M.pro_curve(masks, maps)
    tensors = [torch.from_numpy(x) for x in (labels, scores, masks, maps)]
    for via_numpy in (True, False):  # False: the torch code path on CPU
        monkeypatch.setattr(metric_inputs, "CPU_TENSORS_VIA_NUMPY", via_numpy)
        assert M.evaluate(*tensors) == pytest.approx(want, abs=1e-12)
        assert M.aupro(*tensors[2:], fpr_limit=0.07) == pytest.approx(M.aupro(masks, maps, 0.07), abs=1e-12)
        got_curve = M.pro_curve(*tensors[2:])
        for got, expected in zip(got_curve, want_curve):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        # mixed inputs, integer masks, float64 and float16 maps
        assert M.pixel_auroc(masks, tensors[3]) == want["pixel_auroc"]
        uint8_float64 = tensors[2].to(torch.uint8), tensors[3].double()
        assert M.aupro(*uint8_float64) == pytest.approx(want["pixel_aupro"], abs=1e-12)
        half = maps.astype(np.float16)
        want_half = M.aupro(masks, half)
        assert M.aupro(torch.from_numpy(masks), torch.from_numpy(half)) == pytest.approx(want_half, abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_same_values():
    masks, maps = random_set(seed=9, n=5, h=31, w=29, levels=6)
    cuda = [torch.from_numpy(x).cuda() for x in (masks, maps)]
    assert M.pixel_auroc(*cuda) == M.pixel_auroc(masks, maps)
    assert M.aupro(*cuda) == pytest.approx(M.aupro(masks, maps), abs=1e-12)


def test_evaluate_keys_and_values():
    masks, maps = random_set(seed=4, n=6, h=10, w=10)
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    out = M.evaluate(labels, scores, masks, maps, fpr_limit=0.2)
    assert set(out) == {"image_auroc", "image_f1", "image_f1_threshold", "pixel_auroc", "pixel_aupro"}
    assert out["image_auroc"] == M.image_auroc(labels, scores)
    assert (out["image_f1"], out["image_f1_threshold"]) == M.f1_max(labels, scores)
    assert out["pixel_auroc"] == M.pixel_auroc(masks, maps)
    assert out["pixel_aupro"] == M.aupro(masks, maps, fpr_limit=0.2)
    assert all(type(v) is float for v in out.values())
    with pytest.raises(ValueError, match="6 image scores but 5 maps"):
        M.evaluate(labels, scores, masks[:5], maps[:5])


def test_bad_inputs_raise_clear_errors():
    masks, maps = random_set(seed=1)
    nan_maps = maps.copy()
    nan_maps[1, 1, 1] = np.nan
    inf_maps = maps.copy()
    inf_maps[0, 0, 0] = -np.inf
    cases = [
        ((masks[0], maps[0]), "shape \\(N, H, W\\)"),
        ((masks[:, None], maps[:, None]), "shape \\(N, H, W\\)"),
        ((masks, maps[:, :-1]), "differ in shape"),
        ((masks, nan_maps), "NaN"),
        ((masks, inf_maps), "NaN or infinite"),
        ((masks * 255, maps), "masks > 0"),
        ((masks, maps.astype(np.complex64)), "real numbers"),
        ((masks, np.array(["a"] * maps.size).reshape(maps.shape)), "real numbers"),
        ((masks[:0], maps[:0]), "N, H, W > 0"),
    ]
    for args, message in cases:
        for fn in (M.aupro, M.pixel_auroc):
            with pytest.raises(ValueError, match=message):
                fn(*args)
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(masks, maps, fpr_limit=1.5)
    with pytest.raises(ValueError, match="NaN"):
        M.aupro(torch.from_numpy(masks), torch.from_numpy(nan_maps))

    with pytest.raises(ValueError, match="one class"):
        M.image_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no anomalous"):
        M.f1_max([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.image_auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        M.image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        M.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        M.image_auroc([[0, 1]], [[0.1, 0.2]])


def test_nan_in_torch_path(torch_path):
    masks, maps = random_set(seed=2)
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps))
    with pytest.raises(ValueError, match="masks > 0"):
        M.pixel_auroc(torch.from_numpy(masks.astype(np.uint8) * 255), torch.from_numpy(maps))


def test_signed_zeros_are_one_score():
    # -0.0 == 0.0: one threshold, as in scikit-learn and the reference.
    masks = np.array([[[1, 0, 1, 0]]], bool)
    maps = np.array([[[0.0, -0.0, -0.0, 0.0]]])
    assert M.pixel_auroc(masks, maps) == roc_auc_score(masks.ravel(), maps.ravel()) == 0.5
    assert M.aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_pro_at_by_hand_and_on_the_curve():
    # image 0: a 2-pixel region and a 1-pixel region (8-connected: corner-touching pixels join)
    masks = np.zeros((2, 3, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # one region (diagonal neighbours)
    masks[0, 2, 3] = True  # a second region
    maps = np.zeros((2, 3, 4))
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 2, 3] = 0.9, 0.2, 0.6
    maps[1, 0, 0] = 0.7  # one false positive in the good image at t <= 0.7
    p = M.pro_at(masks, maps, 0.5)
    np.testing.assert_allclose(p.overlaps, [0.5, 1.0])  # region 1: 1 of 2 pixels; region 2: 1 of 1
    assert p.pro == pytest.approx(0.75) and list(p.region_image) == [0, 0]
    assert p.fpr == pytest.approx(1 / 21)  # 24 pixels - 3 defect pixels = 21 defect-free
    fpr, pro = M.pro_curve(masks, maps)
    for t in (0.9, 0.7, 0.6, 0.2):  # every distinct score: the curve passes through pro_at
        q = M.pro_at(masks, maps, t)
        assert any(abs(f - q.fpr) < 1e-12 and abs(v - q.pro) < 1e-12 for f, v in zip(fpr, pro)), t
    with pytest.raises(ValueError, match="no defect region"):
        M.pro_at(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2)), 0.5)
