"""Exercise 11.1 accepts the right prediction of the ONNX file size and catches typical slips."""

import pytest

from padim_utils.course.exercises import check

# quick mode (16 x 16 grid, d = 32) and offline_lite0 on real bottle (64 x 64 grid, d = 100): Lite0's layers up to
# blocks.4 have 700,768 parameters; the file sizes are those of the two exports measured with this package
CASES = [dict(positions=256, d=32, backbone_parameters=700_768, file_bytes=3_909_239),
         dict(positions=4096, d=100, backbone_parameters=700_768, file_bytes=168_626_973)]


def _right(c):
    return 4 * (c["positions"] * c["d"] ** 2 + c["positions"] * c["d"] + c["backbone_parameters"])


@pytest.mark.parametrize("case", CASES)
def test_right_answer_passes(case):
    assert check("11.1", _right(case), **case) is None
    assert check("11.1", case["file_bytes"], **case) is None  # the real size itself, of course


@pytest.mark.parametrize("case", CASES)
def test_slips_are_caught(case):
    p, d, n = case["positions"], case["d"], case["backbone_parameters"]
    right = _right(case)
    slips = {"numbers, not bytes": right / 4, "bits": right * 8, "MiB": right / 2**20,
             "d x d precision matrix": 4 * (2 * p * d + n), "backbone's weights": 4 * (p * d * d + p * d),
             "one per position": 4 * (int(p**0.5) * (d * d + d) + n)}
    for hint, wrong in slips.items():
        message = check("11.1", wrong, **case)
        assert message is not None and hint in message, (hint, message)
    assert "the file holds" in check("11.1", 2 * right, **case)
    assert check("11.1", "big", **case).startswith("answer with one number")
    assert check("11.1", ..., **case).startswith("not answered yet")
