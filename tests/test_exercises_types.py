"""Every numeric exercise check takes a right answer in any reasonable type (Python, numpy or torch; float32 or
float64; a scalar, a one-element array or list), still catches wrong ones with their diagnosis, and never
prints the expected value."""

import math
import re

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score

from padim_utils.course.exercises import check


def _forms(value: float) -> dict:
    """The same number as a learner may hand it in."""
    f32 = torch.tensor(value, dtype=torch.float32)
    return {"float": float(value), "np.float64": np.float64(value), "np.float32": np.float32(value),
            "torch float32": f32, "torch float32 .item()": f32.item(), "torch float64": torch.tensor(value),
            "list": [value], "np 0-d": np.array(value), "np (1,) float32": np.array([value], dtype=np.float32),
            "torch (1,)": torch.tensor([value])}


def _shows(msg: str, value: float) -> bool:
    """Whether `msg` prints `value` (as .4f or .6g, as a whole number token)."""
    return any(re.search(rf"(?<![\d.]){re.escape(text)}(?!\d)", msg) for text in (f"{value:.4f}", f"{value:.6g}"))


# ---------------------------------------------------------------------------- 5.1 (the example)
def _auroc_data():
    rng = np.random.default_rng(3)
    labels = np.array([1] * 14 + [0] * 20)
    scores = np.round(rng.normal(labels * 0.4, 1.0), 1)  # rounded: some ties
    return labels, scores


def _pairs_auroc_float32(labels, scores):
    s = torch.tensor(scores, dtype=torch.float32)
    bad, good = s[torch.tensor(labels) == 1], s[torch.tensor(labels) == 0]
    return ((bad[:, None] > good[None, :]).float() + 0.5 * (bad[:, None] == good[None, :]).float()).mean()


def test_auroc_in_float32_passes():
    labels, scores = _auroc_data()
    expected = roc_auc_score(labels, scores)
    mine = _pairs_auroc_float32(labels, scores)  # a 0-d float32 tensor
    assert abs(mine.item() - expected) > 1e-9  # float32 rounding: what the check compared too tightly
    for form in (mine, mine.item(), mine.numpy(), [mine.item()], mine.reshape(1)):
        assert check("5.1", form, labels=labels, scores=scores) is None, form


def test_auroc_wrong_answers_in_float32_are_caught():
    labels, scores = _auroc_data()
    expected = roc_auc_score(labels, scores)
    pairs = 14 * 20
    flipped = np.float32(1 - expected)
    assert "1 - AUROC" in check("5.1", flipped, labels=labels, scores=scores)
    s = torch.tensor(scores, dtype=torch.float32)
    bad, good = s[torch.tensor(labels) == 1], s[torch.tensor(labels) == 0]
    assert (bad[:, None] == good[None, :]).any()
    strict = (bad[:, None] > good[None, :]).float().mean()  # ties counted 0
    assert "tie" in check("5.1", strict, labels=labels, scores=scores)
    one_pair_off = torch.tensor(expected + 1 / pairs, dtype=torch.float32)
    msg = check("5.1", one_pair_off, labels=labels, scores=scores)
    assert msg is not None and "Hint:" in msg
    for m in (msg, check("5.1", flipped, labels=labels, scores=scores)):
        assert not _shows(m, expected)


def test_auroc_tolerance_stays_below_one_pair_on_large_sets():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 600 + [0] * 600)
    scores = rng.normal(labels * 0.5, 1.0)
    expected = roc_auc_score(labels, scores)
    assert check("5.1", expected, labels=labels, scores=scores) is None
    assert check("5.1", expected + 1 / 360_000, labels=labels, scores=scores) is not None  # one pair of 360,000


# ---------------------------------------------------------------------------- 10.1 (the second example)
VALUES = [0.91, 0.87, 0.95, 0.90]


def test_mean_and_sem_in_float32_pass():
    t = torch.tensor(VALUES)  # float32, torch's default
    mean, sem = t.mean(), t.std() / math.sqrt(len(VALUES))
    assert abs(mean.item() - np.mean(VALUES)) > 1e-9  # float32 rounding: what the check compared too tightly
    for form in ((mean, sem), (mean.item(), sem.item()), [mean.numpy(), sem.numpy()], torch.stack([mean, sem]),
                 np.array([mean.item(), sem.item()], dtype=np.float32), (np.mean(VALUES), scipy.stats.sem(VALUES))):
        assert check("10.1", form, values=VALUES) is None, form
    assert check("10.1", (torch.tensor(0.5), None), values=[0.5]) is None


def test_mean_and_sem_wrong_answers_in_float32_are_caught():
    t = torch.tensor(VALUES)
    mean, n = t.mean(), len(VALUES)
    expected_sem = scipy.stats.sem(VALUES)
    said = {"ddof": check("10.1", (mean, t.std(correction=0) / math.sqrt(n)), values=VALUES),
            "sqrt(n)": check("10.1", (mean, t.std()), values=VALUES),
            "order": check("10.1", torch.stack([t.std() / math.sqrt(n), mean]), values=VALUES)}
    for diagnosis, msg in said.items():
        assert msg is not None and diagnosis in msg, (diagnosis, msg)
        assert not _shows(msg, expected_sem) and not _shows(msg, np.mean(VALUES))
    assert check("10.1", (mean, t.std() / math.sqrt(n) * 1.001), values=VALUES) is not None
    assert check("10.1", torch.tensor([1.0, 2.0, 3.0]), values=VALUES) is not None


