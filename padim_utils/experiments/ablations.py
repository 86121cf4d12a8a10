"""Ablations of PaDiM on cached features: change one choice, re-fit in seconds, compare with the paper.

The backbone's forward pass is computed once per split (`FeatureCache`); every
ablation below only re-runs the cheap part (reduction, Gaussians, distances, blur,
metrics), which is what makes the interactive controls of course chapter 08 usable:

    train_cache, test_cache = FeatureCache.compute(train, cfg), FeatureCache.compute(test, cfg)
    row = run_ablation(train_cache, test_cache, cfg, layers=("blocks.2",), d=50)
    rows = sweep(train_cache, test_cache, cfg, layer_settings(train_cache, d=100))  # the paper's Table I
    rows = sweep(train_cache, test_cache, cfg, [{"d": 8}, {"d": 16, "reduction": "pca"}])  # any settings
    widget = AblationWidget(train_cache, test_cache, cfg)                    # display(widget.box)

Every result carries the paper's closest ablation numbers (Defard et al., 2020,
arXiv 2011.08785: layers in Table I, random vs PCA in Fig. 3 / Sec. 5.1), all-class
means of a ResNet18 on MVTec AD: a reference for the *direction* of an effect, not a
number our backbone or data should match.
"""

from __future__ import annotations

import dataclasses
import traceback

import matplotlib.pyplot as plt

from ..config import PadimConfig
from ..errors import PadimError
from ..extras import optional
from ..markdown import MISSING, markdown_table
from ..metrics import METRIC_LABELS
from ..model import Padim
from ..paper import CITATION, paper_ablation
from ..plots import plot_ablation
from .benchmark import evaluate_cached
from .features import FeatureCache

__all__ = ["SWEEP_COLUMNS", "select_layers", "run_ablation", "paper_reference", "layer_settings", "reduction_settings", "result_row", "sweep",
           "ablation_markdown", "AblationWidget"]

# the paper's R18 layer names, by the position of a hooked layer in our backbone
_PAPER_LAYER = ("layer1", "layer2", "layer3")
_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
#: The columns of a `sweep` table and their headers: `markdown_table(rows, SWEEP_COLUMNS)`.
SWEEP_COLUMNS = {"layers": "layers", "reduction": "reduction", "d": "d", **{m: METRIC_LABELS[m] for m in _METRICS},
                 "fit + predict s": "fit + predict s", "paper setting": "paper setting",
                 "paper pixel AUROC": "paper pixel AUROC", "paper PRO": "paper PRO"}


def select_layers(cache: FeatureCache, layers) -> FeatureCache:
    """The same cache with only `layers` (names of `cache.layer_names`, kept in network order)."""
    layers = tuple(cache.layer_names) if layers is None else tuple(layers)
    unknown = [name for name in layers if name not in cache.layer_names]
    if unknown or not layers:
        raise PadimError(f"layers {list(layers)} must be a non-empty subset of the cached layers "
                         f"{list(cache.layer_names)}")
    keep = [i for i, name in enumerate(cache.layer_names) if name in layers]  # network order
    return dataclasses.replace(cache, layer_names=tuple(cache.layer_names[i] for i in keep),
                               layers=[cache.layers[i] for i in keep])


def paper_reference(positions, n_hooked: int, reduction: str, d: int) -> list[dict]:
    """The paper's ablation rows closest to a setting: which hooked layers (`positions`, 0-based, of
    `n_hooked`), the reduction and d. Each row: {"paper setting", "pixel_auroc", "pixel_aupro"}."""
    out = []
    positions = sorted(positions)
    if len(positions) == 1 and positions[0] < len(_PAPER_LAYER):
        key = _PAPER_LAYER[positions[0]]
        out.append({"paper setting": f"R18 {key} only", **paper_ablation("layers")[key]})
    elif positions == list(range(n_hooked)):  # every hooked layer: the paper's reduction study (Sec. 5.1)
        key = "none_448" if reduction == "none" else f"{reduction}_{100 if d <= 150 else 200}"
        name = {"none_448": "R18 layers 1+2+3, all 448 channels", "random_100": "R18 layers 1+2+3, random d = 100",
                "random_200": "R18 layers 1+2+3, random d = 200", "pca_100": "R18 layers 1+2+3, PCA d = 100",
                "pca_200": "R18 layers 1+2+3, PCA d = 200"}[key]
        numbers = paper_ablation("reduction").get(key)
        if numbers is not None and numbers["pixel_auroc"] is not None:
            out.append({"paper setting": name, **numbers})
    return out


