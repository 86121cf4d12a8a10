"""The ablation callbacks of chapter 08 and their widget wiring, driven programmatically."""

import matplotlib

matplotlib.use("Agg")

import pytest

from padim_utils.experiments import ablations
from padim_utils.config import preset
from padim_utils.datasets.mvtec import MVTecDataset
from padim_utils.errors import PadimError
from padim_utils.markdown import markdown_table
from padim_utils.experiments.features import FeatureCache
from padim_utils.plots import plot_ablation


@pytest.fixture(scope="module")
def caches(quick_root, quick_category):
    cfg = preset("quick").replace(device="cpu")
    train = MVTecDataset(quick_root, quick_category, "train", image_size=64, crop=None, interpolation="bilinear")
    test = MVTecDataset(quick_root, quick_category, "test", image_size=64, crop=None, interpolation="bilinear")
    return FeatureCache.compute(train, cfg, progress=False), FeatureCache.compute(test, cfg, progress=False), cfg


def test_select_layers_keeps_network_order(caches):
    train, _, _ = caches
    a, b, c = train.layer_names
    sub = ablations.select_layers(train, (c, a))
    assert sub.layer_names == (a, c) and sub.channels == [train.channels[0], train.channels[2]]
    with pytest.raises(PadimError):
        ablations.select_layers(train, ("nope",))


def test_run_ablation_default_matches_a_plain_fit(caches):
    from padim_utils.experiments.benchmark import evaluate_cached

    train, test, cfg = caches
    r = ablations.run_ablation(train, test, cfg)
    plain = evaluate_cached(cfg, train, test)
    assert r["pixel_auroc"] == pytest.approx(plain["pixel_auroc"]) and r["d"] == cfg.d
    assert r["paper"][0]["paper setting"].endswith("random d = 100")
    assert r["paper"][0]["pixel_auroc"] == 0.967


def test_run_ablation_changes_what_it_is_asked_to(caches):
    train, test, cfg = caches
    one = ablations.run_ablation(train, test, cfg, layers=(train.layer_names[0],), d=1000, sigma=0, eps=0.5)
    assert one["layers"] == (train.layer_names[0],) and one["d"] == train.channels[0]  # d capped at C
    assert one["sigma"] == 0 and one["eps"] == 0.5 and one["model"].config.eps == 0.5
    assert one["grid"] == train.grid and one["paper"][0]["paper setting"] == "R18 layer1 only"
    last = ablations.run_ablation(train, test, cfg, layers=(train.layer_names[-1],), reduction="none")
    assert last["d"] == train.channels[-1] and last["grid"] != train.grid
    assert last["paper"][0]["paper setting"] == "R18 layer3 only"
    blurred = ablations.run_ablation(train, test, cfg, sigma=4)
    sharp = ablations.run_ablation(train, test, cfg, sigma=0)
    assert blurred["pixel_auroc"] != sharp["pixel_auroc"]
    two = ablations.run_ablation(train, test, cfg, layers=train.layer_names[:2])
    assert two["paper"] == []  # the paper has no two-layer row


def test_sweep_rows_and_markdown(caches):
    train, test, cfg = caches
    everything = ablations.sweep(train, test, cfg, ablations.layer_settings(train))
    assert [r["d"] for r in everything] == [*train.channels, sum(train.channels)]
    assert [r["paper pixel AUROC"] for r in everything] == [0.948, 0.957, 0.957, 0.971]
    rows = ablations.sweep(train, test, cfg, ablations.layer_settings(train, d=32))
    assert [r["layers"] for r in rows] == [*train.layer_names, "+".join(train.layer_names)]
    assert [r["d"] for r in rows] == [min(32, c) for c in train.channels] + [32]
    assert [r["paper pixel AUROC"] for r in rows] == [0.948, 0.957, 0.957, 0.967]
    assert all(0.5 < r["pixel_auroc"] <= 1 for r in rows)
    red = ablations.sweep(train, test, cfg, ablations.reduction_settings(16))
    assert [(r["reduction"], r["d"], r["paper pixel AUROC"]) for r in red] == [("random", 16, 0.967),
                                                                               ("pca", 16, 0.935)]
    table = markdown_table(red, ablations.SWEEP_COLUMNS).splitlines()  # every column filled, metrics named
    assert table[0] == ("| layers | reduction | d | image AUROC | pixel AUROC | AU-PRO (FPR 0.3) | fit + predict s "
                        "| paper setting | paper pixel AUROC | paper PRO |")
    assert table[3].startswith(f"| {red[1]['layers']} | pca | 16 | {red[1]['image_auroc']:.3f} |")
    assert table[3].endswith("| R18 layers 1+2+3, PCA d = 100 | 0.935 | 0.857 |")
    md = ablations.ablation_markdown(ablations.run_ablation(train, test, cfg, reduction="pca", d=16))
    assert "| ours |" in md and "PCA d = 100" in md and "arXiv 2011.08785" in md
    fig = plot_ablation(rows + red, title="t")
    assert fig.axes[0].get_title() == "t" and fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel()
    assert len(fig.axes[0].patches) == 2 * len(rows + red)


def test_widget_wiring(caches):
    train, test, cfg = caches
    w = ablations.AblationWidget(train, test, cfg)
    assert set(w.controls) == {"layers", "d", "reduction", "eps", "sigma"} and w.box.children[-1] is w.output
    w.controls["layers"].value = (train.layer_names[1],)
    w.controls["d"].value = 8
    w.controls["reduction"].value = "pca"
    w.controls["sigma"].value = 2.0
    w.button.click()  # what a learner's click does
    assert w.last_error is None and w.last["layers"] == (train.layer_names[1],)
    assert w.last["d"] == 8 and w.last["reduction"] == "pca" and w.last["sigma"] == 2.0
    assert "pca d=8" in w.last_markdown and "R18 layer2 only" in w.last_markdown
    w.controls["layers"].value = ()  # empty: every layer
    w.controls["reduction"].value = "none"
    assert w.run()["d"] == sum(train.channels)


def test_widget_shows_errors_instead_of_swallowing_them(caches, monkeypatch):
    train, test, cfg = caches
    w = ablations.AblationWidget(train, test, cfg)

    def broken(*a, **k):
        raise PadimError("broken on purpose")

    monkeypatch.setattr(ablations, "run_ablation", broken)
    assert w.run() is None and w.last_error == "PadimError: broken on purpose"
