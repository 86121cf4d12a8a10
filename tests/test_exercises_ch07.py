"""Exercise 7.1: the check accepts the right AUROC and catches the max-of-map one."""

import numpy as np

from padim_utils.course.exercises import check
from padim_utils.metrics import image_auroc


def test_mean_of_map_auroc():
    rng = np.random.default_rng(0)
    maps = rng.random((12, 8, 8))
    labels = np.array([0, 1] * 6)
    maps[labels == 1, 0, 0] += 1.0  # a one-pixel spot: raises the max a lot, the mean a little
    right = image_auroc(labels, maps.mean(axis=(1, 2)))
    assert check("7.1", right, maps=maps, labels=labels) is None
    wrong = image_auroc(labels, maps.max(axis=(1, 2)))
    msg = check("7.1", wrong, maps=maps, labels=labels)
    assert wrong != right and "Hint:" in msg and f"{wrong:.6g}" in msg  # the learner's value and a hint ...
    assert f"{right:.6g}" not in msg and f"{right:.3f}" not in msg  # ... never the expected value
