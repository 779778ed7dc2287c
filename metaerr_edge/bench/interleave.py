"""Side-by-side timing: several calls measured in short round-robin slices, pooled per call.

Drift on a shared machine (another job, thermal throttling, a frequency change) then hits every
call alike, so their ratios stay meaningful even when the absolute times move.

Example:
    >>> cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.01, min_iterations=4)
    >>> stats = measure_interleaved([("a", lambda: None), ("b", lambda: None)], cfg, 2, batch_size=1)
    >>> sorted(stats), stats["a"].iterations >= 4
    (['a', 'b'], True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from metaerr_edge.bench.timer import Kind, LatencyStats, TimingConfig, _check_kind, measure, measure_device
from metaerr_edge.errors import ConfigError

#: Warm-up of every round after the first: the calls are warm already, this only re-touches caches.
REWARM_S = 0.05


def round_config(config: TimingConfig, rounds: int, index: int) -> TimingConfig:
    """The share of ``config`` that round ``index`` of ``rounds`` gets; later rounds re-warm briefly.

    Example:
        >>> round_config(TimingConfig(0.2, 3.0, 10, 100), 4, 1)
        TimingConfig(warmup_s=0.05, min_duration_s=0.75, min_iterations=3, max_iterations=25)
    """
    warm = config.warmup_s if index == 0 else min(config.warmup_s, REWARM_S)
    min_iters = math.ceil(config.min_iterations / rounds)
    cap = None if config.max_iterations is None else max(min_iters, math.ceil(config.max_iterations / rounds))
    return TimingConfig(warm, config.min_duration_s / rounds, min_iters, cap)


def measure_interleaved(
    calls: Sequence[tuple[str, Callable[[], Any]]],
    config: TimingConfig,
    rounds: int,
    *,
    batch_size: int,
    kind: Kind = "host",
    on_step: Callable[[str], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time several calls side by side: ``rounds`` short measurements each, round-robin, order rotated.

    Each call's samples from all rounds are pooled into one :class:`LatencyStats`, so it meets
    ``config``'s duration and count in total. ``kind="device"`` uses CUDA events
    (:func:`measure_device`); ``on_step(name)`` is called after each slice (a progress bar).

    Raises:
        ConfigError: ``rounds`` is not an integer >= 1, or ``kind`` is neither host nor device.

    Example:
        >>> cfg = TimingConfig(0.0, 0.01, 4)
        >>> stats = measure_interleaved([("a", lambda: None), ("b", lambda: None)], cfg, 2, batch_size=1)
        >>> sorted(stats), stats["a"].iterations >= 4
        (['a', 'b'], True)
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    _check_kind(kind)
    timer = measure_device if kind == "device" else measure
    samples: dict[str, list[np.ndarray]] = {name: [] for name, _ in calls}
    totals = dict.fromkeys(samples, 0.0)
    for r in range(rounds):
        cfg = round_config(config, rounds, r)
        shift = r % len(calls) if calls else 0
        for name, fn in [*calls[shift:], *calls[:shift]]:
            stats = timer(fn, cfg, batch_size=batch_size)
            samples[name].append(stats.samples_ms)
            totals[name] += stats.total_s
            if on_step is not None:
                on_step(name)
    return {
        name: LatencyStats.from_samples(np.concatenate(parts), batch_size, kind,
                                        totals[name] if kind == "host" else None)
        for name, parts in samples.items()
    }
