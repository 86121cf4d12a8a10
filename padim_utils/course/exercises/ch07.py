"""Chapter 07: PaDiM on video (ShanghaiTech Campus)."""

from sklearn.metrics import roc_auc_score

from . import exercise
from ._common import as_array, compare_number


@exercise("7.1")
def frame_auroc_with_mean_scores(answer, maps, labels):
    """Frame AUROC when each frame is scored by the mean of its map (scikit-learn as the oracle)."""
    m, y = as_array(maps), as_array(labels).astype(int)
    expected = roc_auc_score(y, m.reshape(m.shape[0], -1).mean(axis=1))
    return compare_number(answer, float(expected), "your frame AUROC", tol=1e-6,
                          hint="score each frame by the mean of its map, maps.mean(dim=(1, 2)), then compute "
                               "image_auroc(labels, those scores).")
