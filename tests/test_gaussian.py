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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("keep", [True, False])
def test_singular_covariance_is_one_clear_error(threads, keep):
    """eps = 0 on rank-deficient statistics (3 images, 5 channels): a PadimError naming eps, on the sequential
    path and on the CPU's parallel one alike (the latter once raised LAPACK's own error from the inverse).
    Kept statistics still finalise with eps afterwards, to numpy's inverse."""
    x = _data(n=3, seed=6)
    stats = _fit(x, [3], dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(PadimError, match="not positive definite; increase eps"):
            stats.finalize(0.0, dtype=torch.float64, keep=keep)
    finally:
        torch.set_num_threads(before)
    if keep:
        _, precision = stats.finalize(0.01, dtype=torch.float64, keep=True)
        ref = np.linalg.inv(_np_cov(x) + 0.01 * np.eye(5))
        np.testing.assert_allclose(precision.numpy(), ref, rtol=1e-8, atol=1e-10)


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


# ---------------------------------------------------------------- the float32 product path, dtype="auto"
def _rel(a, b):
    """Largest per-position normwise relative difference of (P, ...) arrays."""
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def _fit_dtype(x, batch, dtype, chunk=5):
    n, d, h, w = x.shape
    stats = GaussianStats(h * w, d, chunk=chunk, dtype=dtype)
    for s in range(0, n, batch):
        stats.update(torch.from_numpy(x[s : s + batch]).float())
    return stats


@pytest.mark.parametrize("batch", [7, 64, 300])
def test_float32_products_equal_the_float64_statistics(batch):
    # features like a CNN's: a large common offset, correlated channels, 300 images
    x = _data(n=300, d=24, h=3, w=4, seed=8, loc=50.0).astype(np.float32).astype(np.float64)
    f64, f32 = _fit_dtype(x, batch, "float64"), _fit_dtype(x, batch, "float32")
    assert f32.product_dtype == torch.float32 and f64.product_dtype == torch.float64
    ref = _np_cov(x)
    assert _rel(f64.covariance().numpy(), ref) < 1e-12
    assert _rel(f32.covariance().numpy(), ref) < 1e-6  # the bound, against numpy's float64
    np.testing.assert_allclose(f32.mean.numpy(), f64.mean.numpy(), rtol=1e-12)
    # what the centring buys: raw float32 moments (sum x x^T - n mu mu^T) are far off here
    flat = torch.from_numpy(x.reshape(300, 24, -1)).float().permute(2, 0, 1)  # (P, N, d)
    raw = flat.transpose(1, 2) @ flat - 300 * flat.mean(1)[:, :, None] * flat.mean(1)[:, None, :]
    assert _rel(raw.double().numpy() / 299, ref) > 1e-5  # misses the bound tenfold


def test_float32_products_ignore_a_global_tf32_setting():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        x = _data(n=40, seed=9)
        stats = _fit_dtype(x, 16, "float32")
        assert torch.backends.cuda.matmul.allow_tf32  # restored after each product
        assert _rel(stats.covariance().numpy(), _np_cov(x.astype(np.float32).astype(np.float64))) < 1e-6
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_auto_takes_float64_on_the_cpu_and_data_centre_gpus(monkeypatch):
    from padim_utils import gaussian

    assert gaussian.scatter_dtype("cpu") == torch.float64
    assert gaussian.scatter_dtype("cpu", "float32") == torch.float32
    for capability, expected in [((9, 0), torch.float64), ((8, 0), torch.float64), ((7, 0), torch.float64),
                                 ((8, 6), torch.float32), ((8, 9), torch.float32), ((12, 0), torch.float32),
                                 ((7, 5), torch.float32)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert gaussian.scatter_dtype("cuda") == expected, capability
        assert gaussian.scatter_dtype("cuda", "float64") == torch.float64
    with pytest.raises(PadimError, match="must be one of auto, float64, float32"):
        gaussian.scatter_dtype("cpu", "bfloat16")


def test_one_product_per_chunk_and_batch(monkeypatch):
    # Chan's correction rides in the same product as the batch's scatter: one baddbmm_ per chunk
    x = _data(n=12, seed=10)
    calls = []
    real = torch.Tensor.baddbmm_
    monkeypatch.setattr(torch.Tensor, "baddbmm_", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    stats = _fit_dtype(x, 4, "float64", chunk=5)  # 12 positions: 3 chunks; 3 batches
    assert len(calls) == 3 * 3
    np.testing.assert_allclose(stats.covariance().numpy(), _np_cov(x.astype(np.float32).astype(np.float64)),
                               rtol=1e-10, atol=1e-12)


def test_update_does_not_modify_the_embeddings():
    emb = torch.from_numpy(_data(n=1, seed=11))  # float64, one image: the chunk view is contiguous
    before = emb.clone()
    stats = GaussianStats(12, 5, chunk=5)
    stats.update(emb)
    stats.update(emb + 1)
    assert torch.equal(emb, before)


@pytest.mark.parametrize("threads", [1, 2])
def test_finalize_frees_each_chunk_once_inverted(monkeypatch, threads):
    x = _data(seed=12)
    stats = _fit(x, [23], dtype=torch.float64)  # 12 positions in chunks of 5: 3 chunks
    alive = []
    real = torch.linalg.cholesky_ex
    monkeypatch.setattr(torch.linalg, "cholesky_ex",
                        lambda a: alive.append(sum(c is not None for c in stats.m2_chunks)) or real(a))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, precision = stats.finalize(0.01, dtype=torch.float64)
    finally:
        torch.set_num_threads(old)
    np.testing.assert_allclose(precision.numpy(), np.linalg.inv(_np_cov(x) + 0.01 * np.eye(5)), rtol=1e-9)
    assert stats.m2_chunks is None
    if threads == 1:  # the one-chunk-at-a-time path (GPUs): the scatter shrinks as the precision grows
        assert alive == [3, 2, 1]
