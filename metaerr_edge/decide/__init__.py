"""When to defer: calibrated thresholds (coverage, SGR risk) and the latency-aware trade-off.

Decision rule: ACCEPT when ``failure_score <= threshold``, DEFER when ``failure_score > threshold``.
Pure numpy (scipy for the risk bound, matplotlib only inside ``TradeoffTable.plot``); no torch.
"""

from __future__ import annotations

from metaerr_edge.decide.thresholds import (
    ThresholdChoice,
    clopper_pearson_upper,
    decide,
    threshold_for_coverage,
    threshold_for_risk,
)
from metaerr_edge.decide.tradeoff import TradeoffTable, recommend, sweep_tradeoff

__all__ = [
    "ThresholdChoice",
    "TradeoffTable",
    "clopper_pearson_upper",
    "decide",
    "recommend",
    "sweep_tradeoff",
    "threshold_for_coverage",
    "threshold_for_risk",
]
