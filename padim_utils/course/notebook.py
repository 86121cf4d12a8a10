"""What every course notebook starts with: settings from the environment, the data, a look inside.

    QUICK = env_flag("PADIM_QUICK")       # tiny images: seconds per notebook
    DEVICE = env_device()                 # PADIM_DEVICE: auto (default), cpu or cuda
    data = course_data()                  # real MVTec AD under $PADIM_DATA/mvtec_ad, else the embedded set
    train_cache = data.features("train")  # the backbone's layer outputs, computed once for the whole course
    show_source(GaussianStats.update)     # the exact code the pipeline runs
    check_exercise("3.1", my_cov, stats=stats, position=10)
    compare("02.flatten", gain, 0.01, more="AU-PRO still climbs ({a:+.3f})", less="the curves flatten")

The helpers here only wire things together; the method lives in the step modules.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import os
import platform
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
import torchvision

from ..backbones import available_backbones, weights_status
from ..config import DEVICES, QUICK_DATA, PadimConfig, env_flag, preset
from ..datasets import MVTecDataset, STCDataset, data_home, list_categories, make_synthetic_mvtec
from ..errors import PadimError
from ..experiments.features import FeatureCache
from ..experiments.stc import stc_source
from ..measure import device_name
from ..model import resolve_device
from .exercises import check

__all__ = ["env_flag", "env_device", "course_data", "CourseData", "stc_data", "STCData", "environment_report", "show_source", "source_listing", "show",
           "check_exercise", "solved", "compare", "verdict", "CLAIM_KEY"]

#: The embedded category a notebook uses when no real MVTec AD category is found.
DEFAULT_SYNTHETIC = "bottle_syn"
#: How many feature files `CourseData.features` keeps under $PADIM_DATA/features (the newest).
FEATURES_KEPT = 8


def _size_and_time(path: str) -> tuple[int, int, int]:
    """Size, modification and status-change times: a file rewritten in place, even with its old size and
    modification time put back, gets a new status-change time."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def env_device() -> str:
    """PADIM_DEVICE: "auto" (default: the GPU when there is one), "cpu" or "cuda"."""
    value = os.environ.get("PADIM_DEVICE", "auto").strip().lower() or "auto"
    if value not in DEVICES:
        raise PadimError(f"PADIM_DEVICE={value!r}; use one of {', '.join(DEVICES)}")
    return value


@dataclass(frozen=True)
class CourseData:
    """The category a notebook works on, where it lives, and the config that fits it."""

    root: Path  # folder holding the category folder
    category: str
    source: str  # "MVTec AD" or "embedded synthetic"
    quick: bool
    config: PadimConfig
    categories: tuple[str, ...] = field(default=())  # every category of this source

    @property
    def real(self) -> bool:
        return self.source == "MVTec AD"

    def dataset(self, split: str, category: str | None = None):
        """The `train` or `test` split of `category` (default: this one), sized for `config`."""
        return MVTecDataset(self.root, category or self.category, split, geometry=self.config.geometry)

    def train(self, category: str | None = None):
        return self.dataset("train", category)

    def test(self, category: str | None = None):
        return self.dataset("test", category)

    def features(self, split: str, category: str | None = None):
        """The backbone's layer outputs for a split (a `FeatureCache`), computed once for the whole course.

        The first chapter that asks runs `FeatureCache.compute(self.dataset(split), self.config)` and keeps
        the result under `$PADIM_DATA/features/`; the next ones read it back instead of running the
        backbone again. A file is named by a hash of the config's backbone, layers, image geometry and
        dtype and of the images and masks (paths, sizes, modification and status-change times), so other
        data, a mask corrected in place or another config computes anew; the newest FEATURES_KEPT files
        are kept.
        """
        dataset = self.dataset(split, category)
        cfg = self.config
        stamp = [(p, *_size_and_time(p)) for p in dataset.paths]
        stamp += [(m, *_size_and_time(m)) for m in dataset.mask_paths if m is not None]  # the cache holds masks too
        name = category or self.category
        key = repr((cfg.backbone, cfg.layers, cfg.image_size, cfg.crop, cfg.interpolation, cfg.dtype, stamp))
        folder = data_home() / "features"
        path = folder / f"{name}_{split}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
        if path.is_file():
            try:
                cache = FeatureCache.load(path)
                cache.check_config(cfg)
                os.utime(path)  # the newest: kept longest
                return cache
            except PadimError:
                path.unlink(missing_ok=True)  # unreadable or stale: computed again
        cache = FeatureCache.compute(dataset, cfg, progress=False)
        cache.save(path)
        for old in sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[:-FEATURES_KEPT]:
            old.unlink(missing_ok=True)
        return cache

    def describe(self) -> str:
        size = self.config.out_size
        return (f"Data: {self.source} category '{self.category}' from {self.root / self.category} "
                f"({len(self.train())} train / {len(self.test())} test images at {size}x{size} px"
                f"{', quick mode' if self.quick else ''}); backbone {self.config.backbone}, d = {self.config.d}, "
                f"device {resolve_device(self.config.device)}.")


