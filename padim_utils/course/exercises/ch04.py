"""Chapter 04: Mahalanobis anomaly maps."""

import numpy as np
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from . import exercise
from ._common import as_array, as_number


@exercise("4.1")
def one_patch_distance(answer, embeddings, mean, precision, image, position):
    """The Mahalanobis distance of patch `position` = (row, col) of test image `image`, checked with scipy."""
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number (a float), got {type(answer).__name__}."
    emb = as_array(embeddings)  # (N, d, h, w)
    r, c = position
    p = r * emb.shape[3] + c  # positions are stored row by row
    x, mu, vi = emb[image, :, r, c], as_array(mean)[p], as_array(precision)[p]
    expected = scipy_mahalanobis(x, mu, vi)
    if np.isclose(a, expected, rtol=1e-4):
        return None
    if np.isclose(a, expected**2, rtol=1e-4):
        return f"{a:.6g} is the squared distance; take its square root."
    with_cov = scipy_mahalanobis(x, mu, np.linalg.inv(vi))
    if np.isclose(a, with_cov, rtol=1e-4):
        return "you multiplied by the covariance; the distance uses its inverse, the precision matrix."
    return (f"the distance is {a:.6g}, which is not right. Hint: is it position (row, col) = {tuple(position)} "
            f"of image {image}, with mean[row * w + col] and precision[row * w + col]?")
