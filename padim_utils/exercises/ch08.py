"""Chapter 08: interactive ablations."""

from ..metrics import aupro
from ..model import Padim
from . import exercise
from ._common import compare_number


def _aupro_with_sigma(train_cache, test_cache, config, sigma: float) -> float:
    model = Padim(config.replace(sigma=sigma)).fit(train_cache, progress=False)
    result = model.predict_dataset(test_cache, progress=False)
    return aupro(result["masks"], result["maps"])


@exercise("8.1")
def blur_gain(answer, train_cache, test_cache, config):
    """AU-PRO with sigma = 4 minus AU-PRO with sigma = 0 (a plain Padim fit on the caches, no ablation helper)."""
    blurred = _aupro_with_sigma(train_cache, test_cache, config, 4.0)
    sharp = _aupro_with_sigma(train_cache, test_cache, config, 0.0)
    expected = blurred - sharp
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return f"answer with one number, got {answer!r}."
    if expected != 0 and abs(a + expected) <= 1e-6 * max(1.0, abs(expected)):
        return "the sign is reversed: take AU-PRO with the blur minus AU-PRO without it."
    return compare_number(a, expected, "AU-PRO(sigma=4) - AU-PRO(sigma=0)", tol=1e-6)