def course_data(category: str | None = None, quick: bool | None = None, device: str | None = None,
                verbose: bool = True) -> CourseData:
    """Find the data a notebook should use, and say which.

    Real MVTec AD is looked for at `$PADIM_DATA/mvtec_ad/<category>` (PADIM_DATA defaults to ./data):
    the named category (argument, else $PADIM_CATEGORY), else "bottle" if present, else the first found. Without real data, the
    embedded synthetic set is generated under `$PADIM_DATA/synthetic` (once; a few seconds).
    Quick mode (PADIM_QUICK=1) shrinks images to 64 px (and the synthetic set to 8 train images).
    """
    quick = env_flag("PADIM_QUICK") if quick is None else quick
    category = category or os.environ.get("PADIM_CATEGORY", "").strip() or None
    config = preset("quick" if quick else "offline_lite0").replace(device=device or env_device())
    mvtec = data_home() / "mvtec_ad"
    real = list_categories(mvtec)
    if category is not None and category not in real and not category.endswith("_syn"):
        raise PadimError(f"category {category!r} not found under {mvtec}; found: {', '.join(real) or 'none'}")
    if real and (category is None or category in real):
        chosen = category or ("bottle" if "bottle" in real else real[0])
        data = CourseData(mvtec, chosen, "MVTec AD", quick, config, tuple(real))
    else:
        root = make_synthetic_mvtec(data_home() / ("synthetic_quick" if quick else "synthetic"),
                                    **(QUICK_DATA if quick else {}))
        cats = tuple(list_categories(root))
        data = CourseData(root, category or DEFAULT_SYNTHETIC, "embedded synthetic", quick, config, cats)
    if verbose:
        print(data.describe())
    return data


@dataclass(frozen=True)
class STCData:
    """The ShanghaiTech Campus data a notebook uses: real under $PADIM_DATA/stc, else a synthetic STC-layout set."""

    root: Path
    source: str  # "ShanghaiTech Campus" or "synthetic STC-layout"
    scenes: tuple[str, ...]
    quick: bool
    config: PadimConfig  # the paper: frames resized to 256 with no crop
    frames_per_video: int  # training frames sampled uniformly from each training video

    @property
    def real(self) -> bool:
        return self.source == "ShanghaiTech Campus"

    def dataset(self, scene: str, split: str):
        return STCDataset(self.root, scene, split, frames_per_video=self.frames_per_video,
                          geometry=self.config.geometry)

    def describe(self) -> str:
        size = self.config.out_size
        return (f"Data: {self.source} from {self.root} (scenes {', '.join(self.scenes)}; "
                f"{self.frames_per_video} training frames per video; frames at {size}x{size} px"
                f"{', quick mode' if self.quick else ''}); backbone {self.config.backbone}, d = {self.config.d}.")


def stc_data(quick: bool | None = None, device: str | None = None, verbose: bool = True, real: bool = True) -> STCData:
    """Find STC at `$PADIM_DATA/stc` (the official layout), else generate the synthetic STC-layout set
    under `$PADIM_DATA/stc_synthetic` (a few seconds), and say which is used. Quick mode: 64 px frames.
    `real=False`: the synthetic set even where the real data is present."""
    quick = env_flag("PADIM_QUICK") if quick is None else quick
    config = preset("quick" if quick else "offline_lite0").replace(device=device or env_device(), crop=None)
    found = stc_source(quick, real)
    data = STCData(found.root, found.source, found.scenes, quick, config, found.frames_per_video)
    if verbose:
        print(data.describe())
    return data


def environment_report() -> dict[str, str]:
    """Versions, the compute device and where each backbone's weights would come from."""
    device = resolve_device(env_device())
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "device": f"{device} ({device_name(device)})",
        "CUDA available": str(torch.cuda.is_available()),
        "PADIM_DATA": str(data_home()),
        "PADIM_QUICK": str(env_flag("PADIM_QUICK")),
    }
    for name in available_backbones():
        report[f"weights: {name}"] = weights_status(name)
    return report


