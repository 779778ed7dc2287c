"""Percentile bootstrap confidence intervals for any (failure_score, is_error) -> float metric."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import numpy.typing as npt

from metaerr_edge.errors import ConfigError
from metaerr_edge.metrics.detection import ArrayLike, auroc, validate_inputs

Metric = Callable[[npt.NDArray[np.float64], npt.NDArray[np.int64]], float]

# Resampled indices are drawn this many elements at a time (bounds memory: ~8 bytes each).
_CHUNK_ELEMENTS = 4_000_000


class BootstrapCI(NamedTuple):
    """A point estimate on the full data and a (1 - alpha) percentile interval."""

    point: float
    low: float
    high: float


def _auroc_batch(
    score: npt.NDArray[np.float64], err: npt.NDArray[np.int64], idx: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """AUROC of many resamples at once (Mann-Whitney with half credit for ties).

    ``idx`` has one resample per row. Scores are grouped by distinct value once; each row's
    weighted error / correct counts per group then give sum over errors of
    (#correct with a lower score + half the #correct tied).
    """
    _, group = np.unique(score, return_inverse=True)
    n_groups = int(group.max()) + 1
    rows = idx.shape[0]
    flat = (np.arange(rows)[:, None] * n_groups + group[idx]).ravel()
    is_err = err[idx].ravel().astype(np.float64)
    n_err = np.bincount(flat, weights=is_err, minlength=rows * n_groups).reshape(rows, -1)
    n_all = np.bincount(flat, minlength=rows * n_groups).reshape(rows, -1)
    n_ok = n_all - n_err
    ok_below = np.cumsum(n_ok, axis=1) - n_ok
    pairs = np.sum(n_err * (ok_below + 0.5 * n_ok), axis=1)
    total_err = n_err.sum(axis=1)
    total_ok = n_ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pairs / (total_err * total_ok)
    out[(total_err == 0) | (total_ok == 0)] = np.nan
    return out


def bootstrap_ci(
    metric_fn: Metric,
    failure_score: ArrayLike,
    is_error: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap CI, resampling (score, label) pairs with replacement.

    Replicates where the metric is NaN (e.g. a resample with one class) are skipped; if all
    are NaN the bounds are NaN. :func:`~metaerr_edge.metrics.auroc` runs vectorized over
    resamples; any other metric is called once per resample.

    Args:
        metric_fn: ``f(failure_score, is_error) -> float``, e.g. ``aurc``.
        failure_score: 1-D scores, higher = more likely wrong.
        is_error: 1-D 0/1 labels, 1 = base model wrong.
        n_boot: number of resamples.
        alpha: the interval covers 1 - alpha.
        seed: seed of the ``numpy.random.Generator``; same seed, same interval.

    Returns:
        ``(point, low, high)`` as a :class:`BootstrapCI`.

    Example:
        >>> from metaerr_edge.metrics import aurc
        >>> point, low, high = bootstrap_ci(aurc, [0.1, 0.4, 0.3, 0.9] * 25, [0, 0, 1, 1] * 25)
        >>> low <= point <= high
        True
    """
    if int(n_boot) != n_boot or n_boot < 1:
        raise ConfigError(f"Expected n_boot as a positive integer; got {n_boot!r}. Try 1000.")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"Expected alpha in (0, 1); got {alpha!r}. Use 0.05 for a 95% CI.")
    score, err = validate_inputs(failure_score, is_error)
    point = float(metric_fn(score, err))
    n = score.size
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    replicates = []
    for start in range(0, int(n_boot), rows_per_chunk):
        idx = rng.integers(0, n, size=(min(rows_per_chunk, int(n_boot) - start), n))
        if metric_fn is auroc:
            replicates.append(_auroc_batch(score, err, idx))
        else:
            replicates.append(np.array([metric_fn(score[i], err[i]) for i in idx], dtype=float))
    values = np.concatenate(replicates)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return BootstrapCI(point, math.nan, math.nan)
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(point, float(low), float(high))