# ---------------------------------------------------------------------------- every other numeric check
def _chapter_cases():
    """(exercise, given, right value, [(wrong value, words its message must hold)]) with independent references."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(200, 6)) * np.linspace(2, 0.2, 6))
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.numpy(), rowvar=False)))[::-1]
    explained = ev[:2].sum() / ev.sum()

    g = torch.Generator().manual_seed(0)
    emb, mean = torch.randn(3, 4, 2, 3, generator=g), torch.randn(6, 4, generator=g)
    a = torch.randn(6, 4, 4, generator=g)
    precision = a @ a.transpose(1, 2) + torch.eye(4)
    delta = (emb[2, :, 1, 2] - mean[5]).double().numpy()
    distance = float(np.sqrt(delta @ precision[5].double().numpy() @ delta))

    masks = np.zeros((1, 6, 6), dtype=np.uint8)
    masks[0, 0:2, 0:3] = 1
    maps = np.zeros((1, 6, 6))
    maps[0, 0, 0:3] = 2  # 3 of the region's 6 pixels found

    maps7, labels7 = rng.random((10, 4, 4)), np.array([0, 1] * 5)
    maps7[labels7 == 1] += 0.1 * rng.random((5, 4, 4))
    angles, rot = [0, 10, 20, 30], np.array([[1.0, 1.2], [1.5, 1.9], [2.2, 2.4], [3.1, 2.9]])
    slope = np.polyfit(angles, rot.mean(1), 1)[0]
    onnx = dict(positions=256, d=32, backbone_parameters=700_768, file_bytes=3_909_239)
    right_bytes = 4 * (256 * 32 * 32 + 256 * 32 + 700_768)
    return [
        ("2.1", dict(X=x, d=2), explained, [(100 * explained, "percentage")]),
        ("4.1", dict(embeddings=emb, mean=mean, precision=precision, image=2, position=(1, 2)), distance,
         [(distance**2, "square")]),
        ("5.2", dict(masks=masks, maps=maps, threshold=2), 0.5, [(0.4, "Hint:")]),
        ("7.1", dict(maps=maps7, labels=labels7), roc_auc_score(labels7, maps7.reshape(10, -1).mean(1)),
         [(roc_auc_score(labels7, maps7.reshape(10, -1).max(1)) + 0.01, "Hint:")]),
        ("9.1", dict(angles=angles, rot_scores=rot), slope, [(slope * 180 / np.pi, "radian"), (1 / slope, "other way")]),
        ("11.1", onnx, right_bytes, [(right_bytes * 8, "bits"), (2 * right_bytes, "the file holds")]),
    ]


@pytest.mark.parametrize("case", _chapter_cases(), ids=lambda c: c[0])
def test_right_answers_pass_in_every_form_and_wrong_ones_do_not(case):
    key, given, right, wrongs = case
    for name, form in _forms(right).items():
        assert check(key, form, **given) is None, (key, name)
    for wrong, words in wrongs:
        for name, form in _forms(wrong).items():
            msg = check(key, form, **given)
            assert msg is not None and words in msg, (key, name, msg)
            assert not _shows(msg, right) and str(given.get("file_bytes")) not in msg


def test_pairs_take_arrays_and_tensors():
    records = [{"category": "a", "pixel_aupro": 0.9}, {"category": "b", "pixel_aupro": 0.6},
               {"category": "c", "pixel_aupro": 0.75}]
    gap = torch.tensor(0.75 - 0.6, dtype=torch.float32)
    assert check("6.1", ("b", gap), records=records) is None
    assert "sign" in check("6.1", ("b", -gap), records=records)
    assert check("6.1", ("b", np.float32(0.3)), records=records) is not None


def test_arrays_in_bfloat16_can_be_checked():
    emb = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # small whole numbers: exact in bf16
    cov = np.cov(emb[:, :, 0, 1].numpy(), rowvar=False)
    assert check("3.1", torch.tensor(cov, dtype=torch.bfloat16), emb=emb, position=(0, 1)) is None
    assert check("1.1", emb.to(torch.bfloat16), layers=[emb]) is None


def test_an_embedding_in_float32_of_float64_layers_passes():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, 2, 2, generator=g,
                                                                                     dtype=torch.float64)]
    right = np.concatenate([layers[0].numpy(), layers[1].numpy().repeat(2, axis=2).repeat(2, axis=3)], axis=1)
    assert check("1.1", torch.tensor(right, dtype=torch.float32), layers=layers) is None
    assert check("1.1", right.tolist(), layers=layers) is None
    smooth = torch.nn.functional.interpolate(layers[1], size=(4, 4), mode="bilinear", align_corners=False)
    wrong = torch.cat([layers[0], smooth], 1).float()
    assert "differs from the right values" in check("1.1", wrong, layers=layers)
