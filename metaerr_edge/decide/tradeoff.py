"""The latency-aware deferral trade-off: sweep thresholds, report accuracy and latency, pick a point.

Every input passes through the on-device model (its latency is always paid: the failure score
comes from it); a deferred input additionally pays the fallback (a bigger model, a server, a
person). System accuracy counts accepted on-device predictions that are right plus deferred
inputs the fallback gets right. Latency distributions are assumed independent of the score and
of each other, so the end-to-end latency at deferral rate p is the mixture
``(1 - p) * D + p * (D + F)`` of the device (D) and fallback (F) latency distributions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaerr_edge.decide.thresholds import _FRACTION_EPS, _errors, _groups, _scores
from metaerr_edge.errors import ConfigError, DataError, require
from metaerr_edge._fileio import atomic_write_bytes

P99 = 0.99
DEFAULT_LEVELS = 50
# Sums D + F are enumerated exactly up to this many; beyond, each side is summarised by
# _SUMMARY evenly spaced quantiles (deterministic, error below one summary step).
_EXACT_PAIRS = 1_000_000
_SUMMARY = 1000
_FINE_COVERAGES = np.array([0.99, 0.995, 0.999])
_TIE = 1e-12  # accuracy / latency differences below this are ties in recommend()

_COLUMNS = ("threshold", "coverage", "deferral_rate", "system_accuracy", "selective_risk",
            "mean_latency_ms", "p99_latency_ms", "meets_deadline")


@dataclass(frozen=True, eq=False)
class TradeoffTable:
    """One row per threshold, ordered from always-device (deferral 0) to always-fallback.

    Columns (read-only numpy arrays of equal length): ``threshold`` (accept ``score <= t``;
    ``-inf`` is the defer-everything row, which no threshold in [0, 1] can express when some
    scores are 0, and which needs no device model anyway), ``coverage``, ``deferral_rate``,
    ``system_accuracy`` (expected), ``selective_risk`` (errors among accepted; NaN when none is
    accepted), ``mean_latency_ms``, ``p99_latency_ms``, ``meets_deadline`` (all True without a
    deadline). ``n`` is the number of calibration samples.
    """

    threshold: np.ndarray
    coverage: np.ndarray
    deferral_rate: np.ndarray
    system_accuracy: np.ndarray
    selective_risk: np.ndarray
    mean_latency_ms: np.ndarray
    p99_latency_ms: np.ndarray
    meets_deadline: np.ndarray
    deadline_ms: float | None = None
    n: int = 0

    def __post_init__(self) -> None:
        for name in _COLUMNS:
            getattr(self, name).setflags(write=False)

    def __len__(self) -> int:
        return int(self.threshold.size)

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts of plain Python values, with the row ``index``."""
        return [self._row(i) for i in range(len(self))]

    def _row(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {"index": i}
        for name in _COLUMNS:
            value = getattr(self, name)[i]
            row[name] = bool(value) if name == "meets_deadline" else float(value)
        return row

    def to_markdown(self, max_rows: int | None = None) -> str:
        """A Markdown table of every row; with ``max_rows``, evenly spaced ones (ends kept) and a note."""
        if max_rows is None:
            max_rows = len(self)
        if max_rows < 2:
            raise ConfigError(f"max_rows must be >= 2 (both ends are always shown), got {max_rows}.")
        keep = np.unique(np.linspace(0, len(self) - 1, min(max_rows, len(self))).round().astype(int))
        head = ("threshold", "coverage", "deferral", "sys. acc.", "sel. risk", "mean ms", "p99 ms", "deadline")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i in keep:
            r = self._row(int(i))
            cells = [f"{r['threshold']:.4f}" if math.isfinite(r["threshold"]) else "defer all",
                     f"{r['coverage']:.3f}", f"{r['deferral_rate']:.3f}", f"{r['system_accuracy']:.4f}",
                     "-" if math.isnan(r["selective_risk"]) else f"{r['selective_risk']:.4f}",
                     f"{r['mean_latency_ms']:.3f}", f"{r['p99_latency_ms']:.3f}",
                     "-" if self.deadline_ms is None else ("ok" if r["meets_deadline"] else "miss")]
            lines.append("| " + " | ".join(cells) + " |")
        if keep.size < len(self):
            lines.append(f"\n({keep.size} of {len(self)} rows shown)")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike[str], deadline_ms: float | None = None,
             min_accuracy: float | None = None, title: str | None = None) -> str:
        """Plot accuracy and p99 latency against deferral rate; write ``path`` atomically.

        Marks always-device (deferral 0), always-fallback (deferral 1), the deadline, the accuracy
        target and the :func:`recommend`-ed point (a hollow star, so a point under it stays in
        view; omitted when no row is feasible), under ``title``. The format follows the file
        suffix (.png, .pdf, .svg). Returns the path written.
        """
        from metaerr_edge.plots.style import figure_format

        path = os.fspath(path)
        fig = self._figure(deadline_ms, min_accuracy, title)

        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a handle: savefig would otherwise append the format to the name
                fig.savefig(fh, format=figure_format(path), dpi=120)

        atomic_write_bytes(path, save)
        return path

    def _figure(self, deadline_ms: float | None, min_accuracy: float | None, title: str | None) -> Any:
        """The figure :meth:`plot` writes."""
        require("matplotlib", "metaerr-edge[train]", "plotting the deferral trade-off")
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
        from matplotlib.figure import Figure

        from metaerr_edge.plots.style import legend_outside

        deadline = self.deadline_ms if deadline_ms is None else deadline_ms
        try:
            best = recommend(self, deadline_ms=deadline, min_accuracy=min_accuracy)
        except ConfigError:
            best = None
        order = np.argsort(self.deferral_rate, kind="stable")
        x = self.deferral_rate[order]
        fig = Figure(figsize=(7.6, 6.0), layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(title or f"Deferral trade-off over {len(self)} thresholds" + (f", {self.n} calibration samples" if self.n else ""),
                     fontsize=10)
        ax_acc, ax_lat = fig.subplots(2, 1, sharex=True)
        ax_acc.plot(x, self.system_accuracy[order], "-", color="C0", label="system accuracy")
        ax_lat.plot(x, self.p99_latency_ms[order], "-", color="C1", label="p99 latency")
        ax_lat.plot(x, self.mean_latency_ms[order], "--", color="C1", alpha=0.6, label="mean latency")
        for idx, label, marker in ((self._at_deferral(0.0), "always device", "s"),
                                   (self._at_deferral(1.0), "always fallback", "D")):
            if idx is not None:
                ax_acc.plot(self.deferral_rate[idx], self.system_accuracy[idx], marker, color="0.3", label=label, zorder=3)
                ax_lat.plot(self.deferral_rate[idx], self.p99_latency_ms[idx], marker, color="0.3", zorder=3)
        star = {"marker": "*", "ms": 16, "mfc": "none", "mec": "C3", "mew": 1.6, "ls": "none", "zorder": 4}
        if best is not None:
            ax_acc.plot(best["deferral_rate"], best["system_accuracy"], label=f"recommended (deferral {best['deferral_rate']:.3f})",
                        **star)
            ax_lat.plot(best["deferral_rate"], best["p99_latency_ms"], **star)
        if min_accuracy is not None:
            ax_acc.axhline(min_accuracy, color="C2", lw=0.9, ls=":", label=f"accuracy target {min_accuracy:g}")
        if deadline is not None:
            ax_lat.axhline(deadline, color="C3", lw=0.8, ls=":", label=f"deadline {deadline:g} ms")
        ax_acc.set_ylabel("system accuracy")
        ax_lat.set_ylabel("latency (ms)")
        ax_lat.set_xlabel("deferral rate")
        ax_acc.set_title("system accuracy (on-device where kept, the fallback's where deferred)", fontsize=8)
        ax_lat.set_title("latency per input (p99 solid, mean dashed)", fontsize=8)
        for ax in (ax_acc, ax_lat):
            legend_outside(ax)  # never over the curves
            ax.grid(alpha=0.3)
        return fig

    def _at_deferral(self, rate: float) -> int | None:
        hits = np.flatnonzero(np.abs(self.deferral_rate - rate) < _TIE)
        return int(hits[0]) if hits.size else None


# --------------------------------------------------------------------------- inputs
def _latencies(value: Any, name: str) -> np.ndarray:
    """Sorted 1-D array of latency samples (a scalar becomes one sample)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise DataError(f"{name} must be a number or a 1-D array of measured latencies, got shape {arr.shape}.")
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise DataError(f"{name} is empty; pass a latency in ms or an array of measured per-call latencies.")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{name} must be finite and >= 0 ms; {bad} of its {arr.size} value(s) are NaN or infinite.")
    if arr.min() < 0:
        raise DataError(f"{name} must be >= 0 ms, got range [{arr.min()}, {arr.max()}].")
    return np.sort(arr)


def _summary(sorted_samples: np.ndarray) -> np.ndarray:
    if sorted_samples.size <= _SUMMARY:
        return sorted_samples
    positions = (np.arange(_SUMMARY) + 0.5) / _SUMMARY
    return np.quantile(sorted_samples, positions, method="inverted_cdf")


class _Mixture:
    """Quantiles of ``(1 - p) * D + p * (D + F)`` for empirical D and F, for any p."""

    def __init__(self, device: np.ndarray, fallback: np.ndarray) -> None:
        if device.size * fallback.size > _EXACT_PAIRS:
            device, fallback = _summary(device), _summary(fallback)
        sums = (device[:, None] + fallback[None, :]).ravel()
        values = np.concatenate([device, sums])
        order = np.argsort(values, kind="stable")
        self.values = values[order]
        from_device = order < device.size
        self.cum_device = np.cumsum(from_device) / device.size  # empirical CDF of D at each value
        self.cum_sums = np.cumsum(~from_device) / sums.size  # and of D + F

    def quantile(self, p: float, q: float) -> float:
        """Smallest value whose mixture CDF reaches q (the inverted-CDF quantile)."""
        cdf = (1.0 - p) * self.cum_device + p * self.cum_sums
        i = int(np.searchsorted(cdf, q - _TIE, side="left"))
        return float(self.values[min(i, self.values.size - 1)])


def _default_thresholds(scores: np.ndarray, levels: int) -> np.ndarray:
    """Calibration scores reaching coverage i / levels (never more), plus 1.0 and -inf.

    Coverages 0.99, 0.995 and 0.999 are added: a p99 deadline is decided by the deferral rate
    near 1 %, which an even grid of 50 levels would step over.
    """
    values, accepted, _ = _groups(scores, None)
    targets = np.concatenate([np.arange(1, levels + 1) / levels, _FINE_COVERAGES])
    allowed = np.floor(targets * scores.size + _FRACTION_EPS)
    idx = np.searchsorted(accepted, allowed, side="right") - 1
    return np.concatenate([values[idx[idx >= 0]], [1.0, -np.inf]])


def sweep_tradeoff(
    failure_score: Any,
    is_error: Any,
    device_latency_ms: Any,
    fallback_latency_ms: Any,
    fallback_accuracy: float | None = None,
    deadline_ms: float | None = None,
    thresholds: int | Any | None = None,
    *,
    fallback_correct: Any = None,
) -> TradeoffTable:
    """Sweep deferral thresholds and report system accuracy, deferral rate and latency at each.

    For threshold t: accept ``score <= t`` on the device, defer the rest to the fallback.
    System accuracy = (accepted and correct on device + expected fallback-correct deferred) / n.
    Mean latency = mean(D) + deferral_rate * mean(F). p99 latency is the 0.99 inverted-CDF
    quantile of the mixture ``(1 - p) * D + p * (D + F)`` (exact; above 10^6 latency pairs it
    uses 1000-quantile summaries of D and F). Rows with identical accepted sets are merged
    (the largest threshold is kept).

    Args:
        failure_score: calibration scores in [0, 1], shape (n,).
        is_error: 0/1 per sample, 1 = on-device prediction wrong.
        device_latency_ms: on-device latency per input, a number or measured per-call samples.
        fallback_latency_ms: extra latency of a deferral, a number or measured samples.
        fallback_accuracy: the fallback's accuracy in [0, 1]; or instead pass
        fallback_correct: 0/1 per sample, whether a real fallback model gets that sample right.
        deadline_ms: p99 latency budget; fills ``meets_deadline``.
        thresholds: None (50 coverage levels), an int (that many levels) or explicit thresholds;
            coverage levels also get 0.99, 0.995, 0.999 (where a p99 deadline bites) and the
            always-device (1.0) and always-fallback (-inf) rows.

    Example:
        >>> table = sweep_tradeoff(scores, is_error, 4.0, 40.0, fallback_accuracy=0.95, deadline_ms=30)
        >>> recommend(table)["threshold"]
    """
    scores = _scores(failure_score)
    errors = _errors(is_error, scores.size)
    n = scores.size
    device, fallback = _latencies(device_latency_ms, "device_latency_ms"), _latencies(fallback_latency_ms, "fallback_latency_ms")
    if (fallback_accuracy is None) == (fallback_correct is None):
        raise ConfigError("pass exactly one of fallback_accuracy (a number in [0, 1]) and fallback_correct "
                          f"(0/1 per sample); got fallback_accuracy={fallback_accuracy!r} and "
                          f"fallback_correct {'given' if fallback_correct is not None else 'None'}.")
    if fallback_correct is not None:
        fb_correct = _errors(fallback_correct, n, "fallback_correct").astype(np.float64)
    else:
        try:
            acc = float(fallback_accuracy)
        except (TypeError, ValueError):
            raise ConfigError(f"fallback_accuracy must be a number in [0, 1], got {fallback_accuracy!r}.") from None
        if not 0.0 <= acc <= 1.0:
            raise ConfigError(f"fallback_accuracy must lie in [0, 1], got {fallback_accuracy!r}.")
        fb_correct = None
    deadline_ms = _deadline(deadline_ms)
    grid = _threshold_grid(scores, thresholds)

    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Prefix sums over samples sorted by score: accepting score <= t accepts a prefix.
    zero = np.zeros(1)
    cum_err = np.concatenate([zero, np.cumsum(errors[order])])
    cum_fb = None if fb_correct is None else np.concatenate([zero, np.cumsum(fb_correct[order])])
    n_acc = np.searchsorted(sorted_scores, grid, side="right")
    # Thresholds with the same accepted set (same count, sets are nested) merge; the largest stays.
    _, keep = np.unique(n_acc, return_index=True)
    keep = np.sort(keep)
    grid, n_acc = grid[keep], n_acc[keep]

    coverage = n_acc / n
    deferral = (n - n_acc) / n
    accepted_err = cum_err[n_acc]
    fallback_ok = (n - n_acc) * acc if cum_fb is None else cum_fb[-1] - cum_fb[n_acc]
    system_accuracy = (n_acc - accepted_err + fallback_ok) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        selective_risk = np.where(n_acc > 0, accepted_err / np.maximum(n_acc, 1), np.nan)
    mean_latency = device.mean() + deferral * fallback.mean()
    mixture = _Mixture(device, fallback)
    p99 = np.array([mixture.quantile(p, P99) for p in deferral])
    meets = np.ones(grid.size, bool) if deadline_ms is None else p99 <= deadline_ms
    return TradeoffTable(threshold=grid, coverage=coverage, deferral_rate=deferral,
                         system_accuracy=system_accuracy, selective_risk=selective_risk,
                         mean_latency_ms=mean_latency, p99_latency_ms=p99, meets_deadline=meets,
                         deadline_ms=deadline_ms, n=n)


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not (x > 0 and math.isfinite(x)):
        raise ConfigError(f"deadline_ms must be a positive number of ms or None, got {value!r}.")
    return x


def _threshold_grid(scores: np.ndarray, thresholds: Any) -> np.ndarray:
    if thresholds is None:
        return np.sort(_default_thresholds(scores, DEFAULT_LEVELS))[::-1]
    if isinstance(thresholds, (int, np.integer)) and not isinstance(thresholds, bool):
        if thresholds < 1:
            raise ConfigError(f"thresholds as an int is a number of coverage levels >= 1, got {thresholds}.")
        return np.sort(_default_thresholds(scores, int(thresholds)))[::-1]
    grid = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if grid.size == 0 or np.isnan(grid).any():
        raise ConfigError("thresholds must be None, an int number of coverage levels, or a non-empty "
                          f"array of numbers without NaN; got {thresholds!r}.")
    return np.sort(grid)[::-1]


def recommend(table: TradeoffTable, deadline_ms: float | None = None,
              min_accuracy: float | None = None) -> dict[str, Any]:
    """The operating point to deploy, as a row dict of ``table``.

    Feasible rows have p99 latency <= ``deadline_ms`` (default: the table's deadline; no latency
    constraint when both are None) and, if given, system accuracy >= ``min_accuracy``.
    Without ``min_accuracy``: the feasible row with the highest system accuracy, ties broken
    by lower mean latency (deferring costs time, so among equally accurate points defer least).
    With ``min_accuracy``: the cheapest row good enough, i.e. the feasible row with the lowest
    mean latency, ties broken by higher accuracy. Raises :class:`ConfigError` when no row is
    feasible, naming the best that is achievable.

    Example:
        >>> row = recommend(table, deadline_ms=25.0)
        >>> row["threshold"], row["system_accuracy"], row["p99_latency_ms"]
    """
    if not isinstance(table, TradeoffTable) or len(table) == 0:
        raise ConfigError(f"recommend needs a non-empty TradeoffTable from sweep_tradeoff, got {type(table).__name__}.")
    deadline = table.deadline_ms if deadline_ms is None else _deadline(deadline_ms)
    ok = np.ones(len(table), bool)
    if deadline is not None:
        ok &= table.p99_latency_ms <= deadline
        if not ok.any():
            i = int(np.argmin(table.p99_latency_ms))
            raise ConfigError(f"no operating point has p99 latency <= {deadline:g} ms; the lowest is "
                              f"{table.p99_latency_ms[i]:.3f} ms (deferral rate {table.deferral_rate[i]:.3f}). "
                              "Relax the deadline or use a faster device model / fallback.")
    if min_accuracy is not None:
        try:
            min_accuracy = float(min_accuracy)
        except (TypeError, ValueError):
            min_accuracy = math.nan
        if not 0.0 <= min_accuracy <= 1.0:  # NaN included
            raise ConfigError(f"min_accuracy must be a number in [0, 1] (a system accuracy), got {min_accuracy!r}.")
        ok &= table.system_accuracy >= min_accuracy - _TIE
        if not ok.any():
            best = float(table.system_accuracy[table.p99_latency_ms <= deadline].max()
                         if deadline is not None else table.system_accuracy.max())
            raise ConfigError(f"no operating point within the deadline reaches system accuracy "
                              f">= {min_accuracy}; the best is {best:.4f}. Lower min_accuracy or relax the deadline.")
    idx = np.flatnonzero(ok)
    acc, lat = table.system_accuracy[idx], table.mean_latency_ms[idx]
    if min_accuracy is None:
        cand = idx[acc >= acc.max() - _TIE]
        best = cand[np.argmin(table.mean_latency_ms[cand])]
    else:
        cand = idx[lat <= lat.min() + _TIE]
        best = cand[np.argmax(table.system_accuracy[cand])]
    row = table._row(int(best))
    if deadline is not None:
        row["meets_deadline"] = bool(row["p99_latency_ms"] <= deadline)
    return row


__all__ = ["TradeoffTable", "recommend", "sweep_tradeoff"]
