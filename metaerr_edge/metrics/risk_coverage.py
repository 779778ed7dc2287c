"""Risk-coverage metrics for selective prediction: AURC, E-AURC, AUGRC and operating points.

The curve follows FD-Shifts' ``RiskCoverageStats`` so numbers compare with the literature:
tied scores form one point; the curve starts at coverage 1 (everything accepted) and drops
the least-confident group (highest failure score) at each step; a last point sits at
coverage 0 with the previous selective risk (generalized risk 0); areas use the trapezoid
rule. Areas are returned raw, in [0, 1]; tables report them x1000 (see ``PER_MILLE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from metaerr_edge.errors import ConfigError
from metaerr_edge.metrics.detection import ArrayLike, validate_inputs

# Targets within this distance of a curve point count as hitting it (float round-off).
_TOL = 1e-12


def _frozen(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    arr.flags.writeable = False
    return arr


def _trapezoid(y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> float:
    return float(np.sum((x[:-1] - x[1:]) * (y[:-1] + y[1:]) / 2.0))


def _fraction(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(
            f"Expected {name} as a fraction in [0, 1]; got {value!r}. "
            f"Pass e.g. 0.9 for 90%, not 90."
        )
    return float(value)


@dataclass(frozen=True)
class RiskCoverage:
    """Points of a risk-coverage curve, ordered by descending coverage (1 down to 0).

    Attributes:
        coverages: accepted / n at each point; the last point is 0.
        risks: selective risk, errors among accepted / accepted; the last point repeats
            the one before it.
        generalized_risks: accepted errors / n; the last point is 0.
        thresholds: failure-score threshold of each point (accept iff score <= threshold);
            -inf for the final, empty point.
    """

    coverages: npt.NDArray[np.float64]
    risks: npt.NDArray[np.float64]
    generalized_risks: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]

    @property
    def error_rate(self) -> float:
        """Risk with everything accepted."""
        return float(self.risks[0])

    @property
    def aurc(self) -> float:
        """Area under the selective-risk curve (raw, in [0, 1])."""
        return _trapezoid(self.risks, self.coverages)

    @property
    def augrc(self) -> float:
        """Area under the generalized-risk curve (raw, in [0, 0.5])."""
        return _trapezoid(self.generalized_risks, self.coverages)

    @property
    def eaurc(self) -> float:
        """AURC minus the AURC of a perfect ranking, r + (1 - r) ln(1 - r)."""
        r = self.error_rate
        optimum = 1.0 if r >= 1.0 else r + (1.0 - r) * math.log1p(-r)
        return self.aurc - optimum

    def risk_at_coverage(self, coverage: float) -> float:
        """Selective risk at the point with the smallest coverage >= ``coverage``."""
        target = _fraction(coverage, "coverage")
        last = int(np.count_nonzero(self.coverages >= target - _TOL)) - 1
        return float(self.risks[last])

    def coverage_at_risk(self, risk: float) -> float:
        """Largest coverage whose selective risk is <= ``risk``; 0.0 if none."""
        target = _fraction(risk, "risk")
        ok = self.risks[:-1] <= target + _TOL
        return float(self.coverages[:-1][ok].max()) if ok.any() else 0.0


def risk_coverage_curve(failure_score: ArrayLike, is_error: ArrayLike) -> RiskCoverage:
    """Risk-coverage curve with one point per distinct failure score.

    Example:
        >>> rc = risk_coverage_curve([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1])
        >>> rc.coverages.tolist(), rc.generalized_risks.tolist()
        ([1.0, 0.75, 0.5, 0.0], [0.5, 0.25, 0.25, 0.0])
    """
    score, err = validate_inputs(failure_score, is_error)
    n = score.size
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    cum_errors = np.cumsum(err[order])
    # Index of the last sample of each group of equal scores, highest score first.
    last = np.flatnonzero(np.r_[sorted_score[1:] != sorted_score[:-1], True])[::-1]
    accepted = last + 1
    errors = cum_errors[last]
    risks = errors / accepted
    return RiskCoverage(
        coverages=_frozen(np.r_[accepted / n, 0.0]),
        risks=_frozen(np.r_[risks, risks[-1]]),
        generalized_risks=_frozen(np.r_[errors / n, 0.0]),
        thresholds=_frozen(np.r_[sorted_score[last], -np.inf]),
    )


def aurc(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Area under the risk-coverage curve, raw in [0, 1] (tables report x1000). Lower is better.

    Example:
        >>> round(aurc([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1]), 6)  # 11/24
        0.458333
    """
    return risk_coverage_curve(failure_score, is_error).aurc


def eaurc(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Excess AURC: AURC - (r + (1 - r) ln(1 - r)) with r the error rate; 0 when r is 0 or 1.

    Raw, like :func:`aurc`. The optimum is the continuous limit, so on few samples a near
    perfect ranking can score slightly below 0 (as in FD-Shifts).

    Example:
        >>> round(eaurc([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1]), 4)  # 11/24 - (0.5 + 0.5 ln 0.5)
        0.3049
    """
    return risk_coverage_curve(failure_score, is_error).eaurc


def augrc(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Area under the generalized risk-coverage curve (Traub et al. 2024), raw; optimum r^2/2.

    Example:
        >>> augrc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])  # perfect ranking: 0.5**2 / 2
        0.125
    """
    return risk_coverage_curve(failure_score, is_error).augrc


def risk_at_coverage(failure_score: ArrayLike, is_error: ArrayLike, coverage: float) -> float:
    """Selective risk when accepting (about) the ``coverage`` fraction with the lowest scores.

    Tied scores are accepted or rejected together, so the exact coverage may not exist: the
    curve point with the smallest coverage >= ``coverage`` is used (never less coverage
    than asked).

    Example:
        >>> risk_at_coverage([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1], 0.6)  # point at 0.75
        0.3333333333333333
    """
    return risk_coverage_curve(failure_score, is_error).risk_at_coverage(coverage)


def coverage_at_risk(failure_score: ArrayLike, is_error: ArrayLike, risk: float) -> float:
    """Largest coverage on the curve whose selective risk is <= ``risk``; 0.0 if none.

    Example:
        >>> coverage_at_risk([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1], 0.4)
        0.75
    """
    return risk_coverage_curve(failure_score, is_error).coverage_at_risk(risk)
