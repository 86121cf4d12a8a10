"""Chapter 02: dimension reduction."""

import numpy as np
from sklearn.decomposition import PCA

from . import exercise
from ._common import as_array, as_number, compare_number, tolerance


@exercise("2.1")
def explained_variance(answer, X, d):
    """Share of the total variance of the rows of `X` (patches x channels) along its top-`d` principal
    directions, from scikit-learn's PCA."""
    x = as_array(X)
    expected = float(PCA(n_components=int(d), svd_solver="covariance_eigh").fit(x).explained_variance_ratio_.sum())
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number (a fraction between 0 and 1), got {answer!r}."
    if a > 1.0 + 1e-9 and abs(a / 100 - expected) <= 1e-3:
        return f"{a:.4g} looks like a percentage; give the fraction (divide it by 100)."
    ascending = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))
    if abs(a - ascending[: int(d)].sum() / ascending.sum()) <= tolerance(answer) and abs(a - expected) > 1e-4:
        return "that is the share of the d *smallest* eigenvalues: eigvalsh sorts them in ascending order."
    return compare_number(answer, expected, "the explained-variance fraction", tol=1e-4,
                          hint="the eigenvalues of the channels' covariance matrix torch.cov(X.T): the sum of the "
                               "d largest over the sum of all.")
