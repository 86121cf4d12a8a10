"""What each layer sees (backbones.receptive_field, layer_geometry), one sweep over settings
(experiments.ablations.sweep), and the figures of chapters 01-03."""

import numpy as np
import pytest
import torch

from padim_utils.backbones import feature_extractor, layer_geometry, receptive_field
from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.experiments.ablations import sweep
from padim_utils.experiments.benchmark import evaluate_cached
from padim_utils.experiments.features import FeatureCache
from padim_utils.plots import plot_channel_layout, plot_upsampling, save_figure


def test_receptive_fields_match_the_literature():
    # ResNet18: 43 / 99 / 211 px for layer1-3 (e.g. Araujo et al., Distill 2019, "Computing receptive fields").
    with torch.device("meta"):
        fe = feature_extractor("resnet18", pretrained=False)
    assert receptive_field(fe) == {"layer1": 43, "layer2": 99, "layer3": 211}
    rows = layer_geometry(fe, 224)
    assert [(r["channels"], r["stride"], r["grid"]) for r in rows] == [(64, 4, "56x56"), (128, 8, "28x28"),
                                                                      (256, 16, "14x14")]


def test_receptive_field_bounds_what_a_unit_sees():
    """Changing pixels outside a centre unit's receptive field leaves it unchanged; inside, it changes."""
    torch.manual_seed(0)
    fe = feature_extractor("resnet18", layers=("layer1",), pretrained=False)
    r = receptive_field(fe)["layer1"]  # 43
    x = torch.randn(1, 3, 96, 96)
    unit = (12, 12)  # centre of the 24x24 grid: covers pixels 48..51, its window about 48 +- r/2
    base = fe(x)[0][0, :, unit[0], unit[1]]
    lo = 4 * unit[0] + 1 - (r - 1) // 2  # first pixel of the window (stride 4, centre 4i + 1.5 -> padding aside)
    far = x.clone()
    far[..., : lo - 2, :] += 5.0  # rows well above the window
    assert torch.allclose(fe(far)[0][0, :, unit[0], unit[1]], base)
    near = x.clone()
    near[..., lo + 2, :] += 5.0  # a row inside the window
    assert not torch.allclose(fe(near)[0][0, :, unit[0], unit[1]], base)


@pytest.fixture(scope="module")
def caches(quick_root):
    cfg = preset("quick").replace(device="cpu")
    train, test = (FeatureCache.compute(MVTecDataset(quick_root, "bottle_syn", split, geometry=cfg.geometry), cfg,
                                        progress=False) for split in ("train", "test"))
    return cfg, train, test


def test_sweep_gives_the_same_numbers_as_evaluate_cached(caches):
    cfg, train, test = caches
    records = sweep(train, test, cfg, [{"d": 8}, {"d": 16, "reduction": "pca"}, {"eps": 1.0}])
    assert [r["d"] for r in records] == [8, 16, cfg.d]
    assert records[1]["reduction"] == "pca" and "model" not in records[0]
    for variant, record in zip([{"d": 8}, {"d": 16, "reduction": "pca"}, {"eps": 1.0}], records):
        ref = evaluate_cached(cfg.replace(**variant), train, test)
        for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
            assert record[key] == pytest.approx(ref[key], abs=1e-9), (variant, key)
    assert records[0]["pixel_auroc"] != records[1]["pixel_auroc"]  # the variants really differ


def test_course_figures_are_drawn(tmp_path):
    coarse = np.arange(4.0).reshape(2, 2)
    fig = plot_upsampling({"coarse": coarse, "fine": np.kron(coarse, np.ones((4, 4)))}, image_size=32)
    assert len(fig.axes) == 3 and fig.axes[0].get_xlabel() == "x (px)"  # two panels and a colour bar
    save_figure(fig, tmp_path / "up.png")
    fig = plot_channel_layout([3, 5], ["a", "b"], picked=[0, 4, 7], title="t")
    assert fig.axes[0].get_xlim() == (0, 8) and fig.axes[0].get_title() == "t"
    save_figure(fig, tmp_path / "layout.png")
    assert (tmp_path / "up.png").stat().st_size > 0 and (tmp_path / "layout.png").stat().st_size > 0
