"""padim_utils: PaDiM (Defard et al., 2020, arXiv 2011.08785), step by step.

The method, in the order a learner reads it (one module a step, at the top of the package):
    config       0. PadimConfig, its presets, and Geometry (resize, crop, interpolation)
    backbones    1. a frozen ImageNet CNN: its layers, upsampled and concatenated (receptive fields too)
    reduction    2. d random channels, or PCA, or none
    gaussian     3. one Gaussian per patch position, streamed (Sigma + eps I)
    scoring      4. Mahalanobis distance maps, upsampled and blurred; image score = max
    metrics      5. image/pixel AUROC, F1, AU-PRO to FPR 0.3 (metric_inputs: what they accept)
    model        Padim: the steps behind fit / predict / save / load
    distributed  the fit under torchrun;  export: the inference as one ONNX graph

The floors, lowest first: a module imports only from its own floor and the floors before it.
    foundation   errors (PadimError), extras (optional parts), files (atomic writes), progress (bars),
                 measure (seconds, peak memory), markdown (tables), paper (the paper's published facts), config
    datasets/    images in: MVTec AD, Rd-MVTec, STC, BTAD, VisA, your folders, the embedded sets
    method       the steps above
    figures      plots
    experiments/ benchmarks, the feature cache, ablations (one sweep), STC runs, `padim reproduce`
    course/      notebook helpers, exercises, the book; and cli, the `padim` command

`tests/test_layout.py` checks the floors, and that no circle, no private name across modules and no
in-function import (but optional heavy ones) creeps in.
"""

import importlib

__version__ = "0.1.0"

#: module -> the short names it lends the package root (`from padim_utils import Padim`)
_LAZY = {
    "model": ("Padim",),
    "config": ("PadimConfig", "Geometry", "preset", "env_flag"),
    "errors": ("PadimError",),
    "experiments.features": ("FeatureCache",),
    "experiments.benchmark": ("run_benchmark",),
    "course.notebook": ("course_data", "env_device", "environment_report", "show_source",
                        "check_exercise"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name):  # lazy, so `import padim_utils` stays cheap
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():  # tab completion shows the lazily imported names too
    return sorted(set(globals()) | set(_HOME))
