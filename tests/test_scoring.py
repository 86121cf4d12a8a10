"""Mahalanobis maps, blur and upsampling against scipy / scikit-image."""

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from skimage.transform import resize

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
    out = anomaly_maps(torch.from_numpy(dist), 28, sigma=0).numpy()
    ref = np.stack([resize(m, (28, 28), order=1, mode="edge", anti_aliasing=False) for m in dist])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_image_score_is_map_max():
    maps = torch.rand(4, 9, 9)
    maps[2, 3, 4] = 7.0
    scores = image_scores(maps)
    assert scores[2] == 7.0
    np.testing.assert_array_equal(scores.numpy(), maps.numpy().reshape(4, -1).max(1))
