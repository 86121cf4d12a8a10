"""Figure helpers: overlays blend correctly, example picking, figures are drawn."""

import numpy as np
import torch

from padim_utils.plots import overlay, pick_examples, plot_examples, plot_score_histogram, save_figure


def test_overlay_blends_image_and_colormap():
    image = torch.full((3, 4, 4), 255, dtype=torch.uint8)  # white, channels first
    amap = np.zeros((4, 4))
    amap[0, 0] = 1.0
    out = overlay(image, amap, alpha=0.5, cmap="gray")
    assert out.shape == (4, 4, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[0, 0], [1.0, 1.0, 1.0])  # white image + white (max) heat
    np.testing.assert_allclose(out[1, 1], [0.5, 0.5, 0.5])  # white image + black (min) heat


def test_pick_examples_shows_extremes_of_both_classes():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7])
    labels = np.array([0, 1, 1, 0, 0, 1, 0])
    picks = pick_examples(scores, labels, n=4)
    assert len(picks) == len(set(picks)) == 4
    assert 1 in picks and 5 in picks  # most and least anomalous defect
    assert 4 in picks and 0 in picks  # most and least anomalous good image


def test_figures_are_drawn_and_saved(tmp_path):
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    masks = [np.eye(8), np.zeros((8, 8))]
    maps = [np.random.default_rng(0).random((8, 8))] * 2
    fig = plot_examples(images, masks, maps, scores=[1.0, 2.0], labels=[1, 0], titles=["a", "b"])
    assert len(fig.axes) == 6
    save_figure(fig, tmp_path / "ex.png")
    save_figure(plot_score_histogram([1, 2, 3, 4], [0, 0, 1, 1], threshold=2.5), tmp_path / "h.png")
    assert (tmp_path / "ex.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "h.png").stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))


def test_course_figures_have_titles_and_labels():
    import matplotlib.pyplot as plt

    from padim_utils.plots import (plot_feature_maps, plot_gallery, plot_lines, plot_maps, plot_pro_curve,
                                   plot_roc_curves, plot_spectra)

    rng = np.random.default_rng(0)
    img = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16))
    mask[4:8, 4:8] = 1
    figs = {
        "gallery": plot_gallery([img, img, img], masks=[mask, None, mask], titles=["a", "b", "c"], title="G"),
        "features": plot_feature_maps(rng.random((5, 8, 8)), n=3, title="F"),
        "maps": plot_maps(img, {"blur": rng.random((16, 16)), "raw": rng.random((16, 16))}, mask=mask, title="M"),
        "lines": plot_lines([10, 20], {"random": [0.9, 0.95]}, "d", "pixel AUROC", "L", reference={"paper": 0.97}),
        "roc": plot_roc_curves({"ours": ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])}),
        "pro": plot_pro_curve([0, 0.1, 0.5, 1], [0, 0.5, 0.9, 1], points=[(0.1, 0.5)]),
        "spectra": plot_spectra({"raw": [3.0, 1.0, 0.0], "eps": [3.01, 1.01, 0.01]}),
    }
    for name, fig in figs.items():
        assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes), name
        plt.close(fig)
    for name in ("lines", "roc", "pro", "spectra"):
        ax = figs[name].axes[0]
        assert ax.get_xlabel() and ax.get_ylabel(), name
    assert "AUROC 0.750" in figs["roc"].axes[0].get_legend().get_texts()[0].get_text()  # 3 of 4 pairs ranked right
    assert len(figs["maps"].axes) == 3 + 2  # image, two maps, two colour bars


def test_plot_examples_title_is_the_figure_title_not_a_caption():
    import matplotlib.pyplot as plt

    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    maps = [np.random.default_rng(0).random((8, 8))] * 2
    fig = plot_examples(images, None, maps, titles=["left", "right"], title="the figure")
    assert fig._suptitle.get_text() == "the figure" and fig.axes[1].get_title() == "right"
    plt.close(fig)


def test_training_frames_figure_has_both_panels_labelled():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_training_frames

    rows = [{"train_frames": n, "train_codec": c, "frame_auroc": a, "aupro": a - 0.1, "background_median": b,
             "cart_median": m} for c, a, b in (("none", 0.8, 100.0), ("match", 0.99, 10.0))
            for n, m in ((32, 800.0), (192, 200.0))]
    fig = plot_training_frames(rows, title="T")
    left, right = fig.axes
    assert fig._suptitle.get_text() == "T" and left.get_yscale() == "log"
    for ax in (left, right):
        assert ax.get_title() and ax.get_xlabel() == "training frames" and ax.get_ylabel()
        assert len(ax.get_lines()) == 4  # two quantities x two codecs
    texts = [t.get_text() for t in left.get_legend().get_texts()]
    assert "static background, frames as decoded" in texts and "anomaly, matched to the test JPEGs" in texts
    np.testing.assert_array_equal(left.get_lines()[0].get_xdata(), [32, 192])
    np.testing.assert_array_equal(left.get_lines()[0].get_ydata(), [100.0, 100.0])
