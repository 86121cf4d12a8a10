"""Exercise 9.1 accepts the right answer and catches typical wrong ones."""

import numpy as np

from padim_utils.course.exercises import check

ANGLES = [0, 5, 10, 20, 30, 45]
SCORES = np.array([[10.0, 12.0], [11.0, 12.5], [12.0, 14.0], [15.0, 15.5], [18.0, 19.0], [22.0, 25.0]])


def test_right_answer_passes():
    slope = np.polyfit(ANGLES, SCORES.mean(1), 1)[0]
    assert check("9.1", slope, angles=ANGLES, rot_scores=SCORES) is None


def test_wrong_answers_are_caught():
    slope = np.polyfit(ANGLES, SCORES.mean(1), 1)[0]
    assert "radian" in check("9.1", np.polyfit(np.radians(ANGLES), SCORES.mean(1), 1)[0], angles=ANGLES,
                             rot_scores=SCORES)
    assert "other way" in check("9.1", 1 / slope, angles=ANGLES, rot_scores=SCORES)
    intercept = np.polyfit(ANGLES, SCORES.mean(1), 1)[1]
    assert check("9.1", intercept, angles=ANGLES, rot_scores=SCORES) is not None
    assert check("9.1", (SCORES.mean(1)[-1] - SCORES.mean(1)[0]) / 45, angles=ANGLES, rot_scores=SCORES) is not None
    assert check("9.1", "steep", angles=ANGLES, rot_scores=SCORES) is not None
