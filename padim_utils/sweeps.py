"""Course analyses that look at many settings at once: layer geometry and sweeps over cached features.

    rows = layer_geometry(model.extractor, image_size=256)   # channels, stride, grid, receptive field
    records = sweep(cfg, train_cache, test_cache, [{"d": 10}, {"d": 50, "reduction": "pca"}])

`sweep` re-fits PaDiM for each variant with the pipeline's own `Padim.fit` / `Padim.predict_dataset`
on `FeatureCache`s, building the backbone only once: a variant that changes only what happens after
the backbone (d, reduction, seed, eps, sigma, position_chunk, batch_size) shares the first model's
frozen feature extractor; any other change builds a new `Padim`.
"""

from __future__ import annotations

import copy

from torch import nn

from .config import PadimConfig
from .reduction import Reducer

__all__ = ["receptive_field", "layer_geometry", "sweep", "AFTER_BACKBONE"]

#: Config fields that only change what happens after the backbone: a sweep over them shares the backbone.
AFTER_BACKBONE = frozenset({"d", "reduction", "seed", "eps", "sigma", "position_chunk", "batch_size"})


def _walk(module: nn.Module, rf: int, jump: int) -> tuple[int, int]:
    """Grow (receptive field, jump) through the convolutions and poolings of `module`, in order."""
    for name, m in module.named_modules():
        if "downsample" in name.split("."):  # ResNet shortcut: parallel to the main path, not after it
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, dil = (getattr(m, a, 1) for a in ("kernel_size", "stride", "dilation"))
            k, s, dil = (v[0] if isinstance(v, tuple) else v for v in (k, s, dil))
            rf += (dil * (k - 1)) * jump
            jump *= s
    return rf, jump


def receptive_field(extractor) -> dict[str, int]:
    """Theoretical receptive field (pixels of the input image) of each hooked layer of a `FeatureExtractor`.

    Walks the convolutions (and max/avg poolings) of its stages in network order with the
    textbook recursion r <- r + (k - 1) * j, j <- j * s (j: distance in input pixels between
    neighbouring units). Shortcut convolutions run beside the main path and are skipped; the global
    pooling of squeeze-excitation blocks (EfficientNet-B5) is not counted.
    """
    rf, jump, out = 1, 1, {}
    for name, stage in zip(extractor.stage_names, extractor.stages):
        rf, jump = _walk(stage, rf, jump)
        if name in extractor.layers:
            out[name] = rf
    return out


def layer_geometry(extractor, image_size: int) -> list[dict]:
    """One row per hooked layer: channels, stride, grid side at `image_size` px, and receptive field (px)."""
    rfs = receptive_field(extractor)
    return [{"layer": name, "channels": c, "stride": s, "grid": f"{image_size // s}x{image_size // s}",
             "receptive field (px)": rfs[name]}
            for name, c, s in zip(extractor.layers, extractor.channels, extractor.strides)]


def sweep(config: PadimConfig, train, test, variants: list[dict], progress: bool = False) -> list[dict]:
    """Fit and evaluate `config.replace(**v)` for each variant v on cached features.

    `train`, `test`: `FeatureCache`s of `config`'s backbone and image size. Returns one record per
    variant: the variant's keys, the metrics of `metrics.evaluate`, `d`, `fit_seconds` and
    `predict_seconds` (no maps: they would fill memory over a long sweep; use
    `experiment.evaluate_cached` for one variant's maps).
    """
    from .experiment import evaluate_cached  # imported here: these modules build backbones
    from .model import Padim

    base = None
    records = []
    for variant in variants:
        cfg = config.replace(**variant)
        if set(variant) <= AFTER_BACKBONE:
            if base is None:
                base = Padim(config)
            model = copy.copy(base)  # shares the frozen extractor; fit replaces mean and precision
            model.config = cfg
            model.reducer = Reducer(cfg.reduction, base.extractor.channels, cfg.d, cfg.seed)
        else:
            model = Padim(cfg)
        out = evaluate_cached(cfg, train, test, progress=progress, model=model)
        records.append({**variant, **{k: v for k, v in out.items() if k not in ("model", "result")}})
    return records