# --------------------------------------------------------------------------- the reproduced tables' figures
def _table(t="V", rows=5, models=("PaDiM-R18-Rd100", "PaDiM-WR50-Rd550", "PaDiM-EfficientNet-B5"), seeds=2,
           columns=(("image_auroc", "image AUROC", "", ".3f"),)):
    rng = np.random.default_rng(0)
    out = []
    for i in range(rows):
        ours = {}
        for key, *_ in columns:
            values = list(0.8 + 0.1 * rng.random(seeds))
            ours[key] = {"mean": float(np.mean(values)), "sem": float(np.std(values, ddof=1) / np.sqrt(seeds))
                         if seeds > 1 else None, "n": seeds, "values": values}
        # the paper's values just above ours: where a marker over the bar would sit on the bar's label
        paper = [{"model": m, "metric": key, "value": ours[key]["mean"] + 0.01, "source": "x"}
                 for m in models for key, *_ in columns]
        out.append({"labels": {"group": "all", "category": f"category {i}"}, "ours": ours, "paper": paper})
    return {"table": t, "title": "Detection per class: image AUROC", "labels": ["group", "category"],
            "columns": [dict(zip(("key", "name", "unit", "fmt"), c)) for c in columns], "rows": out,
            "paper_models": list(models),
            "run": {"backbones": {"efficientnet_lite0": "offline_lite0 (not the paper's backbone)"}}}


def _inside(inner, outer, slack=1.0):
    return (inner.x0 >= outer.x0 - slack and inner.x1 <= outer.x1 + slack and inner.y0 >= outer.y0 - slack
            and inner.y1 <= outer.y1 + slack)


def test_reproduced_table_legend_and_title_fit_the_figure():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_reproduced_table

    for table in (_table(), _table(rows=1), _table(t="VI", rows=3, models=("PaDiM-WR50-Rd550",))):
        fig = plot_reproduced_table(table)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert _inside(fig.legends[0].get_window_extent(renderer), fig.bbox), table["table"]
        assert _inside(fig._suptitle.get_window_extent(renderer), fig.bbox), table["table"]
        legend = fig.legends[0].get_window_extent(renderer)
        for ax in fig.axes:  # the axes and their tick labels sit above the legend
            assert ax.get_tightbbox(renderer).y0 >= legend.y1 - 1
        plt.close(fig)


def test_reproduced_table_paper_markers_do_not_hide_our_values():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_reproduced_table

    fig = plot_reproduced_table(_table())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
    assert len(labels) == 5
    for markers in ax.collections[1:]:  # the paper's markers (the first collection: our error bars' caps)
        if not hasattr(markers, "get_offsets") or len(markers.get_offsets()) == 0:
            continue
        radius = np.sqrt(markers.get_sizes()[0]) / 2 * fig.dpi / 72  # marker size in points² -> pixels
        for x, y in ax.transData.transform(markers.get_offsets()):
            for box in labels:
                assert not (box.x0 - radius < x < box.x1 + radius and box.y0 - radius < y < box.y1 + radius)
    plt.close(fig)


def test_reproduced_table_says_what_its_error_bars_are():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_reproduced_table

    for table, expected in ((_table(seeds=1, t="VII"), "ours (one run per row, no error bar)"),
                            (_table(seeds=2), "ours (± SEM over seeds)"),
                            (_table(seeds=3, t="VI"), "ours (± SEM over random preprocessings)")):
        fig = plot_reproduced_table(table)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels[0] == expected and not any("SEM" in label for label in labels[1:])
        plt.close(fig)


def test_log_axis_reads_plain_values_and_pro_curve_zooms():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_lines, plot_pro_curve

    fig = plot_lines([8, 16, 32, 64], {"random": [0.5, 0.6, 0.7, 0.72]}, "d", "AU-PRO", "L", logx=True)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16", "32", "64"] and len(ax.get_xticks(minor=True)) == 0
    plt.close(fig)
    points = [(0.0, 0.22), (0.011, 0.56), (0.017, 0.67), (0.023, 1.0)]  # chapter 05's tiny example
    fig = plot_pro_curve([0, 0.0, 0.011, 0.017, 0.023, 1], [0, 0.22, 0.56, 0.67, 1, 1], points=points)
    main, inset = fig.axes[0], fig.axes[0].child_axes[0]
    assert main.get_xlim()[1] < 0.05 and inset.get_xlim() == (0, 1)  # the points fill the main axes
    plt.close(fig)
    fig = plot_pro_curve([0, 0.1, 0.5, 1], [0, 0.5, 0.9, 1], points=[(0.1, 0.5), (0.3, 0.8)])
    assert 0.3 < fig.axes[0].get_xlim()[1] < 0.4  # real maps: the integrated part, to FPR 0.3 and a bit
    plt.close(fig)


