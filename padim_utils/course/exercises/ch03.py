"""Chapter 03: covariance estimation."""

import numpy as np

from . import exercise
from ._common import as_array, compare_arrays


@exercise("3.1")
def covariance_of_one_position(answer, emb, position):
    """The unbiased covariance (no eps) of the N embeddings at grid cell `position` = (i, j) of
    `emb` (N, d, h, w), from numpy's np.cov."""
    i, j = position
    x = as_array(emb)[:, :, i, j]  # (N, d)
    n, d = x.shape
    expected = np.cov(x, rowvar=False)  # (d, d), divides by N - 1
    try:
        a = as_array(answer)
    except (TypeError, ValueError):
        return "answer with a (d, d) array or tensor."
    if a.shape == (n, n) and n != d:
        return f"your matrix is {n}x{n}: that is image against image; the covariance is over the {d} channels."
    if a.shape == expected.shape and np.allclose(a, expected * (n - 1) / n, rtol=1e-4, atol=1e-8):
        return "you divided by N; the unbiased covariance PaDiM uses divides by N - 1."
    if a.shape == expected.shape and np.allclose(np.diag(a - expected), np.diag(a - expected)[0], rtol=1e-3) \
            and np.diag(a - expected)[0] > 1e-6 and np.allclose(a - np.diag(np.diag(a)), expected - np.diag(np.diag(expected)),
                                                               rtol=1e-4, atol=1e-8):
        return f"you added {np.diag(a - expected)[0]:.3g} * I; compute it without eps."
    return compare_arrays(a, expected, "your covariance", rtol=1e-4, atol=1e-8,
                          hint="take the (N, d) rows emb[:, :, i, j], subtract their mean over the images, and "
                               "divide x_c^T x_c by N - 1.")
