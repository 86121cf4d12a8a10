"""The units of `padim reproduce`: one fit and one evaluation each, on cached backbone features.

A unit is (study, backbone, category, setting, seed). Its result is one JSON file,
`OUT/results/<run key>/<backbone>/<study>/<category>/<setting>/seed<k>.json`, which is what makes
a run resumable. The studies, and which of the paper's tables read them:

    study      tables     settings (the paper's names where it has them)
    layers     I          layer1, layer2, layer3 (the i-th hooked layer alone), sum_of_3_maps,
                          joint_gaussian_1_2_3 (one Gaussian over all three); every channel kept
    reduction  II         none_448 (every channel), random_100, pca_100, random_200, pca_200: the
                          paper's d for ResNet18's 448 channels, scaled to our channel count
    mvtec      III, V     main: the backbone's preset (random d channels) on one MVTec AD category;
                          III also "bicubic" or "bilinear": the same with the other interpolation
                          (image resize and map upsampling) than the preset's
    stc        IV, VIII   main: the same on one STC scene (frames resized, never cropped)
    rd         VI         rd0 ... rd4: the same on Rd-MVTec, one random rotation + crop per draw
    cost       VII, VIII  main: the whole pipeline from the image files, timed, peak memory

Everything but `cost` re-fits from `FeatureCache`s: the backbone sees each (category, split,
geometry) once per run (`Context.caches`); the seeds only change which random channels are kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..config import INTERPOLATIONS, PadimConfig, preset
from ..datasets import MVTecDataset, RdMVTecDataset, STCDataset
from ..errors import PadimError
from ..files import file_digest, new_digest
from ..measure import device_name, peak_memory_bytes, reset_peak_memory, timed
from ..metrics import evaluate
from ..model import Padim, resolve_device
from .ablations import select_layers
from .benchmark import evaluate_cached
from .features import FeatureCache

__all__ = ["Unit", "Sources", "Context", "run_unit", "files_digest", "base_config", "scaled_d", "LAYER_SETTINGS",
           "REDUCTION_SETTINGS", "PAPER_PRESETS", "RD_DRAWS", "STUDIES"]

STUDIES = ("layers", "reduction", "mvtec", "stc", "rd", "cost")
#: Table I's settings, named as in `paper_results.json`'s "ablation_layers_r18_all448".
LAYER_SETTINGS = ("layer1", "layer2", "layer3", "sum_of_3_maps", "joint_gaussian_1_2_3")
#: Table II's settings, named as in "ablation_reduction_r18".
REDUCTION_SETTINGS = ("none_448", "random_100", "pca_100", "random_200", "pca_200")
#: The paper's Rd-MVTec: 5 random preprocessings (their `rd_mvtec.RD_SEEDS`).
RD_DRAWS = (0, 1, 2, 3, 4)
#: The preset a backbone runs with outside quick mode (the paper's d for the paper's backbones).
PAPER_PRESETS = {"resnet18": "paper_r18", "wide_resnet50_2": "paper_wr50", "efficientnet_b5": "paper_effb5",
                 "efficientnet_lite0": "offline_lite0"}
_R18_CHANNELS = 448  # the paper's d = 100 / 200 are out of ResNet18's 448 channels


@dataclass(frozen=True, order=True)
class Unit:
    """One fit + evaluation of the plan (see the module docstring)."""

    study: str
    backbone: str
    category: str  # an MVTec AD category, or an STC scene
    setting: str
    seed: int = 0

    @property
    def path(self) -> Path:
        """Where its result lives, relative to OUT/results."""
        return Path(self.backbone, self.study, self.category, self.setting, f"seed{self.seed}.json")

    def __str__(self) -> str:
        return f"{self.study} {self.backbone} {self.category} {self.setting} seed {self.seed}"


@dataclass(frozen=True)
class Sources:
    """The data a run uses: MVTec AD (real or embedded) and STC (real or synthetic)."""

    mvtec_root: Path
    mvtec: str  # "MVTec AD" or "embedded synthetic"
    categories: tuple[str, ...]
    stc_root: Path | None  # None where no table asked for needs STC
    stc: str  # "ShanghaiTech Campus", "synthetic STC-layout" or "not used"
    scenes: tuple[str, ...]
    frames_per_video: int | None  # STC training frames sampled per video

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}


def base_config(backbone: str, quick: bool, device: str = "auto") -> PadimConfig:
    """The backbone's preset (`PAPER_PRESETS`), or in quick mode the 64 px `quick` preset with this backbone."""
    if quick:
        return preset("quick").replace(backbone=backbone, layers=None, device=device)
    if backbone not in PAPER_PRESETS:
        raise PadimError(f"no preset for backbone {backbone!r}; choose one of {', '.join(PAPER_PRESETS)}")
    return preset(PAPER_PRESETS[backbone]).replace(device=device)


