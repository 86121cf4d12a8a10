"""Streaming Gaussian fit against numpy's one-shot float64 references."""

import numpy as np
import pytest
import torch

from padim_utils.errors import PadimError
from padim_utils.gaussian import GaussianStats


def _data(n=23, d=5, h=3, w=4, seed=0, loc=0.0):
    rng = np.random.default_rng(seed)
    # correlated channels so the covariance is not diagonal
    mix = rng.normal(size=(d, d))
    x = rng.normal(size=(n, h * w, d)) @ mix + loc + rng.normal(size=(h * w, d))
    return x.transpose(0, 2, 1).reshape(n, d, h, w)  # (N, d, H, W) float64


def _fit(x, batch_sizes, dtype=torch.float32):
    n, d, h, w = x.shape
    stats = GaussianStats(h * w, d, chunk=5)  # chunk smaller than P to exercise chunking
    i = 0
    for b in batch_sizes:
        stats.update(torch.from_numpy(x[i : i + b]).to(dtype))
        i += b
    assert i == n
    return stats


def _np_cov(x):
    n, d, h, w = x.shape
    flat = x.reshape(n, d, h * w)
    return np.stack([np.cov(flat[:, :, p], rowvar=False) for p in range(h * w)])  # (P, d, d)


def test_streaming_matches_np_cov_and_mean():
    x = _data()
    stats = _fit(x, [7, 1, 10, 5], dtype=torch.float64)
    np.testing.assert_allclose(stats.mean.numpy(), x.reshape(23, 5, -1).mean(0).T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.covariance().numpy(), _np_cov(x), rtol=1e-10, atol=1e-12)


def test_streaming_is_stable_with_large_offsets():
    # raw-moment formulas lose most digits here; Chan's update must not
    x = _data(loc=1e6, seed=3)
    stats = _fit(x, [4, 4, 4, 11], dtype=torch.float64)
    ref = _np_cov(x)
    assert np.max(np.abs(stats.covariance().numpy() - ref)) / np.max(np.abs(ref)) < 1e-6


def test_many_near_identical_frames_stream_exactly():
    """A static camera: 400 frames equal up to a codec-sized noise (1e-3 on features of size ~5), streamed in the
    model's batches of 32 as float32. The streamed covariance is numpy's float64 one on the same values: what
    makes such a background's Gaussian narrow is the data, not the arithmetic (chapter 07)."""
    rng = np.random.default_rng(7)
    background = rng.normal(5.0, 2.0, size=(1, 6, 3, 4))
    x = (background + 1e-3 * rng.normal(size=(400, 6, 3, 4))).astype(np.float32).astype(np.float64)
    stats = _fit(x, [32] * 12 + [16], dtype=torch.float32)
    ref = _np_cov(x)
    np.testing.assert_allclose(stats.covariance().numpy(), ref, rtol=1e-9, atol=1e-15)
    assert np.abs(ref).max() < 1e-5  # the variance is the noise's (1e-6), not swamped by rounding of the mean


def test_float32_inputs_accumulate_in_float64():
    x = _data(seed=1).astype(np.float32).astype(np.float64)  # values exactly representable in float32
    stats = _fit(x, [10, 13], dtype=torch.float32)
    assert stats.m2.dtype == torch.float64
    np.testing.assert_allclose(stats.covariance().numpy(), _np_cov(x), rtol=1e-6, atol=1e-9)


def test_merged_partial_fits_equal_the_full_fit():
    x = _data(n=30, seed=2)
    full = _fit(x, [30], dtype=torch.float64)
    a = _fit(x[:11], [5, 6], dtype=torch.float64)
    b = _fit(x[11:], [19], dtype=torch.float64)
    a.merge(b)
    assert a.n == 30
    np.testing.assert_allclose(a.mean.numpy(), full.mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.covariance().numpy(), full.covariance().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(a.covariance().numpy(), _np_cov(x), rtol=1e-6, atol=1e-12)


def test_merge_into_empty_fit():
    x = _data(n=9, seed=4)
    empty = GaussianStats(12, 5)
    empty.merge(_fit(x, [9], dtype=torch.float64))
    np.testing.assert_allclose(empty.covariance().numpy(), _np_cov(x), rtol=1e-10)


def test_finalize_gives_regularised_inverse():
    x = _data(seed=5)
    eps = 0.01
    mean, precision = _fit(x, [23], dtype=torch.float64).finalize(eps, dtype=torch.float64)
    ref = np.linalg.inv(_np_cov(x) + eps * np.eye(5))
    np.testing.assert_allclose(precision.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert mean.shape == (12, 5) and precision.shape == (12, 5, 5)


def test_eps_makes_rank_deficient_covariance_invertible():
    # 3 images, 5 channels: the sample covariance has rank 2 and no inverse without eps
    x = _data(n=3, seed=6)
    _, precision = _fit(x, [3], dtype=torch.float64).finalize(0.01, dtype=torch.float64)
    assert torch.isfinite(precision).all()


def test_fewer_than_two_images_is_a_clear_error():
    stats = _fit(_data(n=1), [1])
    with pytest.raises(PadimError, match="at least 2 training images"):
        stats.finalize(0.01)


def test_shape_mismatch_is_a_clear_error():
    stats = GaussianStats(12, 5)
    with pytest.raises(PadimError, match="does not match"):
        stats.update(torch.zeros(2, 4, 3, 4))


def test_keep_finalises_the_same_statistics_for_several_eps():
    x = _data(seed=7)
    stats = _fit(x, [10, 13], dtype=torch.float64)
    for eps in (0.5, 0.01, 1e-4):  # out of order: no eps may leak into the next
        _, precision = stats.finalize(eps, dtype=torch.float64, keep=True)
        ref = np.linalg.inv(_np_cov(x) + eps * np.eye(5))
        np.testing.assert_allclose(precision.numpy(), ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(stats.covariance().numpy(), _np_cov(x), rtol=1e-10, atol=1e-12)
    stats.finalize(0.01)  # the default consumes them
    with pytest.raises(PadimError, match="already finalized"):
        stats.finalize(0.01)
