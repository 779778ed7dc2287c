"""Deferral thresholds chosen on a calibration split: by target coverage or by target risk (SGR).

The decision rule is the same everywhere in metaerr-edge::

    ACCEPT when failure_score <= threshold,  DEFER when failure_score > threshold.

Choosing a threshold (:func:`threshold_for_coverage`, :func:`threshold_for_risk`) needs scipy and
happens off-device; applying it (:func:`decide`) needs numpy only. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from metaerr_edge.errors import ConfigError, DataError, require
from metaerr_edge.contract.spec import ThresholdSpec  # pure python, no torch


# Coverage targets are fractions of n; floor(c * n) must not lose a sample to float error
# (0.29 * 100 == 28.999999999999996).
_FRACTION_EPS = 1e-9
SEARCHES = ("binary", "exhaustive")


@dataclass(frozen=True)
class ThresholdChoice(ThresholdSpec):
    """A calibrated deferral threshold and how it was chosen: defer when ``failure_score > value``.

    It is the contract's :class:`~metaerr_edge.contract.spec.ThresholdSpec` (same fields) plus
    :attr:`feasible`. ``method`` is ``"coverage"`` or ``"risk"``; an ``"-infeasible"`` suffix means
    the target could not be met on the calibration data (see :func:`threshold_for_coverage` and
    :func:`threshold_for_risk`). Undefined numbers (the risk of an empty accepted set) are ``None``,
    never NaN, so the contract stays valid JSON.
    """

    @property
    def feasible(self) -> bool:
        """False when the target could not be met and the threshold defers as much as it can."""
        return not self.method.endswith("-infeasible")

    def to_spec(self) -> ThresholdSpec:
        """The plain :class:`~metaerr_edge.contract.spec.ThresholdSpec` stored in a model's contract."""
        return ThresholdSpec(**asdict(self))


# --------------------------------------------------------------------------- input checks
def _scores(failure_score: Any, name: str = "failure_score", unit_range: bool = True) -> np.ndarray:
    """A non-empty 1-D float64 array of finite scores (in [0, 1] when ``unit_range``)."""
    try:
        arr = np.asarray(failure_score, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numbers (a 1-D array of failure scores), got {type(failure_score).__name__} "
                        f"{str(failure_score)[:40]!r}.") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of shape (n,), got shape {arr.shape}; flatten it first.")
    if arr.size == 0:
        raise DataError(f"{name} is empty; pass the scores of a non-empty calibration split.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(f"{name} has {bad} NaN/inf value(s) of {arr.size}; expected finite scores. "
                        "Check the model outputs for the affected samples.")
    if unit_range and (arr.min() < 0.0 or arr.max() > 1.0):
        raise DataError(f"{name} must lie in [0, 1] (higher = more likely wrong), got range "
                        f"[{arr.min():.6g}, {arr.max():.6g}]; map the score into [0, 1] first.")
    return arr


def _errors(is_error: Any, n: int, name: str = "is_error") -> np.ndarray:
    """A 1-D bool array of length ``n`` from bools or 0/1 numbers."""
    arr = np.asarray(is_error)
    if arr.ndim != 1 or arr.size != n:
        hint = ""
        if arr.ndim == 0 and name == "is_error":
            hint = (f" (a single number {arr.item()!r} came as is_error, the second argument: a target goes by name, "
                    "e.g. coverage=0.9)")
        raise DataError(f"{name} must have shape ({n},) to match failure_score, got shape {arr.shape}; "
                        f"pass one entry per calibration sample{hint}.")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise DataError(f"{name} must hold 0/1 or booleans (1 = the on-device prediction is wrong), "
                            f"got values {np.unique(arr)[:5].tolist()}...")
        arr = arr.astype(bool)
    return arr


def _fraction(value: Any, name: str, low_open: bool = True, high_open: bool = True) -> float:
    """A float in (0, 1), with either end optionally closed; ConfigError otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}.") from None
    lo_ok = x > 0.0 if low_open else x >= 0.0
    hi_ok = x < 1.0 if high_open else x <= 1.0
    if not (lo_ok and hi_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ConfigError(f"{name} must lie in {interval}, got {value!r}.")
    return x


# --------------------------------------------------------------------------- bounds
def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate at confidence ``1 - delta``.

    With ``k`` errors among ``n`` accepted samples, the true rate is <= the bound with probability
    >= 1 - delta. It is ``beta.ppf(1 - delta, k + 1, n - k)``; 1.0 when ``k == n`` (including
    ``n == 0``: no data bounds nothing).

    Example:
        >>> round(clopper_pearson_upper(0, 10, 0.05), 4)  # = 1 - 0.05 ** (1 / 10)
        0.2589
    """
    delta = _fraction(delta, "delta")
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n or not 0 <= k <= n:
        raise ConfigError(f"clopper_pearson_upper needs integers 0 <= k <= n, got k={k!r}, n={n!r}.")
    k, n = int(k), int(n)
    if k == n:
        return 1.0
    stats = require("scipy.stats", "metaerr-edge[train]", "the Clopper-Pearson bound")
    return float(stats.beta.ppf(1.0 - delta, k + 1, n - k))


