"""Random and PCA channel reduction."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from padim_utils.errors import PadimError
from padim_utils.backbones import embed
from padim_utils.reduction import Reducer, random_channels


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g),
            torch.randn(2, 5, 2, 2, generator=g)]


def test_random_channels_seeded_sorted_unique():
    a = random_channels(448, 100, seed=7)
    assert torch.equal(a, random_channels(448, 100, seed=7))
    assert not torch.equal(a, random_channels(448, 100, seed=8))
    assert a.numel() == 100 and torch.unique(a).numel() == 100
    assert torch.all(a[1:] > a[:-1]) and 0 <= int(a.min()) and int(a.max()) < 448


def test_d_larger_than_channels_is_a_clear_error():
    with pytest.raises(PadimError, match="d=500 is larger than the backbone's 448 channels"):
        Reducer("random", [64, 128, 256], 500)


def test_gather_before_upsampling_equals_upsample_then_index():
    feats = _features()
    red = Reducer("random", [4, 6, 5], 7, seed=3)
    full = torch.cat([F.interpolate(f, size=(8, 8), mode="nearest") for f in feats], dim=1)  # (2, 15, 8, 8)
    assert torch.equal(red(feats), full[:, red.index])


def test_none_keeps_everything():
    feats = _features()
    out = Reducer("none", [4, 6, 5], 3)(feats)
    assert out.shape == (2, 15, 8, 8)
    assert torch.equal(out, embed(feats))


def test_pca_matches_sklearn_components():
    feats = _features(1)
    red = Reducer("pca", [4, 6, 5], 3)
    emb = embed(feats)  # (2, 15, 8, 8)
    red.fit_pca([emb[:1], emb[1:]])  # two batches
    x = emb.permute(0, 2, 3, 1).reshape(-1, 15).double().numpy()
    ref = PCA(n_components=3).fit(x).components_.T  # (15, 3)
    ours = red.projection.double().numpy()
    # same directions up to sign
    np.testing.assert_allclose(np.abs((ours * ref).sum(0)), np.ones(3), atol=1e-5)
    out = red(feats)
    assert out.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).reshape(-1, 3).numpy(), x @ ours, rtol=1e-4, atol=1e-4)