def run_ablation(train_cache: FeatureCache, test_cache: FeatureCache, base_cfg: PadimConfig, layers=None,
                 d: int | None = None, reduction: str | None = None, eps: float | None = None,
                 sigma: float | None = None, model: Padim | None = None) -> dict:
    """Fit and evaluate one variant of `base_cfg` on cached features (no backbone pass).

    `layers`: a subset of the cached layer names (default: all); `d` is capped at the chosen layers'
    channel count (the paper's d cannot exceed C). `model`: a `Padim` of `base_cfg` whose frozen backbone a
    setting over all of its layers shares (`Padim.with_settings`) instead of building its own. Returns the
    metrics of `benchmark.evaluate_cached` (plus its `model` and `result`), the setting itself (`layers`,
    `d`, `reduction`, `eps`, `sigma`, `channels`, `grid`, `setting`: a one-line name) and `paper`: the
    paper's closest rows.
    """
    layers = tuple(train_cache.layer_names) if layers is None or len(layers) == 0 else tuple(layers)
    train, test = select_layers(train_cache, layers), select_layers(test_cache, layers)
    channels = sum(train.channels)
    reduction = base_cfg.reduction if reduction is None else reduction
    d = min(int(base_cfg.d if d is None else d), channels)
    cfg = base_cfg.replace(layers=train.layer_names, d=d, reduction=reduction,
                           eps=base_cfg.eps if eps is None else float(eps),
                           sigma=base_cfg.sigma if sigma is None else float(sigma))
    if model is not None and tuple(model.extractor.layers) == train.layer_names:
        model = model.with_settings(d=d, reduction=reduction, eps=cfg.eps, sigma=cfg.sigma)
    else:
        model = None
    out = evaluate_cached(cfg, train, test, model=model)
    positions = [train_cache.layer_names.index(name) for name in train.layer_names]
    used_d = out["d"]
    setting = (f"{'+'.join(train.layer_names)}, {reduction}"
               f"{'' if reduction == 'none' else f' d={used_d}'}, eps={cfg.eps:g}, sigma={cfg.sigma:g}")
    out.update({"layers": train.layer_names, "reduction": reduction, "eps": cfg.eps, "sigma": cfg.sigma,
                "channels": channels, "grid": train.grid, "setting": setting,
                "paper": paper_reference(positions, len(train_cache.layer_names), reduction, used_d)})
    return out


def layer_settings(cache: FeatureCache, d: int | None = None) -> list[dict]:
    """The paper's Table I on our backbone: each hooked layer alone, then all of them, reduced to a random
    `d` channels only where a setting has more (None: keep every channel, as the paper's layer study does;
    costs grow with d cubed, which is why the course caps it)."""
    red = {"reduction": "none"} if d is None else {"reduction": "random", "d": d}
    return [{"layers": (name,), **red} for name in cache.layer_names] + [{"layers": tuple(cache.layer_names), **red}]


def reduction_settings(d: int) -> list[dict]:
    """Random vs PCA at the same d over every layer (the paper's Sec. 5.1)."""
    return [{"reduction": "random", "d": d}, {"reduction": "pca", "d": d}]


def result_row(result: dict) -> dict:
    """One `run_ablation` result as a flat table row (no model or maps): the setting, its d, the three
    metrics, the seconds, and the paper's first matching row ("paper pixel AUROC" / "paper PRO")."""
    ref = result["paper"][0] if result["paper"] else {}
    return {"setting": result["setting"], "layers": "+".join(result["layers"]), "reduction": result["reduction"],
            "d": result["d"], **{m: result[m] for m in _METRICS}, "fit_seconds": result["fit_seconds"],
            "predict_seconds": result["predict_seconds"],
            "fit + predict s": result["fit_seconds"] + result["predict_seconds"],
            "paper setting": ref.get("paper setting", MISSING),
            "paper pixel AUROC": ref.get("pixel_auroc"), "paper PRO": ref.get("pixel_aupro")}