def _cp_upper_many(k: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """Vectorised :func:`clopper_pearson_upper` for already validated counts."""
    stats = require("scipy.stats", "metaerr-edge[train]", "the Clopper-Pearson bound")
    out = np.ones(k.shape, dtype=np.float64)
    inner = k < n
    out[inner] = stats.beta.ppf(1.0 - delta, k[inner] + 1, n[inner] - k[inner])
    return out


# --------------------------------------------------------------------------- thresholds
def _groups(scores: np.ndarray, errors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Distinct scores ascending, accepted count and accepted errors at each as threshold."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    values, first = np.unique(sorted_scores, return_index=True)
    last = np.append(first[1:], scores.size) - 1  # index of the last sample of each tie group
    accepted = last + 1
    accepted_errors = None if errors is None else np.cumsum(errors[order])[last]
    return values, accepted, accepted_errors


def _risk(errors_accepted: int, accepted: int) -> float | None:
    return None if accepted == 0 else errors_accepted / accepted


def threshold_for_coverage(failure_score: Any, is_error: Any = None, coverage: float = 0.9) -> ThresholdChoice:
    """The threshold that accepts the target fraction of the calibration data, never more.

    The threshold is a calibration score itself (the ``(1 - coverage)`` quantile from the top):
    all samples tied at it are accepted together, so the achieved coverage is the largest one
    reachable at a tie boundary that does not exceed ``coverage``. If even the lowest tie group
    alone exceeds the target, the threshold is 0.0, which accepts nothing when every score is > 0;
    when scores of exactly 0 exist they cannot be deferred by any threshold in [0, 1], and the
    choice is flagged ``method="coverage-infeasible"`` with the coverage actually achieved.

    Args:
        failure_score: calibration scores in [0, 1], shape (n,).
        is_error: optional 0/1 per sample (1 = on-device prediction wrong) to report achieved risk.
        coverage: target accepted fraction in (0, 1].

    Example:
        >>> threshold_for_coverage([0.1, 0.2, 0.2, 0.9], coverage=0.5).value
        0.1
    """
    scores = _scores(failure_score)
    target = _fraction(coverage, "coverage", high_open=False)
    errors = None if is_error is None else _errors(is_error, scores.size)
    values, accepted, accepted_errors = _groups(scores, errors)
    n = scores.size
    allowed = math.floor(target * n + _FRACTION_EPS)
    idx = int(np.searchsorted(accepted, allowed, side="right")) - 1
    method = "coverage"
    if idx >= 0:
        value, n_acc = float(values[idx]), int(accepted[idx])
        n_err = None if accepted_errors is None else int(accepted_errors[idx])
    else:  # even the lowest tie group is too large: defer as much as [0, 1] allows
        value = 0.0
        n_acc = int(np.count_nonzero(scores <= 0.0))
        n_err = None if errors is None else int(np.count_nonzero(errors[scores <= 0.0]))
        if n_acc > 0:
            method = "coverage-infeasible"
    return ThresholdChoice(
        value=value,
        method=method,
        target_coverage=target,
        calibration_n=n,
        achieved_coverage=n_acc / n,
        achieved_risk=None if n_err is None else _risk(n_err, n_acc),
    )


def threshold_for_risk(
    failure_score: Any,
    is_error: Any,
    target_risk: float,
    delta: float = 0.05,
    search: str = "binary",
) -> ThresholdChoice:
    """SGR (Geifman & El-Yaniv 2017): the largest coverage whose risk is <= ``target_risk`` w.p. 1 - delta.

    Each candidate threshold is a distinct calibration score t (accept ``score <= t``); its
    selective risk (errors among accepted / accepted) gets a one-sided Clopper-Pearson upper bound
    at confidence ``1 - delta / k``, where k is the number of candidates tried (union bound), and a
    candidate passes when that bound is <= ``target_risk``. The pick is the passing candidate with
    the largest coverage; then, with probability >= 1 - delta over the calibration draw, the true
    selective risk at the returned threshold is <= ``risk_upper_bound`` <= ``target_risk``.

    ``search="binary"`` (default) is the paper's Algorithm 1: a binary search over the d distinct
    scores, which tries only k = ceil(log2(d + 1)) thresholds (the paper's ceil(log2 m), plus one
    probe when d is a power of two so that the search is exact), hence the much tighter union
    bound delta / k. It assumes the bound grows with coverage, as it does when the score ranks
    errors and the accepted sets are not tiny (at very low coverage few samples inflate the bound,
    so on small calibration sets the search can miss a passing threshold; the guarantee holds
    either way). ``search="exhaustive"`` tries all d distinct scores at delta / d: no monotonicity
    assumed, but a looser bound. Ties in the score are never split.

    If no candidate passes, the result defers as much as a threshold in [0, 1] can: value 0.0,
    ``method="risk-infeasible"`` (``feasible`` is False), with the calibration coverage it still
    has (scores of exactly 0 cannot be deferred) and ``risk_upper_bound`` of that accepted set
    (1.0 when it is empty). Check ``choice.feasible`` before deploying.

    Args:
        failure_score: calibration scores in [0, 1], shape (n,); the calibration split must be one
            that neither the base nor the meta model trained on.
        is_error: 0/1 per sample, 1 = the on-device prediction is wrong.
        target_risk: r*, in (0, 1).
        delta: allowed failure probability of the guarantee, in (0, 1).
        search: "binary" or "exhaustive".

    Example:
        >>> choice = threshold_for_risk(scores, is_error, target_risk=0.02, delta=0.05)
        >>> choice.feasible, choice.value, choice.risk_upper_bound
    """
    scores = _scores(failure_score)
    errors = _errors(is_error, scores.size)
    r_star = _fraction(target_risk, "target_risk")
    delta = _fraction(delta, "delta")
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {list(SEARCHES)}, got {search!r}.")
    values, accepted, accepted_errors = _groups(scores, errors)
    d, n = values.size, scores.size
    k = max(1, math.ceil(math.log2(d + 1))) if search == "binary" else d
    level = delta / k

    def bound(i: int) -> float:
        return clopper_pearson_upper(int(accepted_errors[i]), int(accepted[i]), level)

    best, best_bound = -1, None
    if search == "binary":
        # lo: largest index known to pass (-1 = none), hi: smallest known to fail (d = none).
        # Each probe at most halves the unresolved candidates; d < 2**k leaves none.
        lo, hi = -1, d
        for _ in range(k):
            if hi - lo <= 1:
                break
            mid = (lo + hi) // 2
            b = bound(mid)
            if b <= r_star:
                lo, best, best_bound = mid, mid, b
            else:
                hi = mid
    else:
        bounds = _cp_upper_many(accepted_errors, accepted, level)
        passing = np.flatnonzero(bounds <= r_star)
        if passing.size:
            best = int(passing[-1])
            best_bound = float(bounds[best])

    common = dict(target_risk=r_star, delta=delta, calibration_n=n)
    if best >= 0:
        n_acc, n_err = int(accepted[best]), int(accepted_errors[best])
        return ThresholdChoice(value=float(values[best]), method="risk", achieved_coverage=n_acc / n,
                               achieved_risk=_risk(n_err, n_acc), risk_upper_bound=best_bound, **common)
    at_zero = scores <= 0.0
    n_acc, n_err = int(np.count_nonzero(at_zero)), int(np.count_nonzero(errors[at_zero]))
    return ThresholdChoice(value=0.0, method="risk-infeasible", achieved_coverage=n_acc / n,
                           achieved_risk=_risk(n_err, n_acc),
                           risk_upper_bound=clopper_pearson_upper(n_err, n_acc, level), **common)


def decide(failure_score: Any, threshold: "float | ThresholdChoice | ThresholdSpec") -> np.ndarray:
    """Defer flags: True where ``failure_score > threshold`` (DEFER), False where accepted.

    ``threshold`` is a number or anything with a ``value`` (a :class:`ThresholdChoice`, the
    contract's ``ThresholdSpec``). NaN scores raise :class:`DataError` rather than being silently
    accepted (``NaN > t`` is False). Works on any shape; numpy only.

    Example:
        >>> decide([0.1, 0.5, 0.9], 0.5).tolist()
        [False, False, True]
    """
    t = getattr(threshold, "value", threshold)
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a number or a ThresholdChoice/ThresholdSpec, got {threshold!r}.") from None
    if math.isnan(t):
        raise ConfigError("threshold is NaN; pass a threshold in [0, 1] chosen by threshold_for_coverage/_risk.")
    scores = np.asarray(failure_score, dtype=np.float64)
    if np.isnan(scores).any():
        raise DataError(f"failure_score has {int(np.isnan(scores).sum())} NaN value(s); expected numbers. "
                        "Check the model outputs for the affected samples.")
    return scores > t
