"""Exercise 8.1 accepts the right answer and catches typical wrong ones."""

import pytest

from padim_utils.experiments import ablations
from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.course.exercises import check
from padim_utils.experiments.features import FeatureCache


@pytest.fixture(scope="module")
def given(quick_root, quick_category):
    cfg = preset("quick").replace(device="cpu")
    train = MVTecDataset(quick_root, quick_category, "train", image_size=64, crop=None, interpolation="bilinear")
    test = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None, interpolation="bilinear")
    return {"train_cache": FeatureCache.compute(train, cfg, progress=False),
            "test_cache": FeatureCache.compute(test, cfg, progress=False), "config": cfg}


def test_blur_gain(given):
    a = ablations.run_ablation(given["train_cache"], given["test_cache"], given["config"], sigma=4)
    b = ablations.run_ablation(given["train_cache"], given["test_cache"], given["config"], sigma=0)
    right = a["pixel_aupro"] - b["pixel_aupro"]
    assert right != 0
    assert check("8.1", right, **given) is None
    assert "sign" in check("8.1", -right, **given)
    assert check("8.1", a["pixel_auroc"] - b["pixel_auroc"], **given) is not None  # the wrong metric
    assert check("8.1", "0.1", **given) is not None
    assert check("8.1", [1, 2], **given) is not None
