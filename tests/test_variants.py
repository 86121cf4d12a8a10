"""The shared-Gaussian variant of chapter 04 (gaussian.shared_gaussian): one Gaussian over every patch, in
mahalanobis' layout."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from padim_utils.errors import PadimError
from padim_utils.gaussian import shared_gaussian
from padim_utils.scoring import mahalanobis


def test_shared_gaussian_is_the_mean_and_covariance_of_all_patches():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5, 3, 4, 2, generator=g) + torch.arange(8.0).view(1, 1, 4, 2)  # positions differ
    mean, precision = shared_gaussian(emb, eps=0.01, dtype=torch.float64, batch=7)  # several updates
    patches = emb.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()  # (40, 3)
    cov = np.cov(patches, rowvar=False) + 0.01 * np.eye(3)
    assert mean.shape == (8, 3) and precision.shape == (8, 3, 3)
    for p in (0, 7):  # the same Gaussian at every position
        np.testing.assert_allclose(mean[p].numpy(), patches.mean(0), rtol=1e-10)
        np.testing.assert_allclose(precision[p].numpy(), np.linalg.inv(cov), rtol=1e-8)


def test_shared_gaussian_scores_like_scipy():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(6, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    mean, precision = shared_gaussian(train, eps=0.01, dtype=torch.float64)
    dist = mahalanobis(test.double(), mean, precision)  # (2, 3, 3)
    patches = train.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy()
    vi = np.linalg.inv(np.cov(patches, rowvar=False) + 0.01 * np.eye(4))
    x = test[1, :, 2, 0].double().numpy()
    assert dist[1, 2, 0].item() == pytest.approx(scipy_mahalanobis(x, patches.mean(0), vi), rel=1e-9)


def test_shared_gaussian_refuses_bad_shapes():
    with pytest.raises(PadimError):
        shared_gaussian(torch.zeros(3, 4, 5))


def test_plot_overlays_has_a_colour_bar_and_title():
    from padim_utils.plots import plot_overlays

    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    masks = [np.eye(8), np.zeros((8, 8))]
    maps = [np.linspace(0, 1, 64).reshape(8, 8), np.full((8, 8), 3.0)]
    fig = plot_overlays(images, masks, maps, scores=[1.0, 3.0], labels=[1, 0], title="t", label="distance")
    cbar = fig.axes[-1]
    assert fig._suptitle.get_text() == "t" and cbar.get_ylabel() == "distance"
    assert cbar.get_ylim() == pytest.approx((0.0, 3.0))  # one scale over all shown maps
