"""Exercise 6.1 accepts the right answer and catches typical wrong ones; the chapter's figure helper."""

import matplotlib

matplotlib.use("Agg")

from padim_utils.course.exercises import check
from padim_utils.plots import plot_category_metrics

RECORDS = [{"category": "a", "pixel_aupro": 0.9}, {"category": "b", "pixel_aupro": 0.6},
           {"category": "c", "pixel_aupro": 0.75}]


def test_right_answer_passes():
    assert check("6.1", ("b", 0.75 - 0.6), records=RECORDS) is None
    assert check("6.1", ["b", 0.15000000001], records=RECORDS) is None


def test_single_category_has_zero_gap():
    assert check("6.1", ("a", 0.0), records=RECORDS[:1]) is None
    assert check("6.1", ("a", 0.1), records=RECORDS[:1]) is not None


def test_wrong_answers_are_caught():
    assert "highest" in check("6.1", ("a", 0.15), records=RECORDS)
    assert "sign" in check("6.1", ("b", -0.15), records=RECORDS)
    assert check("6.1", ("b", 0.3), records=RECORDS) is not None  # max - min instead of mean - min
    assert check("6.1", "b", records=RECORDS) is not None
    assert check("6.1", ..., records=RECORDS).startswith("not answered")


def test_plot_category_metrics_marks_the_paper():
    records = [{"category": "bottle", "image_auroc": 0.99, "pixel_auroc": 0.97, "pixel_aupro": 0.9},
               {"category": "bottle_syn", "image_auroc": 0.8, "pixel_auroc": 0.9, "pixel_aupro": 0.6}]
    fig = plot_category_metrics(records, paper_model="PaDiM-WR50-Rd550", title="t")
    ax = fig.axes[0]
    assert ax.get_title() == "t" and ax.get_xlabel() and ax.get_ylabel() and len(ax.patches) == 6
    assert any("paper" in t.get_text() for t in ax.get_legend().get_texts())  # bottle has paper numbers
    fig = plot_category_metrics(records[1:], paper_model="PaDiM-WR50-Rd550")
    assert not any("paper" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
