"""Latency benchmarks users trust: trtexec's conventions, host and device time, ratios.

Measure any zero-argument callable, summarise, compare side by side and save::

    cfg = TimingConfig()                                   # 0.2 s warm-up, >= 3 s and >= 10 calls
    host = measure(lambda: session.run(batch), cfg, batch_size=8)
    result = BenchResult("fused/onnxruntime-cpu", "onnxruntime-cpu", "fused.onnx", 8, host,
                         notes={"copies_included": True, "threads": 2})
    print(to_markdown([result]))
    save_json("bench.json", [result], environment(), pairs=[("fused/...", "base/...")])

Only numpy is needed to import this package; torch, tqdm and matplotlib load when used.
"""

from __future__ import annotations

from metaerr_edge.bench.report import (
    SCHEMA,
    BenchReport,
    BenchResult,
    load_json,
    plot_latency,
    ratio_table,
    ratios_markdown,
    save_json,
    to_markdown,
)
from metaerr_edge.bench.env import environment
from metaerr_edge.bench.timer import (
    PERCENTILES,
    LatencyStats,
    TimingConfig,
    measure,
    measure_device,
)

__all__ = [
    "PERCENTILES",
    "SCHEMA",
    "BenchReport",
    "BenchResult",
    "LatencyStats",
    "TimingConfig",
    "environment",
    "load_json",
    "measure",
    "measure_device",
    "plot_latency",
    "ratio_table",
    "ratios_markdown",
    "save_json",
    "to_markdown",
]
