"""Pure metric functions for failure scores: numpy in, float out, no state, no printing.

Convention everywhere: ``f(failure_score, is_error, ...)`` with ``failure_score`` 1-D
(higher = more likely wrong) and ``is_error`` 1-D 0/1 (1 = base model wrong); definitions in
docs/metrics.md. AURC, E-AURC and AUGRC are returned raw, in [0, 1]; result tables
multiply the keys in :data:`PER_MILLE` by 1000.
"""

from __future__ import annotations

from metaerr_edge.metrics.bootstrap import BootstrapCI, bootstrap_ci
from metaerr_edge.metrics.detection import (
    ArrayLike,
    aupr_error,
    aupr_success,
    auroc,
    fpr_at_95tpr,
    validate_inputs,
)
from metaerr_edge.metrics.risk_coverage import (
    RiskCoverage,
    aurc,
    augrc,
    coverage_at_risk,
    eaurc,
    risk_at_coverage,
    risk_coverage_curve,
)

# Keys of failure_metrics() that tables report x1000.
PER_MILLE: tuple[str, ...] = ("aurc", "eaurc", "augrc")

# Operating points reported by failure_metrics(): key -> fraction.
RISK_AT_COVERAGE: dict[str, float] = {"risk@cov80": 0.80, "risk@cov90": 0.90, "risk@cov95": 0.95}
COVERAGE_AT_RISK: dict[str, float] = {"cov@risk1": 0.01, "cov@risk2": 0.02, "cov@risk5": 0.05}


def failure_metrics(failure_score: ArrayLike, is_error: ArrayLike) -> dict[str, float]:
    """Every metric of docs/metrics.md, under stable keys, in one dict.

    Keys: error_rate, auroc, aupr_error, aupr_success, fpr95tpr, aurc, eaurc, augrc,
    risk@cov80/90/95 and cov@risk1/2/5. Values are raw fractions (the PER_MILLE ones are not
    scaled); the detection metrics are NaN when ``is_error`` holds one class.

    Example:
        >>> m = failure_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> m["auroc"], m["error_rate"], m["cov@risk5"]
        (0.75, 0.5, 0.25)
    """
    score, err = validate_inputs(failure_score, is_error)
    curve = risk_coverage_curve(score, err)
    out = {
        "error_rate": curve.error_rate,
        "auroc": auroc(score, err),
        "aupr_error": aupr_error(score, err),
        "aupr_success": aupr_success(score, err),
        "fpr95tpr": fpr_at_95tpr(score, err),
        "aurc": curve.aurc,
        "eaurc": curve.eaurc,
        "augrc": curve.augrc,
    }
    out.update({key: curve.risk_at_coverage(c) for key, c in RISK_AT_COVERAGE.items()})
    out.update({key: curve.coverage_at_risk(r) for key, r in COVERAGE_AT_RISK.items()})
    return out


__all__ = [
    "COVERAGE_AT_RISK",
    "PER_MILLE",
    "RISK_AT_COVERAGE",
    "BootstrapCI",
    "RiskCoverage",
    "aupr_error",
    "aupr_success",
    "aurc",
    "augrc",
    "auroc",
    "bootstrap_ci",
    "coverage_at_risk",
    "eaurc",
    "failure_metrics",
    "fpr_at_95tpr",
    "risk_at_coverage",
    "risk_coverage_curve",
    "validate_inputs",
]