def scaled_d(paper_d: int, channels: int) -> int:
    """The paper's d out of ResNet18's 448 channels, as the same fraction of `channels` (exact for ResNet18):
    EfficientNet-Lite0's 176 channels keep 39 where ResNet18 keeps 100.

    >>> scaled_d(100, 448), scaled_d(100, 176), scaled_d(200, 1792)
    (100, 39, 800)
    """
    return max(1, min(channels, round(paper_d * channels / _R18_CHANNELS)))


def rd_crop(image_size: int) -> int:
    """Rd-MVTec's crop for an image side: 256 -> 224 as in the paper (64 -> 56 in quick mode)."""
    return image_size * 7 // 8


def files_digest(root: Path, files) -> str:
    """The content digest (`files.new_digest`) of the files' paths relative to `root` and of their bytes, each
    file read whole: the same for the same data, different as soon as a file is added, removed or rewritten,
    even in place with its old size and modification time (about 1 s per GB)."""
    h = new_digest()
    for path in sorted(files):
        try:
            if not path.is_file():
                continue  # a folder, or a broken link: not data
            content = file_digest(path)
        except OSError:
            continue  # vanished or unreadable: not data
        h.update(f"{path.relative_to(root).as_posix()}\0{content}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


class Context:
    """What units share during one run: the data, the device and the backbone's cached layer outputs."""

    def __init__(self, sources: Sources, quick: bool, device: str = "auto", keep: int = 4,
                 feature_dir: Path | None = None):
        self.sources, self.quick, self.device = sources, quick, device
        self.keep = keep  # feature caches kept in memory (the plan orders units so neighbours share them)
        self._caches: OrderedDict[tuple, FeatureCache] = OrderedDict()
        self._data_keys: dict[tuple[str, str], str] = {}
        # The same caches on disk (the `keep` newest files), so a run interrupted inside a category
        # does not run the backbone over that category again.
        self.feature_dir = feature_dir

    def config(self, unit: Unit) -> PadimConfig:
        """The unit's config before its setting: geometry per study, its seed."""
        cfg = base_config(unit.backbone, self.quick, self.device).replace(seed=unit.seed)
        if unit.study == "mvtec" and unit.setting in INTERPOLATIONS:
            cfg = cfg.replace(interpolation=unit.setting)
        if unit.study == "stc":
            return cfg.replace(crop=None)  # the paper: STC frames resized to 256, no crop
        if unit.study == "rd":
            return cfg.replace(crop=rd_crop(cfg.image_size))
        return cfg

    def data_key(self, unit: Unit) -> str:
        """A digest of the unit's data as it is now: the content of every file of its MVTec AD category (or STC
        scene), once per run. A saved result or feature file with another key is not reused."""
        kind = "stc" if unit.study == "stc" else "mvtec"
        if (kind, unit.category) not in self._data_keys:
            if kind == "stc":
                root = self.sources.stc_root
                files = [p for pattern in (f"training/videos/{unit.category}_*", f"testing/*/{unit.category}_*",
                                           f"testing/frames/{unit.category}_*/*") for p in root.glob(pattern)]
            else:
                root = self.sources.mvtec_root
                files = list((root / unit.category).rglob("*"))
            self._data_keys[kind, unit.category] = files_digest(root, files)
        return self._data_keys[kind, unit.category]

    def dataset(self, unit: Unit, split: str, cfg: PadimConfig):
        """The unit's split, sized for `cfg`."""
        s, geometry = self.sources, cfg.geometry
        if unit.study == "stc":
            return STCDataset(s.stc_root, unit.category, split, frames_per_video=s.frames_per_video, geometry=geometry)
        if unit.study == "rd":
            return RdMVTecDataset(s.mvtec_root, unit.category, split, seed=int(unit.setting.removeprefix("rd")),
                                  geometry=geometry)
        return MVTecDataset(s.mvtec_root, unit.category, split, geometry=geometry)

    def caches(self, unit: Unit, cfg: PadimConfig) -> tuple[FeatureCache, FeatureCache]:
        """(train, test) layer outputs of the unit's data, computed once per backbone, geometry and data."""
        data = unit.setting if unit.study == "rd" else "stc" if unit.study == "stc" else "mvtec"
        out = []
        for split in ("train", "test"):
            key = (cfg.backbone, cfg.layers, cfg.image_size, cfg.crop, cfg.interpolation, cfg.dtype, cfg.pretrained,
                   __version__, data, unit.category, split, self.data_key(unit))
            if key not in self._caches:
                self._caches[key] = self._load_or_compute(key, unit, split, cfg)
                while len(self._caches) > self.keep:
                    self._caches.popitem(last=False)
            self._caches.move_to_end(key)
            out.append(self._caches[key])
        return out[0], out[1]

    def clear(self) -> None:
        """Drop every cached feature (before a unit that measures peak memory)."""
        self._caches.clear()

    def _load_or_compute(self, key: tuple, unit: Unit, split: str, cfg: PadimConfig) -> FeatureCache:
        """The layer outputs for `key`: read from `feature_dir` when an earlier run saved them, else computed
        (and saved there, atomically, the oldest files beyond `keep` removed)."""
        if self.feature_dir is None:
            return FeatureCache.compute(self.dataset(unit, split, cfg), cfg, progress=False)
        path = self.feature_dir / (hashlib.sha256(repr(key).encode()).hexdigest()[:16] + ".safetensors")
        if path.is_file():
            try:
                cache = FeatureCache.load(path)
                cache.check_config(cfg)
                return cache
            except PadimError:
                path.unlink(missing_ok=True)  # unreadable or stale: compute it again
        cache = FeatureCache.compute(self.dataset(unit, split, cfg), cfg, progress=False)
        cache.save(path)
        for old in sorted(self.feature_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[: -self.keep]:
            old.unlink(missing_ok=True)
        return cache


# ---------------------------------------------------------------------------- one unit
def _summary(out: dict, train: FeatureCache) -> dict:
    """The JSON-able part of an `evaluate_cached` result."""
    model = out["model"]
    return {"image_auroc": out["image_auroc"], "image_f1": out["image_f1"], "pixel_auroc": out["pixel_auroc"],
            "pixel_aupro": out["pixel_aupro"], "d": out["d"], "channels": sum(train.channels),
            "layers": list(train.layer_names), "fit_seconds": out["fit_seconds"],
            "predict_seconds": out["predict_seconds"], "n_train": len(train),
            "model_bytes": model.mean.nbytes + model.precision.nbytes}


def _layers(unit: Unit, cfg: PadimConfig, train: FeatureCache, test: FeatureCache) -> dict:
    """Table I: every channel of one hooked layer, of all three jointly, or the sum of three single-layer maps."""
    cfg = cfg.replace(reduction="none")
    names = train.layer_names
    if unit.setting == "joint_gaussian_1_2_3":
        return _summary(evaluate_cached(cfg.replace(layers=names), train, test), train)
    if unit.setting.startswith("layer"):
        pick = (names[int(unit.setting.removeprefix("layer")) - 1],)
        one_train = select_layers(train, pick)
        return _summary(evaluate_cached(cfg.replace(layers=pick), one_train, select_layers(test, pick)), one_train)
    if unit.setting != "sum_of_3_maps":
        raise PadimError(f"unknown Table I setting {unit.setting!r}")
    singles = [evaluate_cached(cfg.replace(layers=(n,)), select_layers(train, (n,)), select_layers(test, (n,)))
               for n in names]
    maps = sum(s["result"]["maps"] for s in singles)  # (N, S, S): the three blurred maps added
    res = singles[0]["result"]
    metrics = evaluate(res["labels"], maps.flatten(1).amax(1), res["masks"], maps)
    return {**{k: float(metrics[k]) for k in ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro")},
            "d": sum(s["d"] for s in singles), "channels": sum(train.channels), "layers": list(names),
            "fit_seconds": sum(s["fit_seconds"] for s in singles),
            "predict_seconds": sum(s["predict_seconds"] for s in singles), "n_train": len(train),
            "model_bytes": sum(s["model"].mean.nbytes + s["model"].precision.nbytes for s in singles)}


def _reduction(unit: Unit, cfg: PadimConfig, train: FeatureCache, test: FeatureCache) -> dict:
    """Table II: every channel, or random / PCA to the paper's d scaled to our channel count."""
    if unit.setting not in REDUCTION_SETTINGS:
        raise PadimError(f"unknown Table II setting {unit.setting!r}")
    kind, paper_d = unit.setting.split("_")
    channels = sum(train.channels)
    cfg = cfg.replace(layers=train.layer_names, reduction=kind,
                      d=channels if kind == "none" else scaled_d(int(paper_d), channels))
    return {**_summary(evaluate_cached(cfg, train, test), train), "paper_d": int(paper_d)}


def _cost(unit: Unit, cfg: PadimConfig, ctx: Context) -> dict:
    """Tables VII-VIII: fit from the training images and score the test images, timed; peak memory of this unit."""
    ctx.clear()  # cached features of other units would count in the process's resident memory
    train, test = ctx.dataset(unit, "train", cfg), ctx.dataset(unit, "test", cfg)
    device = resolve_device(cfg.device)
    scoped = reset_peak_memory(device)
    model = Padim(cfg)
    _, fit_s = timed(model.fit, train, progress=False)
    _, predict_s = timed(model.predict_dataset, test, progress=False)
    return {"fit_seconds": fit_s, "predict_seconds": predict_s, "n_train": len(train), "n_test": len(test),
            "seconds_per_image": predict_s / len(test), "peak_memory_bytes": peak_memory_bytes(model.device),
            "peak_memory_scope": "this unit" if scoped else "the whole process so far",
            "model_bytes": model.mean.nbytes + model.precision.nbytes, "d": model.d,
            "channels": sum(model.extractor.channels), "layers": list(model.extractor.layers)}


def run_unit(unit: Unit, ctx: Context) -> dict:
    """Compute one unit; its result record (metrics, d, timings, model size, config, data, machine)."""
    if unit.study not in STUDIES:
        raise PadimError(f"unknown study {unit.study!r}")
    cfg = ctx.config(unit)
    if unit.study == "cost":
        out = _cost(unit, cfg, ctx)
    else:
        train, test = ctx.caches(unit, cfg)
        study = {"layers": _layers, "reduction": _reduction}.get(unit.study)
        out = (study(unit, cfg, train, test) if study is not None
               else _summary(evaluate_cached(cfg, train, test), train))
        out["n_test"] = len(test)
    stc = unit.study == "stc"
    return {"unit": asdict(unit), **out, "config": cfg.to_dict(),
            "data": ctx.sources.stc if stc else ctx.sources.mvtec,
            "device_name": device_name(resolve_device(cfg.device)), "padim_utils_version": __version__,
            "torch_version": torch.__version__}
