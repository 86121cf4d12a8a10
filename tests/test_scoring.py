"""Mahalanobis maps, blur and upsampling against scipy / scikit-image."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from skimage.transform import resize

from padim_utils.errors import PadimError
from padim_utils.scoring import anomaly_maps, gaussian_blur, image_scores, mahalanobis


def test_mahalanobis_matches_scipy():
    rng = np.random.default_rng(0)
    b, d, h, w = 3, 6, 4, 5
    emb = rng.normal(size=(b, d, h, w))
    mean = rng.normal(size=(h * w, d))
    a = rng.normal(size=(h * w, d, d))
    precision = np.linalg.inv(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d))  # SPD
    out = mahalanobis(torch.from_numpy(emb), torch.from_numpy(mean), torch.from_numpy(precision), chunk=7)
    ref = np.empty((b, h, w))
    for i in range(b):
        for p in range(h * w):
            ref[i, p // w, p % w] = scipy_mahalanobis(emb[i, :, p // w, p % w], mean[p], precision[p])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10)


def test_blur_matches_scipy_reflect():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 40, 37))  # smaller than the kernel radius 16 would need -> reflect twice
    out = gaussian_blur(torch.from_numpy(maps), sigma=4.0).numpy()
    ref = np.stack([gaussian_filter(m, sigma=4.0, mode="reflect") for m in maps])
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_blur_on_tiny_maps_matches_scipy():
    maps = np.random.default_rng(2).random((1, 8, 8))  # kernel wider than the map
    out = gaussian_blur(torch.from_numpy(maps), sigma=4.0).numpy()
    np.testing.assert_allclose(out[0], gaussian_filter(maps[0], sigma=4.0, mode="reflect"), rtol=1e-10)


def test_anomaly_maps_upsample_like_skimage_bilinear():
    dist = np.random.default_rng(3).random((2, 7, 7)).astype(np.float32)
    out = anomaly_maps(torch.from_numpy(dist), 28, sigma=0, interpolation="bilinear").numpy()
    ref = np.stack([resize(m, (28, 28), order=1, mode="edge", anti_aliasing=False) for m in dist])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def _cubic_resize_reference(m: np.ndarray, out: int, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution (a = -0.75), pixel centres aligned, edge pixels repeated: bicubic resizing
    written out in numpy, one axis after the other."""
    def weights(t):
        t = np.abs(t)
        return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))

    def along_rows(x):  # (n, w) -> (out, w)
        n = x.shape[0]
        src = (np.arange(out) + 0.5) * n / out - 0.5
        base = np.floor(src).astype(int)
        res = np.zeros((out, x.shape[1]))
        for k in range(-1, 3):
            res += weights(src - (base + k))[:, None] * x[np.clip(base + k, 0, n - 1)]
        return res

    return along_rows(along_rows(m.astype(np.float64)).T).T


def test_anomaly_maps_bicubic_matches_cubic_convolution_and_never_goes_below_zero():
    dist = np.random.default_rng(4).random((2, 7, 7)).astype(np.float32)
    dist[:, 3, 3] = 25.0  # a sharp peak: the cubic kernel undershoots beside it
    out = anomaly_maps(torch.from_numpy(dist), 28, sigma=0, interpolation="bicubic").numpy()
    ref = np.stack([_cubic_resize_reference(m, 28) for m in dist])
    assert ref.min() < -0.5  # the reference does go negative here ...
    np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=1e-5, atol=1e-5)  # ... ours is clamped at 0
    assert out.min() == 0.0
    bilinear = anomaly_maps(torch.from_numpy(dist), 28, sigma=0, interpolation="bilinear").numpy()
    assert np.abs(out - bilinear).max() > 1.0  # the two interpolations do differ
    assert anomaly_maps(torch.from_numpy(dist), 28).numpy() == pytest.approx(
        anomaly_maps(torch.from_numpy(dist), 28, interpolation="bicubic").numpy())  # the paper's by default
    with pytest.raises(PadimError, match="^interpolation must be one of bicubic, bilinear, got 'area'$"):
        anomaly_maps(torch.from_numpy(dist), 28, interpolation="area")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_anomaly_maps_with_blur_equal_resize_then_scipy_blur(interpolation):
    """The fused matrix form (resize and blur as matrix products) against resizing then scipy's filter."""
    dist = np.random.default_rng(5).random((3, 9, 9)).astype(np.float32) * 4
    dist[:, 4, 4] = 30.0  # a sharp peak, so the bicubic clamp matters
    out = anomaly_maps(torch.from_numpy(dist), 72, sigma=4.0, interpolation=interpolation).numpy()
    if interpolation == "bilinear":
        up = np.stack([resize(m, (72, 72), order=1, mode="edge", anti_aliasing=False) for m in dist])
    else:
        up = np.maximum(np.stack([_cubic_resize_reference(m, 72) for m in dist]), 0)
    ref = np.stack([gaussian_filter(u.astype(np.float64), sigma=4.0, mode="reflect") for u in up])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * ref.max())


def test_image_score_is_map_max():
    maps = torch.rand(4, 9, 9)
    maps[2, 3, 4] = 7.0
    scores = image_scores(maps)
    assert scores[2] == 7.0
    np.testing.assert_array_equal(scores.numpy(), maps.numpy().reshape(4, -1).max(1))


def _ill_conditioned(n_train=300, n_test=40, d=64, positions=6, seed=0):
    """Embeddings whose covariances span 1e-3 .. 300 (condition ~3e4 after eps = 0.01, as real
    Lite0 features on bottle: median 3.5e3, max 3.1e4), correlated channels, test points from the
    same Gaussians and far outside them."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(positions, d, d, generator=g, dtype=torch.float64))  # (P, d, d)
    scales = torch.logspace(-1.5, 1.25, d, dtype=torch.float64)  # std devs: variances 1e-3 .. 316
    mu = torch.randn(positions, d, generator=g, dtype=torch.float64) * 5
    z = torch.randn(positions, n_train + n_test, d, generator=g, dtype=torch.float64) * scales
    x = mu[:, None] + z @ q.transpose(1, 2)  # (P, N, d)
    x[:, n_train + n_test // 2 :] += 3 * scales[-1] * torch.randn(positions, 1, d, generator=g, dtype=torch.float64)
    to_emb = lambda t: t.permute(1, 2, 0).reshape(t.shape[1], d, 2, positions // 2).float()  # (N, d, 2, 3)
    return to_emb(x[:, :n_train]), to_emb(x[:, n_train:])


def test_float32_distances_are_within_1e4_of_float64():
    from padim_utils.gaussian import GaussianStats

    train, test = _ill_conditioned()
    stats = GaussianStats(6, 64)
    stats.update(train)
    mean, precision = stats.finalize(0.01, dtype=torch.float64)
    cond = torch.linalg.cond(torch.linalg.inv(precision))
    assert float(cond.max()) > 1e4  # as ill-conditioned as real features
    ref = mahalanobis(test.double(), mean, precision)  # float64 throughout
    got = mahalanobis(test, mean.float(), precision.float())  # what predict computes by default
    assert got.dtype == torch.float32
    assert float(((got.double() - ref).abs() / ref).max()) < 1e-4
