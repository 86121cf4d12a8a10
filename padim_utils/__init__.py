"""padim_utils: PaDiM (Defard et al., 2020, arXiv 2011.08785), step by step.

Modules, in the order of the method:
    config     PadimConfig and named presets
    data       MVTec AD-layout datasets (uint8 tensors) and your own image folders
    imagecache decoded images kept on disk (PADIM_CACHE), keyed by content and geometry
    loader     batches from worker processes that outlive a pass (the GPU's decoding)
    synthetic  an embedded synthetic dataset in the MVTec AD layout (scenes: its drawings)
    stc        ShanghaiTech Campus video frames: loader, synthetic clips, one model per scene
    stc_walkway  an STC-layout scene where more normal frames can blind PaDiM (the codec gap, chapter 07)
    rd_mvtec   Rd-MVTec AD: MVTec AD randomly rotated and cropped, masks alike
    datasets   BTAD, VisA, your own folders, MVTec AD's category groups; open_dataset for every name
    download   `padim download`: resumable, SHA-256 checked, extracted atomically
    backbones  frozen CNN feature extractors (ResNet18, WR50, EfficientNet-B5/Lite0)
    reduction  random / PCA channel reduction
    gaussian   streaming per-position Gaussian fit
    scoring    Mahalanobis maps, blur, image scores
    metrics    image/pixel AUROC, F1, AU-PRO (MVTec AD definitions)
    model      Padim: fit / predict / save / load
    export     the whole inference as one ONNX graph, validated with onnxruntime
    features   FeatureCache: layer outputs computed once, re-fit in seconds
    experiment run_benchmark: fit + predict + metrics, one record per category
    paper      the paper's published numbers and tables in its format
    reproduce  `padim reproduce`: the paper's Tables I-VIII re-run, resumable (units: reproduce_units,
               tables: reproduce_tables)
    plots      figures
    course     what the notebooks start with (env settings, data, show_source, check_exercise)
    cli        the `padim` command
    files      atomic writes; errors: PadimError, the one user-facing exception
"""

__version__ = "0.1.0"

_LAZY = {
    "Padim": ("model", "Padim"),
    "PadimConfig": ("config", "PadimConfig"),
    "preset": ("config", "preset"),
    "PadimError": ("errors", "PadimError"),
    "FeatureCache": ("features", "FeatureCache"),
    "run_benchmark": ("experiment", "run_benchmark"),
    "course_data": ("course", "course_data"),
    "env_flag": ("course", "env_flag"),
    "env_device": ("course", "env_device"),
    "environment_report": ("course", "environment_report"),
    "show_source": ("course", "show_source"),
    "check_exercise": ("course", "check_exercise"),
}
__all__ = sorted(_LAZY)


def __getattr__(name):  # lazy, so `import padim_utils` stays cheap
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():  # tab completion shows the lazily imported names too
    return sorted(set(globals()) | set(_LAZY))
