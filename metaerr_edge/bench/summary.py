"""What a ``metaerr-edge bench`` run reports: its Markdown page, its plots and its warnings.

:func:`bench_markdown` renders host (and device) tables, side-by-side ratios and what each result's
numbers include; :func:`plot_bench` writes ``bench.png`` (and ``bench_device.png``);
:func:`warn_if_oversubscribed` flags a torch result so slow that threads, not eager overhead, explain it.

Example:
    >>> print(bench_markdown("fused.onnx", results, env, [("fused/torch", "fused/onnxruntime")]))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaerr_edge.bench.report import BenchResult, plot_latency, ratio_table, ratios_markdown, to_markdown
from metaerr_edge.bench.variants import HOST_NOTE
from metaerr_edge.console import warn

#: torch slower than ONNX Runtime by more than this, side by side, is not the usual eager overhead.
OVERSUBSCRIBED_RATIO = 50.0


def bench_markdown(model: str | Path, results: Sequence[BenchResult], env: dict[str, Any],
                   pairs: Sequence[tuple[str, str]]) -> str:
    """The ``bench.md`` page: environment line, host/device tables, ratios of ``pairs`` and notes.

    ``env`` is :func:`~metaerr_edge.bench.environment` with ``bench_threads``
    (:func:`~metaerr_edge.bench.variants.thread_counts`); device rows appear where results have them.

    Example:
        >>> bench_markdown("fused.onnx", results, env, []).splitlines()[0]
        '# Latency of fused.onnx'
    """
    pk = env.get("packages", {})
    gpu = env.get("gpu")
    lines = [f"# Latency of {Path(model).name}", "",
             (f"CPU: {env.get('cpu_model')} ({env.get('cpu_affinity')} usable of {env.get('cpu_count')}); "
             f"GPU: {gpu if gpu else 'none used'}; threads: {env.get('bench_threads')}; "
             f"onnxruntime {pk.get('onnxruntime') or pk.get('onnxruntime-gpu')}, torch {pk.get('torch')}, "
             f"python {env.get('python')}."), "",
             "## Host latency (end to end through Session.predict)", "", to_markdown(results, "host")]
    if any(r.device is not None for r in results):
        lines += ["", "## Device compute time (CUDA events, copies excluded)", "", to_markdown(results, "device")]
    if pairs:
        rows = ratio_table(results, pairs, "host")
        timed = [r for r in results if r.device is not None]
        on_device = {r.name for r in timed}
        device_pairs = [p for p in pairs if set(p) <= on_device]
        if device_pairs:
            rows += ratio_table(timed, device_pairs, "device")
        lines += ["", "## Ratios (measured side by side; > 1 means a is slower)", "", ratios_markdown(rows)]
    lines += ["", "## What the numbers include", ""]
    seen: set[str] = set()
    for r in results:
        if r.name in seen:
            continue
        seen.add(r.name)
        n = r.notes
        lines.append(f"- **{r.name}**: {n.get('device')} via {', '.join(n.get('providers', []))}; copies in host time: "
                     f"{n.get('copies_included')}; CUDA graphs: {n.get('cuda_graphs')}; spin-wait: {n.get('spin_wait')}; "
                     f"device time: {n.get('device_time') or 'n/a'}.")
    lines.append(f"- host time: {HOST_NOTE}.")
    return "\n".join(lines)


def plot_bench(results: Sequence[BenchResult], folder: str | Path) -> list[str]:
    """Write ``bench.png`` (host latency) and, where device times were taken, ``bench_device.png``.

    Returns the file names written. Raises :class:`~metaerr_edge.errors.MissingDependency`
    where matplotlib is not installed (a device install), before writing anything.

    Example:
        >>> plot_bench(results, "bench/")
        ['bench.png']
    """
    folder = Path(folder)
    plot_latency(results, folder / "bench.png", log_scale=True)
    written = ["bench.png"]
    if any(r.device is not None for r in results):
        plot_latency(results, folder / "bench_device.png", kind="device", log_scale=True)
        written.append("bench_device.png")
    return written


def warn_if_oversubscribed(results: Sequence[BenchResult], env: dict[str, Any]) -> list[str]:
    """Warn when the torch backend is >50x slower than ONNX Runtime at a batch size (returns the warnings).

    PyTorch eager is a few times slower than ONNX Runtime on small models; hundreds of times
    slower is almost always threads fighting over cores (torch and ONNX Runtime each starting one
    thread per core, or other processes on a shared machine).

    Example:
        >>> warn_if_oversubscribed(results, env)
        []
    """
    by_key = {(r.name, r.batch_size): r for r in results}
    cores = env.get("cpu_affinity") or env.get("cpu_count")
    threads = env.get("bench_threads", {})
    messages = []
    for (name, batch), r in by_key.items():
        ort = by_key.get(("fused/onnxruntime", batch))
        if r.backend != "torch" or ort is None or r.device is not None and "cuda" in str(r.notes.get("device")):
            continue
        ratio = r.host.median_ms / max(ort.host.median_ms, 1e-9)
        if ratio > OVERSUBSCRIBED_RATIO:
            messages.append(
                f"{name} is {ratio:.0f}x slower than fused/onnxruntime at batch {batch} (median "
                f"{r.host.median_ms:.3f} vs {ort.host.median_ms:.3f} ms); torch used {threads.get('torch')} thread(s) "
                f"and ONNX Runtime {threads.get('onnxruntime_intra_op')} on {cores} usable core(s): thread "
                "oversubscription is the usual cause. Re-run with --threads 1 (or the number of physical cores) "
                "on a quiet machine.")
    for message in messages:
        warn(message, name="metaerr_edge.bench")
    return messages