def test_benchmark_examples_figure_has_one_colour_bar(tmp_path, monkeypatch):
    # `padim benchmark --figures` and chapter 06 show these maps on one colour scale: the scale needs its bar
    import matplotlib.pyplot as plt

    from padim_utils.experiments import benchmark as experiment

    saved = {}
    monkeypatch.setattr(experiment, "save_figure", lambda fig, path: saved.__setitem__(path.name, fig))

    class Test:
        defect_types = ["good", "hole", "good", "hole"]

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}

    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    result = {"scores": maps.flatten(1).amax(1), "labels": torch.tensor([0, 1, 0, 1]),
              "masks": torch.zeros(4, 8, 8, dtype=torch.uint8), "maps": maps}
    experiment.save_benchmark_figures(tmp_path, "cat", Test(), result, {"image_f1_threshold": 0.5})
    fig = saved["cat_examples.png"]
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "anomaly score"]
    assert len(bars) == 1 and fig._suptitle.get_text() == "cat: the most and least anomalous test images"
    plt.close("all")


def test_ablation_and_category_bars_keep_their_values_clear_of_the_paper_ticks():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_ablation, plot_category_metrics

    rows = [{"setting": f"s{i}", "layers": f"blocks.{i}", "reduction": "random", "d": 32, "pixel_auroc": v,
             "pixel_aupro": v - 0.2,
             "paper pixel AUROC": v + 0.005, "paper PRO": v - 0.195} for i, v in enumerate((0.943, 0.921, 0.96))]
    records = [{"category": c, "image_auroc": 0.99, "pixel_auroc": 0.978, "pixel_aupro": 0.91} for c in ("bottle", "tile")]
    for fig in (plot_ablation(rows), plot_category_metrics(records, paper_model="PaDiM-WR50-Rd550")):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        labels = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
        ticks = [line.get_window_extent(renderer) for line in ax.lines if line.get_color() == "k"]
        assert labels and ticks
        assert not any(t.overlaps(label) for t in ticks for label in labels)
        plt.close(fig)


def test_line_plot_legend_sits_beside_the_curves():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_lines

    fig = plot_lines([0, 10, 20, 30], {"rotated": [230, 250, 265, 293]}, "angle", "score", "t",
                     reference={"good median": 217, "defect median": 272})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1 and legend.x1 <= fig.bbox.x1
    plt.close(fig)


def test_log_axis_labels_never_print_over_each_other():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_lines

    fig = plot_lines([10, 25, 50, 100, 200, 400, 550, 800], {"a": [1, 2, 3, 4, 5, 6, 7, 8]}, "d", "GiB", "t",
                     logx=True, logy=True)
    fig.canvas.draw()
    shown = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
    boxes = [t.get_window_extent() for t in shown]
    assert [t.get_text() for t in shown][:5] == ["10", "25", "50", "100", "200"] and len(shown) >= 6
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)
    fig = plot_lines([10, 400, 420, 440, 800], {"a": [1, 2, 3, 4, 5]}, "d", "GiB", "t", logx=True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["10", "400", "", "", "800"]
    plt.close(fig)


def _hidden_points(fig):
    """(axes title, x, y) of every plotted data point that lies under a legend of the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    boxes = [legend.get_window_extent(renderer) for legend in legends]
    hidden = []
    for ax in fig.axes:
        for line in ax.get_lines():
            data = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            for (px, py), (x, y) in zip(ax.transData.transform(data), data):
                if any(b.x0 <= px <= b.x1 and b.y0 <= py <= b.y1 for b in boxes):
                    hidden.append((ax.get_title(), float(x), float(y)))
    return hidden


def test_no_legend_hides_a_plotted_point():
    import matplotlib.pyplot as plt

    from padim_utils.plots import plot_pro_curve, plot_training_frames

    # chapter 07's walkway study as the course ran it: the matched background at 96 frames (27.6) sat
    # under a legend in the lower left
    study = [(32, "none", 1.0, 0.996, 125.9, 812.4), (32, "match", 1.0, 0.997, 82.2, 777.4),
             (96, "none", 0.966, 0.986, 124.0, 423.0), (96, "match", 1.0, 0.994, 27.6, 286.8),
             (192, "none", 0.836, 0.610, 121.9, 198.2), (192, "match", 0.996, 0.985, 13.6, 96.6)]
    rows = [dict(zip(("train_frames", "train_codec", "frame_auroc", "aupro", "background_median", "cart_median"),
                     r)) for r in study]
    # chapter 05's PRO curve of real maps: a steep climb, the pro_at points at FPR 0.01-0.3 near the top
    fpr = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 200)])
    pro = np.clip(1.0 - 0.3 * np.exp(-fpr / 0.01) - 0.05 * np.exp(-fpr / 0.1), 0, 1)
    points = [(f, float(np.interp(f, fpr, pro))) for f in (0.01, 0.05, 0.1, 0.3)]
    for fig in (plot_training_frames(rows), plot_pro_curve(fpr, pro, points=points),
                plot_pro_curve([0, 0.0114, 0.0171, 0.0229, 1], [0.222, 0.556, 0.667, 1, 1],
                               points=[(0.0, 0.222), (0.0114, 0.556), (0.0171, 0.667), (0.0229, 1.0)])):
        assert _hidden_points(fig) == []
        plt.close(fig)
