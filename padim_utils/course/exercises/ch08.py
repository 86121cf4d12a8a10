"""Chapter 08: interactive ablations."""

from ...metrics import aupro
from ...model import Padim
from ...scoring import gaussian_blur
from . import exercise
from ._common import as_number, close, compare_number, tolerance


def _aupro_with_and_without_blur(train_cache, test_cache, config, sigma: float) -> tuple[float, float]:
    """One plain Padim fit without blur; the blurred maps are the same maps through the blur."""
    model = Padim(config.replace(sigma=0.0)).fit(train_cache, progress=False)
    result = model.predict_dataset(test_cache, progress=False)
    blurred = gaussian_blur(result["maps"], sigma)
    return aupro(result["masks"], blurred), aupro(result["masks"], result["maps"])


@exercise("8.1")
def blur_gain(answer, train_cache, test_cache, config):
    """AU-PRO with sigma = 4 minus AU-PRO with sigma = 0 (a plain Padim fit on the caches, no ablation helper)."""
    blurred, sharp = _aupro_with_and_without_blur(train_cache, test_cache, config, 4.0)
    expected = blurred - sharp
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number, got {answer!r}."
    if expected != 0 and close(-a, expected, tolerance(answer)):
        return "the sign is reversed: take AU-PRO with the blur minus AU-PRO without it."
    return compare_number(answer, expected, "AU-PRO(sigma=4) - AU-PRO(sigma=0)", tol=1e-6,
                          hint="run_ablation(train_cache, test_cache, cfg, sigma=...) twice, everything else "
                               "as cfg, and subtract the two \"pixel_aupro\" values.")
