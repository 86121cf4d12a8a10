"""Chapter 06: the MVTec AD benchmark."""

import numpy as np

from . import exercise
from ._common import as_number, close, compare_number, items, tolerance


@exercise("6.1")
def hardest_category(answer, records):
    """(category with the lowest AU-PRO, mean AU-PRO of all categories minus its AU-PRO)."""
    answer = items(answer, 2)
    if answer is None:
        return "answer with a tuple (category, gap)."
    names = np.array([str(r["category"]) for r in records])
    aupro = np.array([float(r["pixel_aupro"]) for r in records], dtype=np.float64)
    k = int(np.argmin(aupro))
    if str(answer[0]) != names[k]:
        if str(answer[0]) == names[int(np.argmax(aupro))] and len(records) > 1:
            return f"{answer[0]} has the highest AU-PRO, not the lowest."
        return f"the category with the lowest AU-PRO is not {answer[0]!r}."
    gap = float(aupro.mean() - aupro[k])
    try:
        negated = close(-as_number(answer[1]), gap, tolerance(answer[1]))
    except (TypeError, ValueError):
        negated = False  # compare_number says what is wrong with it
    if len(records) > 1 and negated and gap > 0:
        return "the gap has the wrong sign: take the mean minus the lowest value."
    return compare_number(answer[1], gap, "the gap below the mean AU-PRO", tol=1e-6,
                          hint="the mean of every category's AU-PRO minus the lowest one.")
