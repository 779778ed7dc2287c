"""Latency benchmarks users trust: trtexec's conventions, host and device time, ratios.

Measure any zero-argument callable, summarise, compare side by side and save::

    cfg = TimingConfig()                                   # 0.2 s warm-up, >= 3 s and >= 10 calls
    host = measure(lambda: session.run(batch), cfg, batch_size=8)
    result = BenchResult("fused/onnxruntime-cpu", "onnxruntime-cpu", "fused.onnx", 8, host,
                         notes={"copies_included": True, "threads": 2})
    print(to_markdown([result]))
    save_json("bench.json", [result], environment(), pairs=[("fused/...", "base/...")])

Several calls side by side (round-robin slices, so drift hits all alike)::

    stats = measure_interleaved([("ort", lambda: ort.predict(x)), ("torch", lambda: pt.predict(x))], cfg, 5,
                                batch_size=8)

The fused .onnx on several runtime backends (what ``metaerr-edge bench`` does)::

    with open_variants("fused.onnx", contract, ("onnxruntime", "torch"), (1, 8), fused=run_model) as variants:
        results = measure_variants(variants, (1, 8), contract, cfg, rounds=5)
    print(bench_markdown("fused.onnx", results, environment(), [("fused/torch", "fused/onnxruntime")]))

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
from metaerr_edge.bench.interleave import measure_interleaved, round_config
from metaerr_edge.bench.summary import OVERSUBSCRIBED_RATIO, bench_markdown, plot_bench, warn_if_oversubscribed
from metaerr_edge.bench.timer import (
    PERCENTILES,
    LatencyStats,
    TimingConfig,
    measure,
    measure_device,
)
from metaerr_edge.bench.variants import (
    HOST_NOTE,
    PARITY_ATOL,
    Variant,
    check_parity,
    measure_variants,
    model_tags,
    open_model_variants,
    open_variants,
    thread_counts,
)

__all__ = [
    "HOST_NOTE",
    "OVERSUBSCRIBED_RATIO",
    "PARITY_ATOL",
    "PERCENTILES",
    "SCHEMA",
    "BenchReport",
    "BenchResult",
    "LatencyStats",
    "TimingConfig",
    "Variant",
    "bench_markdown",
    "check_parity",
    "environment",
    "load_json",
    "measure",
    "measure_device",
    "measure_interleaved",
    "measure_variants",
    "model_tags",
    "open_model_variants",
    "open_variants",
    "plot_bench",
    "plot_latency",
    "ratio_table",
    "ratios_markdown",
    "round_config",
    "save_json",
    "thread_counts",
    "to_markdown",
    "warn_if_oversubscribed",
]
