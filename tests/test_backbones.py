"""Tests for padim_utils.backbones (CPU, offline, well under a minute)."""

import copy
import re
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from padim_utils import backbones as bb
from padim_utils.backbones import (
    FeatureExtractor,
    available_backbones,
    build_backbone,
    default_layers,
    embed,
    feature_extractor,
    lite0_checkpoint_path,
)
from padim_utils.errors import PadimError

# name -> (default layers, channels, strides), as documented in the module docstring
EXPECTED = {
    "resnet18": (("layer1", "layer2", "layer3"), [64, 128, 256], [4, 8, 16]),
    "wide_resnet50_2": (("layer1", "layer2", "layer3"), [256, 512, 1024], [4, 8, 16]),
    "efficientnet_b5": (("block6", "block19", "block25"), [40, 128, 176], [4, 16, 16]),
    "efficientnet_lite0": (("blocks.1", "blocks.2", "blocks.4"), [24, 40, 112], [4, 8, 16]),
}


@pytest.fixture(scope="module")
def lite0_source():
    """The package's checkpoint, as shipped (lukemelas key names)."""
    return torch.load(lite0_checkpoint_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_model():
    return build_backbone("efficientnet_lite0", pretrained=True).eval()


def test_registry():
    assert available_backbones() == list(EXPECTED)
    for name, (layers, _, _) in EXPECTED.items():
        assert default_layers(name) == layers


@pytest.mark.parametrize("name", list(EXPECTED))
def test_default_layers_shapes(name):
    layers, channels, strides = EXPECTED[name]
    torch.manual_seed(0)
    fe = feature_extractor(name, pretrained=False)
    assert fe.name == name and fe.layers == layers
    assert fe.channels == channels and fe.strides == strides
    assert fe.mean == (0.485, 0.456, 0.406) and fe.std == (0.229, 0.224, 0.225)
    assert not fe.training and not any(p.requires_grad for p in fe.parameters())
    fe.train()  # must stay frozen
    assert not fe.training

    x = torch.randn(2, 3, 64, 96)
    maps = fe(x)
    assert [tuple(m.shape) for m in maps] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(channels, strides)
    ]
    assert tuple(embed(maps).shape) == (2, sum(channels), 16, 24)


def test_truncation_drops_unused_stages():
    fe = feature_extractor("resnet18", pretrained=False)
    assert fe.stage_names == ["stem", "layer1", "layer2", "layer3"]  # no layer4 / fc
    fe = feature_extractor("efficientnet_b5", pretrained=False)
    assert fe.stage_names[-1] == "block25" and len(fe.stage_names) == 1 + 26
    fe = feature_extractor("resnet18", layers=("layer1",), pretrained=False)
    assert fe.stage_names == ["stem", "layer1"] and fe.channels == [64] and fe.strides == [4]


