"""Exercise 1.1's check accepts the hand-made embedding and catches the usual mistakes."""

import torch
import torch.nn.functional as F

from padim_utils.backbones import embed
from padim_utils.course.exercises import check


def _layers():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 4, 4, 4, generator=g),
            torch.randn(1, 5, 2, 2, generator=g)]


def test_right_answer_passes():
    layers = _layers()
    size = layers[0].shape[-2:]
    answer = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in layers], dim=1)
    assert check("1.1", answer, layers=layers) is None
    assert check("1.1", embed(layers), layers=layers) is None


def test_bilinear_upsampling_is_caught():
    layers = _layers()
    size = layers[0].shape[-2:]
    answer = torch.cat([F.interpolate(f, size=size, mode="bilinear") for f in layers], dim=1)
    assert "differs" in check("1.1", answer, layers=layers)


def test_wrong_grid_and_wrong_order_are_caught():
    layers = _layers()
    size = layers[-1].shape[-2:]  # downsampled to the coarsest grid instead
    answer = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in layers], dim=1)
    assert "grid" in check("1.1", answer, layers=layers)
    size = layers[0].shape[-2:]
    swapped = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in layers[::-1]], dim=1)
    assert check("1.1", swapped, layers=layers) is not None
    assert "not answered" in check("1.1", ..., layers=layers)
