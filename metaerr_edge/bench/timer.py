"""Latency measurement with trtexec's conventions: warm up by time, measure by time and count.

Host latency is wall-clock time around one call (``fn()`` then ``sync()``), taken with
:func:`time.perf_counter_ns`. Device time is GPU compute time between two CUDA events recorded
on the stream the call runs on. Both come back as a :class:`LatencyStats`. Only numpy is needed
here; torch (device timing) and tqdm (progress bar) are imported lazily, when asked for.

Example:
    >>> import numpy as np
    >>> x = np.ones((64, 64), dtype=np.float32)
    >>> cfg = TimingConfig(warmup_s=0.01, min_duration_s=0.05, min_iterations=10)
    >>> stats = measure(lambda: x @ x, cfg)
    >>> stats.iterations >= 10 and stats.total_s >= 0.05
    True
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

import numpy as np

from metaerr_edge.bench.env import environment  # noqa: F401  (kept importable from here)
from metaerr_edge.errors import BackendUnavailable, ConfigError

Kind = Literal["host", "device"]
ProgressCallback = Callable[[int, float], None]

#: Percentiles reported by :class:`LatencyStats`, in this order (plus min, mean, max, std).
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)

# Distributions whose versions :func:`environment` records (read from metadata, never imported).
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_kind(kind: Any) -> None:
    if kind not in ("host", "device"):
        raise ConfigError(f"Latency kind must be 'host' or 'device', got {kind!r}.")


def _check_batch(batch_size: Any) -> None:
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}.")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and measure (trtexec's ``--warmUp``, ``--duration``, ``--iterations``).

    Measurement runs until BOTH ``min_duration_s`` has elapsed and ``min_iterations`` calls were
    timed, and stops early at ``max_iterations`` when given (a hard cap, for slow models).

    Example:
        >>> TimingConfig(warmup_s=0.5, min_duration_s=5.0, min_iterations=100).min_iterations
        100
    """

    warmup_s: float = 0.2
    min_duration_s: float = 3.0
    min_iterations: int = 10
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        for name in ("warmup_s", "min_duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"TimingConfig.{name} must be a number of seconds, got {value!r}."
                )
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"TimingConfig.{name} must be finite and >= 0 seconds, got {value!r}."
                )
        if not _is_int(self.min_iterations) or self.min_iterations < 1:
            raise ConfigError(
                f"TimingConfig.min_iterations must be an integer >= 1, got {self.min_iterations!r}."
            )
        if self.max_iterations is not None:
            if not _is_int(self.max_iterations) or self.max_iterations < 1:
                raise ConfigError(
                    "TimingConfig.max_iterations must be None or an integer >= 1, "
                    f"got {self.max_iterations!r}."
                )
            if self.max_iterations < self.min_iterations:
                raise ConfigError(
                    f"TimingConfig.max_iterations ({self.max_iterations}) is below min_iterations "
                    f"({self.min_iterations}); raise max_iterations or lower min_iterations."
                )


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds.

    Percentiles use ``numpy.percentile(..., method="linear")`` (linear interpolation between
    the two closest ranks, numpy's default); trtexec picks the nearest rank instead, so p99 of
    few samples may differ slightly. ``std_ms`` is the population standard deviation (ddof=0).
    ``throughput`` is ``batch_size * iterations / total_s`` in images per second; ``total_s`` is
    the wall time of the measured loop for ``kind="host"`` and the summed GPU time for
    ``kind="device"`` (so device throughput is the GPU-bound ceiling).
    ``samples_ms`` (read-only float64 array, possibly empty after loading a report saved without
    samples) is excluded from equality and repr.

    Example:
        >>> s = LatencyStats.from_samples(np.arange(1.0, 101.0), batch_size=1)
        >>> s.median_ms, round(s.p99_ms, 2), s.max_ms
        (50.5, 99.01, 100.0)
    """

    kind: Kind
    batch_size: int
    iterations: int
    total_s: float
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    throughput: float
    samples_ms: np.ndarray = field(
        default_factory=lambda: _readonly(np.empty(0)), repr=False, compare=False
    )

    @classmethod
    def from_samples(
        cls,
        samples_ms: Any,
        batch_size: int = 1,
        kind: Kind = "host",
        total_s: float | None = None,
    ) -> LatencyStats:
        """Summarise per-call latencies (ms); ``total_s`` defaults to their sum.

        Example:
            >>> LatencyStats.from_samples([2.0, 4.0], batch_size=8).throughput
            2666.6666666666665
        """
        _check_kind(kind)
        _check_batch(batch_size)
        samples = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
        if samples.size == 0:
            raise ConfigError("LatencyStats.from_samples needs at least one latency sample.")
        if not np.all(np.isfinite(samples)) or np.any(samples < 0):
            raise ConfigError("Latency samples must be finite and >= 0 ms; got NaN, inf or < 0.")
        if total_s is None:
            total_s = float(samples.sum()) / 1e3
        if not math.isfinite(total_s) or total_s <= 0:
            raise ConfigError(f"total_s must be finite and > 0 seconds, got {total_s!r}.")
        p50, p90, p95, p99 = np.percentile(samples, PERCENTILES, method="linear")
        return cls(
            kind=kind,
            batch_size=int(batch_size),
            iterations=int(samples.size),
            total_s=float(total_s),
            min_ms=float(samples.min()),
            mean_ms=float(samples.mean()),
            median_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(samples.max()),
            std_ms=float(samples.std()),
            throughput=float(batch_size) * samples.size / float(total_s),
            samples_ms=_readonly(samples.copy()),
        )

    def to_dict(self, include_samples: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict; samples (a list of ms) only when ``include_samples``."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "batch_size": self.batch_size,
            "iterations": self.iterations,
            "total_s": self.total_s,
            "min_ms": self.min_ms,
            "mean_ms": self.mean_ms,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "std_ms": self.std_ms,
            "throughput": self.throughput,
        }
        if include_samples:
            out["samples_ms"] = [float(v) for v in self.samples_ms]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on missing or bad fields."""
        if not isinstance(data, dict):
            raise ConfigError(f"Latency stats must be a JSON object, got {type(data).__name__}.")
        names = [n for n in cls.__dataclass_fields__ if n != "samples_ms"]
        missing = [n for n in names if n not in data]
        if missing:
            raise ConfigError(f"Latency stats lack the fields {missing}.")
        _check_kind(data["kind"])
        _check_batch(data["batch_size"])
        samples = np.asarray(data.get("samples_ms", []), dtype=np.float64).reshape(-1)
        values = {n: data[n] for n in names}
        return cls(**values, samples_ms=_readonly(samples))


def measure(
    fn: Callable[[], Any],
    config: TimingConfig = TimingConfig(),
    sync: Callable[[], None] | None = None,
    progress: Union[bool, ProgressCallback] = False,
    *,
    batch_size: int = 1,
) -> LatencyStats:
    """Time ``fn()`` (+ ``sync()``) on the host: warm up by time, then measure by time and count.

    Each sample is the wall time of one ``fn()`` followed by ``sync()`` (pass a sync that waits
    for the device, e.g. ``torch.cuda.synchronize``, when ``fn`` only enqueues work).
    ``progress=True`` shows a tqdm bar on stderr when it is a terminal (skipped, with a warning, when tqdm
    is missing); a callable is called as ``progress(iterations_done, elapsed_s)`` after each
    timed call, outside the timed region. ``batch_size`` is the images per call, for throughput.

    Example:
        >>> cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=5)
        >>> measure(lambda: None, cfg, batch_size=4).iterations
        5
    """
    _check_batch(batch_size)
    if not callable(fn):
        raise ConfigError(f"measure() needs a callable taking no arguments, got {fn!r}.")
    if sync is not None and not callable(sync):
        raise ConfigError(f"sync must be None or a callable taking no arguments, got {sync!r}.")
    call = fn if sync is None else _chain(fn, sync)
    clock = time.perf_counter_ns

    _warm_up(call, config.warmup_s)
    callback, close = _progress_hook(progress)
    min_ns = int(config.min_duration_s * 1e9)
    cap = config.max_iterations
    samples: list[int] = []
    try:
        start = clock()
        while True:
            t0 = clock()
            call()
            t1 = clock()
            samples.append(t1 - t0)
            n = len(samples)
            if callback is not None:
                callback(n, (t1 - start) / 1e9)
            if (n >= config.min_iterations and t1 - start >= min_ns) or (cap and n >= cap):
                break
        total_ns = clock() - start
    finally:
        close()
    return LatencyStats.from_samples(
        np.asarray(samples, dtype=np.float64) / 1e6, batch_size, "host", total_ns / 1e9
    )


def measure_device(
    fn: Callable[[], Any],
    config: TimingConfig = TimingConfig(),
    stream: Any = None,
    *,
    batch_size: int = 1,
) -> LatencyStats:
    """Time GPU compute of ``fn()`` with CUDA events; returns stats with ``kind="device"``.

    ``fn`` runs under ``torch.cuda.stream(stream)`` and must enqueue its work on that stream
    (default: the current stream; wrap a foreign stream, e.g. TensorRT's, with
    ``torch.cuda.ExternalStream(handle)``). Events are recorded before and after each call and
    the host waits for the end event, so calls never overlap. Stops by the same rules as
    :func:`measure` (duration is host wall time). Raises :class:`BackendUnavailable` when torch
    or a CUDA device is missing.

    Example:
        >>> import torch  # doctest: +SKIP
        >>> x = torch.randn(1024, 1024, device="cuda")  # doctest: +SKIP
        >>> measure_device(lambda: x @ x).kind  # doctest: +SKIP
        'device'
    """
    _check_batch(batch_size)
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(
            f"measure_device needs PyTorch with CUDA, but torch is not importable ({exc}). "
            "Install it with: pip install 'metaerr-edge[train]', "
            "or time on the host with measure()."
        ) from exc
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "measure_device needs a CUDA GPU, but torch.cuda.is_available() is False here. "
            "Run on a machine with an NVIDIA GPU, or time on the host with measure()."
        )
    stream = torch.cuda.current_stream() if stream is None else stream
    start_ev = torch.cuda.Event(enable_timing=True)
    end_ev = torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        with torch.cuda.stream(stream):
            start_ev.record(stream)
            fn()
            end_ev.record(stream)
        end_ev.synchronize()
        return start_ev.elapsed_time(end_ev)  # milliseconds

    _warm_up(timed, config.warmup_s)
    min_ns = int(config.min_duration_s * 1e9)
    cap = config.max_iterations
    samples: list[float] = []
    start = time.perf_counter_ns()
    while True:
        samples.append(timed())
        n = len(samples)
        elapsed = time.perf_counter_ns() - start
        if (n >= config.min_iterations and elapsed >= min_ns) or (cap and n >= cap):
            break
    return LatencyStats.from_samples(samples, batch_size, "device")


def _chain(fn: Callable[[], Any], sync: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        fn()
        sync()

    return call


def _warm_up(call: Callable[[], Any], warmup_s: float) -> None:
    end = time.perf_counter_ns() + int(warmup_s * 1e9)
    while time.perf_counter_ns() < end:
        call()


def _progress_hook(
    progress: Union[bool, ProgressCallback],
) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """Return (callback or None, close) for ``measure``'s ``progress`` argument."""
    if callable(progress):
        return progress, lambda: None
    from metaerr_edge.console import show_progress

    if not progress or not show_progress():  # bars on a terminal only
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm, which is not installed; no bar shown.", stacklevel=3
        )
        return None, lambda: None
    bar = tqdm(desc="measure", unit="it", leave=False, file=sys.stderr)

    def update(_n: int, _elapsed_s: float) -> None:
        bar.update(1)

    return update, bar.close
