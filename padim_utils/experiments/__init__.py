"""Experiments on top of the method: benchmarks, the feature cache, ablations, STC, and the paper's tables.

    record = run_benchmark(preset("paper_r18"), "data/mvtec_ad", "bottle")   # fit, predict, every metric
    cache = FeatureCache.compute(train, cfg)                                  # layer outputs once, re-fit fast
    rows = sweep(train_cache, test_cache, cfg, [{"d": 50}, {"d": 100}])       # one row per setting
    reproduce(out="runs/paper")                                               # `padim reproduce`

Modules: `features` (FeatureCache), `benchmark` (run_benchmark, evaluate_cached), `ablations` (layers,
d, reduction, eps, sigma: one sweep), `stc` (where the STC data is, one model per scene, the walkway study),
`reproduction` with `units` and `tables` (`padim reproduce`: the paper's Tables I-VIII re-run; our records
in the paper's table format).
"""

from .ablations import run_ablation, sweep
from .benchmark import evaluate_cached, run_benchmark
from .features import FeatureCache
from .reproduction import (PAPER_BACKBONES, TABLES, choose_backbones, find_sources, load_tables, make_plan, reproduce,
                        run_plan)
from .stc import frames_study, run_stc, stc_source
from .tables import explain_gaps, gaps, paper_table, table_markdown
from .units import base_config

__all__ = ["FeatureCache", "run_benchmark", "evaluate_cached", "run_ablation", "sweep", "run_stc", "frames_study",
           "stc_source", "reproduce", "PAPER_BACKBONES", "TABLES", "choose_backbones", "find_sources", "load_tables",
           "make_plan", "run_plan", "base_config", "table_markdown", "paper_table", "gaps", "explain_gaps"]