def show(markdown: str, metadata: dict | None = None) -> None:
    """Render markdown in a notebook (plain text elsewhere); `metadata` goes with the notebook output."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(markdown), metadata=metadata)
            return
    except ImportError:  # pragma: no cover - IPython ships with the course
        pass
    print(markdown)


#: The notebook output metadata under which `compare` records each claim (the tests read it back).
CLAIM_KEY = "padim_claim"


def verdict(a: float, b: float, tol: float = 0.0) -> str:
    """"more" when a > b + tol, "less" when a < b - tol, else "same"."""
    return "more" if a - b > tol else "less" if b - a > tol else "same"


def compare(key: str, a: float, b: float, more: str, less: str, same: str | None = None, tol: float = 0.0,
            **values) -> None:
    """Say the comparing sentence that the run's numbers make true, and record the claim.

    The prose before a cell says what to expect; a sentence that compares numbers the run produces is
    picked here from those numbers: `more` when a > b + tol, `less` when a < b - tol, else `same`
    (where `same` is None: `more` if a >= b, else `less`). The sentences are format strings over
    {a}, {b}, {diff} (a - b), {gap} (|a - b|), {ratio} (a / b, where b is not 0) and the `values` given, e.g.
    "random channels ({a:.3f}) beat PCA ({b:.3f})". The sentence is shown as markdown; the claim (key,
    a, b, tol, the verdict and every sentence) rides in the output's metadata under CLAIM_KEY, so a test
    can check that each shown sentence is the one its numbers make true.
    """
    a, b = float(a), float(b)
    found = verdict(a, b, tol)
    sentences = {"more": more, "less": less, "same": same}
    chosen = found if sentences[found] is not None else ("more" if a >= b else "less")
    fields = {"a": a, "b": b, "diff": a - b, "gap": abs(a - b), **({"ratio": a / b} if b else {}), **values}
    text = sentences[chosen].format(**fields)
    show(text, metadata={CLAIM_KEY: {"key": key, "a": a, "b": b, "tol": float(tol), "verdict": found,
                                     "said": chosen, "sentences": sentences, "text": text}})


def source_listing(obj) -> tuple[str, str]:
    """(the code of a function, method, class or property exactly as written in its file, that file).

    Decorators are kept, the body's indentation is kept, and only the indentation common to every
    line (a method's or a nested function's) is removed (`textwrap.dedent`, not `inspect.cleandoc`,
    which would strip the body down to the `def` line's level), so the listing parses as Python.
    Where a multi-line string inside reaches further left than the `def`, every line but the string's
    own loses the `def` line's indentation.
    """
    if isinstance(obj, property):
        obj = obj.fget  # the getter's code
    elif isinstance(obj, functools.cached_property):
        obj = obj.func
    elif isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = inspect.unwrap(obj)  # a decorated function (e.g. @torch.no_grad()) shows its own code
    try:
        source = inspect.getsource(obj)
        where = inspect.getsourcefile(obj) or "?"
    except (TypeError, OSError) as e:
        raise PadimError(f"no source available for {obj!r}: {e}") from None
    where = where[where.rfind("padim_utils"):] if "padim_utils" in where else where
    code = textwrap.dedent(source).rstrip("\n")
    indent = code[: len(code) - len(code.lstrip(" \t"))]
    if indent:  # a multi-line string reaches further left: dedent every line but the string's own
        inside = _string_lines(code)
        code = "\n".join(line if i in inside else line.removeprefix(indent)
                         for i, line in enumerate(code.split("\n"), start=1))
    return code, where


def _string_lines(code: str) -> set[int]:
    """Numbers (from 1) of the lines of `code` that continue a multi-line string literal."""
    lines: set[int] = set()
    with contextlib.suppress(tokenize.TokenError, IndentationError, SyntaxError):
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                lines.update(range(tok.start[0] + 1, tok.end[0] + 1))
    return lines


def show_source(obj) -> None:
    """Show the source of a function, method, class or property: the exact tested code the pipeline runs."""
    code, where = source_listing(obj)
    name = getattr(obj, "__qualname__", None) or getattr(getattr(obj, "fget", None), "__qualname__", repr(obj))
    show(f"`{name}` in `{where}`:\n\n```python\n{code}\n```")


#: The exercises whose last check passed in this session (`solved`).
_SOLVED: set[str] = set()


def solved(key: str) -> bool:
    """Whether the last `check_exercise(key, ...)` of this session found the answer right."""
    return key in _SOLVED


def check_exercise(key: str, answer, **given) -> None:
    """Check an exercise's answer; prints ✓ or what is off (and remembers it for `solved`).

    With PADIM_STRICT_EXERCISES=1 (the tests and `make course` set it) a wrong answer raises, so a
    broken solution can never pass unnoticed.
    """
    problem = check(key, answer, **given)
    _SOLVED.discard(key)
    if problem is None:
        _SOLVED.add(key)
        print(f"✓ Exercise {key}: correct.")
        return
    print(f"✗ Exercise {key}: {problem}")
    if env_flag("PADIM_STRICT_EXERCISES"):
        raise AssertionError(f"exercise {key}: {problem}")


