"""Exercises 5.1 and 5.2: right answers pass, typical wrong answers are caught."""

import numpy as np
from scipy import ndimage

from padim_utils.course.exercises import check
from padim_utils.metrics import image_auroc, pro_at

LABELS = np.array([1, 1, 1, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.5, 0.3, 0.5, 0.1, 0.2, 0.95])  # one tie (0.5, 0.5)


def test_auroc_right_answer_passes():
    assert check("5.1", image_auroc(LABELS, SCORES), labels=LABELS, scores=SCORES) is None


def test_auroc_wrong_answers_are_caught():
    bad, good = SCORES[LABELS == 1], SCORES[LABELS == 0]
    strict = (bad[:, None] > good[None, :]).mean()  # ties counted 0
    msg = check("5.1", strict, labels=LABELS, scores=SCORES)
    assert msg is not None and "tie" in msg and f"{image_auroc(LABELS, SCORES):.4f}" not in msg
    msg = check("5.1", 1 - image_auroc(LABELS, SCORES), labels=LABELS, scores=SCORES)
    assert msg is not None and "1 - AUROC" in msg
    assert check("5.1", 0.5, labels=LABELS, scores=SCORES) is not None


def _tiny():
    masks = np.zeros((2, 6, 6), dtype=np.uint8)
    masks[0, 0:2, 0:2] = 1  # a 2x2 region
    masks[0, 3, 3] = masks[0, 4, 4] = 1  # one region under 8-connectivity, two under 4
    masks[1, 1:4, 1:4] = 1  # a 3x3 region
    maps = np.zeros((2, 6, 6))
    maps[0, 0:2, 0:2] = 2
    maps[1, 1:3, 1:4] = 2  # 6 of 9 pixels found
    return masks, maps


def test_pro_right_answer_passes():
    masks, maps = _tiny()
    assert check("5.2", pro_at(masks, maps, 2).pro, masks=masks, maps=maps, threshold=2) is None
    assert check("5.2", (1 + 0 + 6 / 9) / 3, masks=masks, maps=maps, threshold=2) is None


def test_pro_wrong_answers_are_caught():
    masks, maps = _tiny()
    four = [ndimage.label(m)[0] for m in masks]  # 4-connectivity: the default structure
    overlaps = [(maps[i][four[i] == r] >= 2).mean() for i in range(2) for r in range(1, four[i].max() + 1)]
    assert len(overlaps) == 4
    msg = check("5.2", float(np.mean(overlaps)), masks=masks, maps=maps, threshold=2)
    assert msg is not None and "8-connected" in msg and "Hint:" in msg and f"{(1 + 0 + 6 / 9) / 3:.4f}" not in msg
    msg = check("5.2", float((maps[masks == 1] >= 2).mean()), masks=masks, maps=maps, threshold=2)
    assert msg is not None and "region" in msg
