"""Shared fixtures: the embedded synthetic dataset (generated once per session) and the real bottle path."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOTTLE_ROOT = REPO.parent / "shared" / "data" / "mvtec_ad"


@pytest.fixture(scope="session")
def quick_root(tmp_path_factory) -> Path:
    """Tiny 64px synthetic MVTec-layout data, one texture and one object category."""
    from padim_utils.datasets.synthetic import make_synthetic_mvtec

    return make_synthetic_mvtec(tmp_path_factory.mktemp("synthetic"), image_size=64, n_train=8, seed=0)


@pytest.fixture(scope="session")
def quick_category(quick_root) -> str:
    from padim_utils.datasets.mvtec import list_categories

    return list_categories(quick_root)[0]


@pytest.fixture(scope="session")
def bottle_root() -> Path:
    if not (BOTTLE_ROOT / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD bottle data not found at {BOTTLE_ROOT / 'bottle'} (it lives in ../shared beside "
                    "the repository)")
    return BOTTLE_ROOT
