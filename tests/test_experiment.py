"""A fast floor on detection quality: the pipeline must really detect the embedded defects.

Measured on the quick data (64 px, 8 training images, seed 0; offline Lite0, d = 32, 2-core CPU):
bottle_syn image AUROC 0.805 / pixel AUROC 0.921 / AU-PRO 0.656; carpet_syn 0.716 / 0.877 / 0.482.
Chance is 0.5 / 0.5 / ~0.15; the floors sit a margin below the measurement.
"""

import pytest

from padim_utils.config import preset
from padim_utils.experiments.benchmark import results_table, run_benchmark

FLOORS = {"bottle_syn": (0.75, 0.89, 0.58), "carpet_syn": (0.66, 0.84, 0.42)}


@pytest.mark.parametrize("category", sorted(FLOORS))
def test_quick_pipeline_detects_the_embedded_defects(quick_root, category):
    record = run_benchmark(preset("quick"), quick_root, category, progress=False)
    floors = dict(zip(("image_auroc", "pixel_auroc", "pixel_aupro"), FLOORS[category]))
    for key, floor in floors.items():
        assert record[key] >= floor, f"{category}: {key} = {record[key]:.3f} < {floor}"
    assert record["d"] == 32 and record["n_train"] == 8
    assert f"| {category} | efficientnet_lite0 | 32 | {record['image_auroc']:.3f} |" in results_table([record])


def test_reset_peak_memory_starts_the_peak_afresh():
    import numpy as np
    import torch

    from padim_utils.measure import peak_memory_bytes, reset_peak_memory

    cpu = torch.device("cpu")
    big = np.ones(250_000_000 // 8)  # 250 MB, every page touched
    del big
    before = peak_memory_bytes(cpu)
    if not reset_peak_memory(cpu):
        pytest.skip("/proc/self/clear_refs cannot be written here: the peak is the whole process's")
    assert peak_memory_bytes(cpu) < before - 200e6