def sweep(train_cache: FeatureCache, test_cache: FeatureCache, base_cfg: PadimConfig, settings: list[dict]) -> list[dict]:
    """`run_ablation` for each setting (a dict of its keywords: layers, d, reduction, eps, sigma); one
    `result_row` each. The settings over every cached layer share one frozen backbone (`Padim.with_settings`).

        rows = sweep(train_cache, test_cache, cfg, [{"reduction": r, "d": d} for r in ("random", "pca")
                                                    for d in (8, 16, 32)])
    """
    every = set(train_cache.layer_names)
    shared = Padim(base_cfg) if any(set(s.get("layers") or every) == every for s in settings) else None
    return [result_row(run_ablation(train_cache, test_cache, base_cfg, **s, model=shared)) for s in settings]


def ablation_markdown(result: dict) -> str:
    """One ablation result as markdown: our metrics, then the paper's closest rows (cited)."""
    columns = {"": "", **{m: METRIC_LABELS[m] for m in _METRICS}}
    rows = [{"": "ours", **{m: result[m] for m in _METRICS}}]
    rows += [{"": f"paper: {ref['paper setting']}", "image_auroc": None, **{m: ref[m] for m in _METRICS[1:]}}
             for ref in result["paper"]]
    lines = [f"**{result['setting']}** ({result['channels']} channels before reduction, "
             f"{result['grid'][0]}x{result['grid'][1]} patch grid; fit + predict "
             f"{result['fit_seconds'] + result['predict_seconds']:.1f} s)", "",
             markdown_table(rows, columns)]
    lines += ["", f"Paper rows: all-class means on MVTec AD, ResNet18 ({CITATION}); a reference for the direction "
                  "of an effect, not a value to match." if result["paper"] else
              "The paper has no ablation row for this setting."]
    return "\n".join(lines)


class AblationWidget:
    """ipywidgets controls (layers, d, reduction, eps, sigma) wired to `run_ablation`.

    `box` is the widget to display; `run()` is what the button calls: it reads the controls,
    runs the ablation and writes the markdown and a figure into `output`. The last result is
    kept in `last` (and its markdown in `last_markdown`); an error is written into the output
    (ipywidgets would swallow it) and kept in `last_error`.
    """

    def __init__(self, train_cache: FeatureCache, test_cache: FeatureCache, base_cfg: PadimConfig):
        w = optional("ipywidgets")  # the `notebooks` extra
        self.train_cache, self.test_cache, self.base_cfg = train_cache, test_cache, base_cfg
        total = sum(train_cache.channels)
        names = list(train_cache.layer_names)
        self.controls = {
            "layers": w.SelectMultiple(options=names, value=tuple(names), description="layers",
                                       rows=len(names)),
            "d": w.IntSlider(value=min(base_cfg.d, total), min=1, max=total, description="d"),
            "reduction": w.ToggleButtons(options=["random", "pca", "none"], value=base_cfg.reduction,
                                         description="reduction"),
            "eps": w.FloatLogSlider(value=base_cfg.eps, base=10, min=-5, max=1, description="ε"),
            "sigma": w.FloatSlider(value=base_cfg.sigma, min=0, max=8, step=0.5, description="σ"),
        }
        self.button = w.Button(description="re-fit", button_style="primary")
        self.output = w.Output()
        self.button.on_click(lambda _: self.run())
        self.box = w.VBox([*self.controls.values(), self.button, self.output])
        self.last: dict | None = None
        self.last_markdown: str | None = None
        self.last_error: str | None = None

    def values(self) -> dict:
        """The controls' current values, as `run_ablation` keywords."""
        return {name: c.value for name, c in self.controls.items()}

    def run(self) -> dict | None:
        """Read the controls, re-fit, show the result (or the error) in `output`."""
        from IPython.display import Markdown, display

        self.output.clear_output(wait=True)
        with self.output:
            try:
                self.last = run_ablation(self.train_cache, self.test_cache, self.base_cfg, **self.values())
                self.last_markdown, self.last_error = ablation_markdown(self.last), None
                display(Markdown(self.last_markdown))
                fig = plot_ablation([result_row(self.last)], title="this setting vs the paper")
                display(fig)
                plt.close(fig)
            except Exception as e:  # shown, not swallowed by ipywidgets
                self.last, self.last_markdown = None, None
                self.last_error = f"{type(e).__name__}: {e}"
                print(f"error: {self.last_error}")
                if not isinstance(e, PadimError):
                    traceback.print_exc()
        return self.last