# torchvision node names of the same layers, for create_feature_extractor
TV_NODES = {
    "resnet18": {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"},
    "wide_resnet50_2": {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"},
    # features[1..7] hold 3, 5, 5, 7, 7, 9, 3 blocks
    "efficientnet_b5": {"features.2.3": "block6", "features.4.6": "block19", "features.5.5": "block25"},
}


def _effb5_levels():
    """(level, channels, stride) of every MBConv block of torchvision's efficientnet_b5, in order,
    measured by running the blocks: features[1..7] are the paper's levels 1..7."""
    import torchvision.models as tvm

    model = tvm.efficientnet_b5(weights=None).eval()
    x = torch.zeros(1, 3, 64, 64)
    rows = []
    with torch.no_grad():
        x = model.features[0](x)
        for level in range(1, 8):
            for block in model.features[level]:
                x = block(x)
                rows.append((level, int(x.shape[1]), 64 // int(x.shape[-1])))
    return rows


def test_effb5_layers_are_the_papers_one_based_layers():
    # The paper: "layers 7 (level 2), 20 (level 4) and 26 (level 5)" of EfficientNet-B5, all channels kept.
    rows = _effb5_levels()
    assert len(rows) == 39 and [r[0] for r in rows].count(4) == 7
    paper = {7: 2, 20: 4, 26: 5}  # paper layer number -> level
    assert {n: rows[n - 1][0] for n in paper} == paper  # counted from 1, every level label holds
    assert rows[20][0] == 5  # counted from 0, "20" would be a level-5 block, not level 4
    fe = feature_extractor("efficientnet_b5", pretrained=False)
    assert fe.layers == tuple(f"block{n - 1}" for n in paper)
    assert fe.channels == [rows[n - 1][1] for n in paper] == [40, 128, 176]
    assert fe.strides == [rows[n - 1][2] for n in paper] == [4, 16, 16]
    assert sum(fe.channels) == 344
    assert bb.paper_d("efficientnet_b5") is None  # no "Rd" in the paper's B5 model: all channels


def test_paper_d_per_backbone():
    assert {n: bb.paper_d(n) for n in available_backbones()} == {
        "resnet18": 100, "wide_resnet50_2": 550, "efficientnet_b5": None, "efficientnet_lite0": 100}
    with pytest.raises(PadimError, match="unknown backbone"):
        bb.paper_d("vgg16")


@pytest.mark.parametrize("name", list(TV_NODES))
def test_truncated_forward_matches_torchvision_reference(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    full = build_backbone(name, pretrained=False).eval()
    fe = FeatureExtractor(name, copy.deepcopy(full))
    reference = create_feature_extractor(full, return_nodes=TV_NODES[name]).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
    assert fe.channels_last  # the layout as built
    fast = fe(x)  # batch norm folded, channels-last
    exact = FeatureExtractor(name, copy.deepcopy(full), fold_bn=False).use_channels_last(False)(x)
    assert list(expected) == list(fe.layers)
    for layer, got, nchw in zip(fe.layers, fast, exact):
        assert got.std() > 0  # a meaningful comparison, not zeros against zeros
        torch.testing.assert_close(nchw, expected[layer], rtol=0, atol=0)  # unfolded NCHW: the same arithmetic
        scale = float(expected[layer].abs().max())
        torch.testing.assert_close(got, expected[layer], rtol=1e-4, atol=1e-5 * scale)  # float rounding
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_lite0_truncated_forward_matches_full_timm_forward(lite0_model):
    fe = FeatureExtractor("efficientnet_lite0", copy.deepcopy(lite0_model))
    captured = {}
    hooks = [
        lite0_model.blocks[i].register_forward_hook(
            lambda mod, inp, out, key=f"blocks.{i}": captured.__setitem__(key, out)
        )
        for i in (1, 2, 4)
    ]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        lite0_model(x)  # the full classifier forward, head included
    for h in hooks:
        h.remove()
    fast = fe(x)  # batch norm folded, channels-last: float rounding away
    plain = FeatureExtractor("efficientnet_lite0", copy.deepcopy(lite0_model), fold_bn=False).use_channels_last(False)
    for layer, got, nchw in zip(fe.layers, fast, plain(x)):
        torch.testing.assert_close(nchw, captured[layer], rtol=0, atol=0)
        torch.testing.assert_close(got, captured[layer], rtol=1e-4, atol=1e-5 * float(captured[layer].abs().max()))


def _randomise_batchnorm(model, seed):
    """Random running statistics and affine parameters: folding identity-like BN (a fresh
    network's) would prove little."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


@pytest.mark.parametrize("name", available_backbones())
def test_folded_batchnorm_computes_the_same_function(name):
    torch.manual_seed(0)
    full = _randomise_batchnorm(build_backbone(name, pretrained=False).eval(), seed=4).double()
    plain = FeatureExtractor(name, copy.deepcopy(full), fold_bn=False)
    folded = FeatureExtractor(name, copy.deepcopy(full))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert n_bn > 10 and folded.folded_batchnorms == n_bn  # every BN of these networks follows a convolution
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for got, want in zip(folded(x), plain(x)):
        assert want.std() > 0.1
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))


def test_fold_batchnorm_leaves_a_bn_that_reads_no_convolution_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(4),
                              torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    _randomise_batchnorm(net, seed=6)
    x = torch.randn(1, 3, 8, 8)
    want = net(x)
    assert bb.fold_batchnorm(net, x) == 1  # only conv -> BN; ReLU -> BN stays
    assert isinstance(net[2], torch.nn.BatchNorm2d) and isinstance(net[4], torch.nn.Identity)
    torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [31, 32, 33, 64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_pad_conv_equals_timm_conv2d_same(size, channels_last):
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    for k, stride, groups in [(3, 2, 8), (5, 2, 8), (3, 1, 1), (3, 2, 1)]:
        ref = Conv2dSame(8, 8, k, stride, groups=groups, bias=True).eval()
        ours = bb.SamePadConv2d.replacing(ref)
        x = torch.randn(2, 8, size, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)  # the same padded input


def test_same_pad_conv_traced_pads_with_one_op():
    """Under torch.export (what the ONNX exporter and torch.compile trace) the pad is one aten.pad,
    not the eager path's copy into an empty tensor (index_put: ScatterND and transposes in ONNX), with
    timm's values."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    ref = Conv2dSame(8, 8, 3, 2, groups=8, bias=True).eval()
    ours = bb.SamePadConv2d.replacing(ref)
    x = torch.randn(2, 8, 33, 33)
    program = torch.export.export(ours, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["aten.pad.default", "aten.conv2d.default"]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ref(x), rtol=0, atol=0)


def test_layout_policy_per_backbone_and_device():
    assert all(bb.prefers_channels_last(n, "cpu") for n in available_backbones())
    assert bb.prefers_channels_last("resnet18", "cuda") and bb.prefers_channels_last("wide_resnet50_2", "cuda:1")
    assert not bb.prefers_channels_last("efficientnet_lite0", "cuda")  # cuDNN's NHWC depthwise: 27x slower
    assert not bb.prefers_channels_last("efficientnet_b5", torch.device("cuda", 0))
    assert not bb.prefers_channels_last("resnet18", "mps")  # unmeasured devices: PyTorch's default layout
    with pytest.raises(PadimError, match="unknown backbone"):
        bb.prefers_channels_last("vgg16", "cpu")


def test_padim_takes_the_layout_of_its_device(monkeypatch):
    from padim_utils import Padim, preset

    cfg = preset("quick").replace(device="cpu")
    assert Padim(cfg).extractor.channels_last
    monkeypatch.setitem(bb.CHANNELS_LAST, "cpu", {**bb.CHANNELS_LAST["cpu"], "efficientnet_lite0": False})
    model = Padim(cfg)
    assert not model.extractor.channels_last
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    nchw = model.forward_layers(images)
    assert all(f.is_contiguous() for f in nchw)
    model.extractor.use_channels_last(True)
    for a, b in zip(model.forward_layers(images), nchw):  # the two layouts: float rounding apart
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


# ---------------------------------------------------------------- lite0 weights


def test_lite0_every_tensor_loaded(lite0_source, lite0_model):
    target = lite0_model.state_dict()
    assert len(target) == len(lite0_source) == 296
    for (src_key, src), (dst_key, dst) in zip(lite0_source.items(), target.items()):
        assert src.shape == dst.shape, (src_key, dst_key)
        assert torch.equal(src, dst), (src_key, dst_key)
    # spot checks on named modules
    assert torch.equal(lite0_model.conv_stem.weight, lite0_source["_conv_stem.weight"])
    assert torch.equal(lite0_model.blocks[0][0].conv_dw.weight,
                       lite0_source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(lite0_model.blocks[1][0].conv_pw.weight,
                       lite0_source["_blocks.1._expand_conv.weight"])
    assert torch.equal(lite0_model.blocks[6][0].conv_pwl.weight,
                       lite0_source["_blocks.15._project_conv.weight"])
    assert torch.equal(lite0_model.classifier.weight, lite0_source["_fc.weight"])


def _timm_key_for(lukemelas_key, stage_sizes):
    """Translate a lukemelas EfficientNet key into timm's name, from module roles
    (independent of the positional pairing used by the loader)."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
           "_bn1": "bn2", "_fc": "classifier"}
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", lukemelas_key)
    if m is None:
        module, param = lukemelas_key.split(".")
        return f"{top[module]}.{param}"
    flat, module, param = int(m[1]), m[2], m[3]
    stage = 0
    while flat >= stage_sizes[stage]:
        flat -= stage_sizes[stage]
        stage += 1
    if stage == 0:  # depthwise-separable block: no expansion conv
        roles = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:
        roles = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    return f"blocks.{stage}.{flat}.{roles[module]}.{param}"


def test_lite0_in_order_pairing_matches_module_roles(lite0_source):
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    stage_sizes = [len(stage) for stage in model.blocks]
    assert stage_sizes == [1, 2, 2, 3, 3, 4, 1]
    renamed = bb._rename_in_order(lite0_source, model.state_dict())
    for (src_key, src), (dst_key, dst) in zip(lite0_source.items(), renamed.items()):
        assert _timm_key_for(src_key, stage_sizes) == dst_key
        assert dst is src


def test_lite0_rename_rejects_shape_mismatch(lite0_source):
    import timm

    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    broken = dict(lite0_source)
    broken["_blocks.3._expand_conv.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(PadimError, match=r"_blocks\.3\._expand_conv\.weight"):
        bb._rename_in_order(broken, target)


def test_lite0_pretrained_is_not_degenerate(lite0_model):
    bns = [m for m in lite0_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 49
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    assert all(bn.running_mean.abs().max() > 0 for bn in bns)

    fe = feature_extractor("efficientnet_lite0")
    gradient = torch.linspace(0, 255, 224).to(torch.uint8)
    image = torch.stack([gradient[None, :].expand(224, 224), gradient[:, None].expand(224, 224),
                         torch.full((224, 224), 80, dtype=torch.uint8)])[None]
    with torch.no_grad():
        probs = lite0_model(fe.normalize(image)).softmax(-1)[0]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    assert probs.max() > 10 / 1000 and entropy < 0.9 * np.log(1000)


@pytest.mark.parametrize("image_name, classes", [
    ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger, Persian, Siamese, Egyptian cat
    ("coffee", {967, 968}),                  # espresso, cup
])
def test_lite0_classifies_real_photos(lite0_model, image_name, classes):
    skdata = pytest.importorskip("skimage.data")
    image = torch.from_numpy(np.ascontiguousarray(getattr(skdata, image_name)()))
    image = image.permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    image = image.round().clamp(0, 255).to(torch.uint8)
    x = feature_extractor("efficientnet_lite0", pretrained=False).normalize(image)
    with torch.no_grad():
        top1 = int(lite0_model(x).argmax())
    assert top1 in classes


# ---------------------------------------------------------------- errors


def test_missing_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no internet (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PadimError) as info:
        feature_extractor("resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "TORCH_HOME" in message and "efficientnet_lite0" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "no internet (test)" in message


def test_corrupt_cached_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(PadimError, match="could not be loaded") as info:
        feature_extractor("resnet18")
    assert "TORCH_HOME" in str(info.value) and "efficientnet_lite0" in str(info.value)


def test_unknown_backbone():
    with pytest.raises(PadimError) as info:
        feature_extractor("vgg16")
    for name in available_backbones():
        assert name in str(info.value)
    with pytest.raises(PadimError):
        default_layers("vgg16")


def test_unknown_layer_is_reported_before_building(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("must not build the model for a bad layer name")

    monkeypatch.setattr(bb, "build_backbone", no_build)
    with pytest.raises(PadimError) as info:
        feature_extractor("resnet18", layers=("layer1", "layer9"))
    message = str(info.value)
    assert "layer9" in message and all(f"layer{i}" in message for i in range(1, 5))
    with pytest.raises(PadimError, match="blocks.4"):
        feature_extractor("efficientnet_lite0", layers=("block7",))
    with pytest.raises(PadimError, match="network order"):
        feature_extractor("resnet18", layers=("layer2", "layer1"))


def test_normalize_matches_numpy():
    fe = feature_extractor("efficientnet_lite0", pretrained=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 3, 5, 7), dtype=np.uint8)
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    expected = (images / 255.0 - mean) / std
    got = fe.normalize(torch.from_numpy(images))
    assert got.dtype == torch.float32 and got.device == torch.device("cpu")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(PadimError, match="uint8"):
        fe.normalize(torch.from_numpy(images).float())


def test_embed_nearest_upsampling():
    f1 = torch.arange(16.0).reshape(1, 1, 4, 4)
    f2 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    out = embed([f1, f2])
    assert out.shape == (1, 2, 4, 4)
    assert torch.equal(out[0, 0], f1[0, 0])
    assert torch.equal(out[0, 1], torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]))
    assert embed([f1, f2], size=(8, 8)).shape == (1, 2, 8, 8)
