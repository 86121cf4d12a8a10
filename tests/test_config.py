"""Config presets, validation and JSON round trip."""

import pytest

from padim_utils.config import PRESETS, PadimConfig, preset
from padim_utils.errors import PadimError



def test_paper_presets_follow_the_paper():
    r18, wr50 = preset("paper_r18"), preset("paper_wr50")
    assert (r18.backbone, r18.d, r18.reduction, r18.image_size, r18.crop) == ("resnet18", 100, "random", 256, 224)
    assert (wr50.backbone, wr50.d) == ("wide_resnet50_2", 550)
    assert r18.eps == 0.01 and r18.sigma == 4.0
    assert preset("offline_lite0").crop is None
    b5 = preset("paper_effb5")  # "PaDiM-EfficientNet-B5": no "Rd", every channel of layers 7, 20, 26
    assert (b5.backbone, b5.layers, b5.reduction) == ("efficientnet_b5", None, "none")


def test_interpolation_follows_the_paper_except_anomalibs_variants():
    assert PadimConfig().interpolation == "bicubic"  # the paper resizes images and maps bicubically
    assert {name: cfg.interpolation for name, cfg in PRESETS.items()} == {
        "paper_r18": "bicubic", "paper_wr50": "bicubic", "paper_effb5": "bicubic",
        "offline_lite0": "bilinear", "quick": "bilinear"}  # anomalib's no-crop variant resizes bilinearly


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    cfg = PRESETS[name].replace(layers=("a", "b"))
    assert PadimConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("changes, message", [
    ({"reduction": "svd"}, "reduction must be one of"),
    ({"device": "tpu"}, "device must be one of"),
    ({"crop": 300}, r"^crop \(300\) must not be larger than image_size \(256\)$"),
    ({"crop": 16}, r"^crop must be an integer >= 32 or None, got 16$"),
    ({"image_size": 16, "crop": None}, r"^image_size must be an integer >= 32, got 16$"),
    ({"eps": 0}, "eps must be positive"),
    ({"d": 0}, "d must be a positive"),
    ({"interpolation": "lanczos"}, "^interpolation must be one of bicubic, bilinear, got 'lanczos'$"),
    ({"interpolation": "BICUBIC"}, "interpolation must be one of"),
    ({"bogus": 1}, "unknown config option"),
])
def test_bad_values_are_clear_errors(changes, message):
    with pytest.raises(PadimError, match=message) as info:
        PadimConfig().replace(**changes)
    assert "\n" not in str(info.value)


def test_unknown_preset():
    with pytest.raises(PadimError, match="unknown config preset 'r18'; choose one of paper_r18"):
        preset("r18")
