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
    plt.close(fig)
