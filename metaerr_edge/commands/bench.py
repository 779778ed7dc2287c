"""``metaerr-edge bench model.onnx``: latency of the fused graph per backend and batch size.

trtexec's conventions: warm up by time, measure by time and count, report
min/mean/median/p90/p95/p99/max and throughput. Host latency is the wall time of one
``Session.predict`` (input validation, host<->device copies on a GPU, the run, output conversion).
On a CUDA device the torch backend also gets device compute time from CUDA events around the forward
on an input already on the device (copies excluded), eagerly and, with ``--cuda-graphs``, as a replayed
CUDA graph. The backends are measured side by side: ``--interleave`` short measurements per backend,
round-robin, pooled into one distribution each, so drift on a shared machine hits all of them alike.

    metaerr-edge bench model.onnx --backend onnxruntime,torch --run RUN --batch-sizes 1,8,32 -o bench/

Writes ``bench.json`` (per-call samples kept, for ``metaerr-edge tradeoff --bench``), ``bench.md``,
``bench.png`` (host latency distribution) and ``bench_device.png`` (when device times were taken).
Results are named ``fused/<backend>`` (``fused/torch+cudagraph`` for the replayed graph).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.bench import (
    BenchResult,
    LatencyStats,
    TimingConfig,
    measure,
    measure_device,
)
from metaerr_edge.commands._options import at_most, device_name, int_list, seconds, seed, thread_count
from metaerr_edge.console import progress_bar, warn
from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import atomic_write_text

#: Largest parity gap between the torch model and the .onnx tolerated before refusing to compare them.
PARITY_ATOL = 1e-4
HOST_NOTE = ("wall time of Session.predict: input validation, host->device and device->host copies (GPU), "
             "the run and output conversion; the call returns host arrays, so it always waits for the device")


@dataclass
class Variant:
    """One thing to time: ``host(images)`` and, on CUDA, the torch module itself for device time."""

    name: str
    backend: str
    host: Callable[[np.ndarray], Any]
    gpu_model: Any = None  # a torch module on the GPU: device time is taken on it (eager or graphed)
    graphed: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def _backends(text: str) -> tuple[str, ...]:
    try:
        return parse_backends(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="latency of the fused graph per backend and batch size (trtexec conventions)")
    p.add_argument("model", help="fused .onnx written by `metaerr-edge export`")
    p.add_argument("--backend", default=("onnxruntime",), type=_backends,
                   help="comma-separated backends, e.g. onnxruntime,torch (default: onnxruntime)")
    p.add_argument("--batch-sizes", default=(1, 8, 32), type=int_list,
                   help="comma-separated batch sizes (default: 1,8,32)")
    p.add_argument("--run", default=None, help="run folder of the model (needed by the torch backend: an .onnx holds no torch weights)")
    p.add_argument("--device", type=device_name, default="cpu", help="torch backend device: cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--cuda-graphs", action="store_true", help="also time the torch model replayed as a CUDA graph (needs --device cuda)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="ONNX Runtime intra-op threads and torch threads (default: each library's own default)")
    p.add_argument("--warmup-s", type=seconds, default=0.2, help="warm-up per measurement, seconds (default: %(default)s)")
    p.add_argument("--duration-s", type=seconds, default=3.0, help="minimum measured time per result, seconds (default: %(default)s)")
    p.add_argument("--min-iters", type=at_most(10_000_000), default=10, help="minimum timed calls per result (default: %(default)s)")
    p.add_argument("--max-iters", type=at_most(10_000_000), default=None, help="hard cap on timed calls per result")
    p.add_argument("--interleave", type=at_most(10_000), default=5,
                   help="split each measurement into this many round-robin rounds across backends (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random input batch")
    p.add_argument("-o", "--out", default=None, help="output folder (default: <model folder>/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is drawn on a terminal only)")
    return p


# --- argument checks -----------------------------------------------------------------------


def parse_backends(text: str) -> tuple[str, ...]:
    """``"onnxruntime,torch"`` -> names checked against the backend registry."""
    from metaerr_edge.runtime import available_backends

    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    known = available_backends()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"--backend {text!r}: unknown backend(s) {unknown}; choose from {list(known)} "
                          "(comma-separated; 'auto' is not allowed here: name what to measure)")
    return names


def round_config(config: TimingConfig, rounds: int, index: int) -> TimingConfig:
    """The share of ``config`` one round of ``rounds`` gets; later rounds only re-warm briefly."""
    warm = config.warmup_s if index == 0 else min(config.warmup_s, 0.05)
    min_iters = math.ceil(config.min_iterations / rounds)
    cap = None if config.max_iterations is None else max(min_iters, math.ceil(config.max_iterations / rounds))
    return TimingConfig(warm, config.min_duration_s / rounds, min_iters, cap)


def measure_interleaved(
    calls: Sequence[tuple[str, Callable[[], Any]]],
    config: TimingConfig,
    rounds: int,
    *,
    batch_size: int,
    kind: str = "host",
    on_step: Callable[[str], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time several calls side by side: ``rounds`` short measurements each, round-robin, order rotated.

    Each call's samples from all rounds are pooled into one :class:`LatencyStats`, so it meets
    ``config``'s duration and count in total. ``kind="device"`` uses CUDA events (measure_device).

    Example:
        >>> cfg = TimingConfig(0.0, 0.01, 4)
        >>> stats = measure_interleaved([("a", lambda: None), ("b", lambda: None)], cfg, 2, batch_size=1)
        >>> sorted(stats), stats["a"].iterations >= 4
        (['a', 'b'], True)
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    samples: dict[str, list[np.ndarray]] = {name: [] for name, _ in calls}
    totals = dict.fromkeys(samples, 0.0)
    for r in range(rounds):
        cfg = round_config(config, rounds, r)
        shift = r % len(calls)
        for name, fn in [*calls[shift:], *calls[:shift]]:
            if kind == "device":
                stats = measure_device(fn, cfg, batch_size=batch_size)
            else:
                stats = measure(fn, cfg, batch_size=batch_size)
            samples[name].append(stats.samples_ms)
            totals[name] += stats.total_s
            if on_step is not None:
                on_step(name)
    return {
        name: LatencyStats.from_samples(np.concatenate(parts), batch_size, kind,  # type: ignore[arg-type]
                                        totals[name] if kind == "host" else None)
        for name, parts in samples.items()
    }


# --- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.bench import environment, save_json

    model = Path(args.model)
    if not model.is_file():
        where = (f"{str(model)!r} is a folder" if model.is_dir() else f"{str(model)!r} is not a regular file"
                 if model.exists() else f"no model file at {str(model)!r}")
        raise ConfigError(f"{where}; pass the fused .onnx written by `metaerr-edge export`")
    out = Path(args.out) if args.out else model.parent / "bench"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {str(out)!r} is an existing file; bench writes a folder (bench.json, bench.md, bench.png)")
    backends, batches = tuple(args.backend), tuple(args.batch_sizes)
    config = TimingConfig(args.warmup_s, args.duration_s, args.min_iters, args.max_iters)
    if "torch" in backends and not args.run:
        raise ConfigError("the torch backend needs --run RUN: an .onnx file holds no PyTorch module, so the run folder "
                          "the model was exported from supplies the weights")
    if args.device != "cpu" and "torch" not in backends:
        raise ConfigError(f"--device {args.device} applies to the torch backend only; add torch to --backend, or "
                          "pick the ONNX Runtime device with --backend onnxruntime-cuda")
    if args.cuda_graphs and ("torch" not in backends or not str(args.device).startswith("cuda")):
        raise ConfigError("--cuda-graphs times the torch backend on a GPU: add torch to --backend and pass --device cuda")

    from metaerr_edge._fileio import path_lock, replace_files
    from metaerr_edge.runtime import read_contract

    contract = read_contract(model)
    with path_lock(out):  # a second bench into the same folder fails now, not after measuring
        opened: list[Any] = []
        try:
            variants = _open_variants(model, contract, backends, batches, args, opened)
            results = _measure_all(variants, batches, contract, config, args)
        finally:
            for session in opened:
                session.close()

        env = environment()
        env["bench_threads"] = _thread_counts(args.threads)
        names = list(dict.fromkeys(r.name for r in results))
        pairs = [(name, names[0]) for name in names[1:]]
        extra = {"model": str(model), "argv": sys.argv[1:], "rounds": args.interleave, "seed": args.seed,
                 "timing": {"warmup_s": config.warmup_s, "min_duration_s": config.min_duration_s,
                            "min_iterations": config.min_iterations, "max_iterations": config.max_iterations},
                 "input": "uniform random in the contract's value range, one fixed batch per size"}
        text = _markdown(model, results, env, pairs)
        # One set: a full disk leaves the previous bench.{json,md,png}, never a mix (nor an old bench_device.png).
        with replace_files(out, ("bench.json", "bench.md", "bench.png", "bench_device.png")) as stage:
            save_json(stage / "bench.json", results, env, extra, pairs=pairs, include_samples=True)
            atomic_write_text(stage / "bench.md", text + "\n")
            written = ["bench.json", "bench.md", *_plots(results, stage)]
    print(text)
    print(f"wrote {out}/{{{','.join(written)}}}")
    warn_if_oversubscribed(results, env)
    return 0


def _plots(results: Sequence[BenchResult], out: Path) -> list[str]:
    """bench.png (and bench_device.png); skipped with a note where matplotlib is not installed (a device)."""
    from metaerr_edge.bench import plot_latency
    from metaerr_edge.errors import MissingDependency

    written = []
    try:
        plot_latency(results, out / "bench.png", log_scale=True)
        written.append("bench.png")
        if any(r.device is not None for r in results):
            plot_latency(results, out / "bench_device.png", kind="device", log_scale=True)
            written.append("bench_device.png")
    except MissingDependency:
        print("no plot: matplotlib is not installed (pip install matplotlib, or plot bench.json elsewhere)",
              file=sys.stderr)
    return written


#: torch slower than ONNX Runtime by more than this, side by side, is not the usual eager overhead.
OVERSUBSCRIBED_RATIO = 50.0


def warn_if_oversubscribed(results: Sequence[BenchResult], env: dict[str, Any]) -> list[str]:
    """Warn when the torch backend is >50x slower than ONNX Runtime at a batch size (returns the warnings).

    PyTorch eager is a few times slower than ONNX Runtime on small models; hundreds of times
    slower is almost always threads fighting over cores (torch and ONNX Runtime each starting one
    thread per core, or other processes on a shared machine).
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


def _thread_counts(threads: int | None) -> dict[str, Any]:
    from metaerr_edge.runtime.ort_backend import default_intra_op_threads

    counts: dict[str, Any] = {"requested": threads, "onnxruntime_intra_op": threads or default_intra_op_threads(),
                              "onnxruntime_inter_op": 1}
    torch = sys.modules.get("torch")
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return counts


def _open_variants(model: Path, contract: Any, backends: Sequence[str], batches: Sequence[int],
                   args: argparse.Namespace, opened: list[Any]) -> list[Variant]:
    """Open one session per backend (and the CUDA-graph variant); return them unbound to inputs."""
    from metaerr_edge.runtime import open_session

    variants: list[Variant] = []
    for name in backends:
        if name == "torch":
            variants += _torch_variants(model, contract, batches, args, opened)
            continue
        options = {"intra_op_num_threads": args.threads} if name.startswith("onnxruntime") and args.threads else {}
        session = open_session(model, backend=name, **options)
        opened.append(session)
        notes = {"backend": session.backend, "providers": list(session.providers), "device": session.device,
                 "host_time": HOST_NOTE, "copies_included": session.device != "cpu", "cuda_graphs": False,
                 "spin_wait": "not configured (the runtime's default)", "device_time": None}
        if name.startswith("onnxruntime"):
            notes["intra_op_num_threads"] = args.threads or _thread_counts(None)["onnxruntime_intra_op"]
        if session.device != "cpu":
            notes["device_time"] = f"not measured: {name} runs on its own CUDA stream; host time only"
        variants.append(Variant(f"fused/{name}", name, session.predict, notes=notes))
    return variants


def _reference_model(run_path: str, contract: Any, model: Path) -> Any:
    """The run's FusedModel exactly as ``model`` was exported (meta mode, layout, threshold)."""
    from metaerr_edge.fuse.verify import reference_model
    from metaerr_edge.pipeline import load_run

    return reference_model(load_run(run_path), contract, str(model))


def _torch_variants(model: Path, contract: Any, batches: Sequence[int], args: argparse.Namespace,
                    opened: list[Any]) -> list[Variant]:
    import copy

    import torch

    from metaerr_edge.runtime import open_session

    if args.threads:
        torch.set_num_threads(args.threads)
    fused = _reference_model(args.run, contract, model)
    session = open_session(fused, backend="torch", contract=contract, device=args.device)
    opened.append(session)
    _check_parity(model, session, contract, args.seed)
    on_gpu = session.device.startswith("cuda")
    base_notes = {"backend": "torch", "providers": list(session.providers), "device": session.device,
                  "torch_num_threads": torch.get_num_threads(), "host_time": HOST_NOTE, "copies_included": on_gpu,
                  "spin_wait": ("not forced: torch's non-blocking CUDA events and .cpu() follow the CUDA default "
                                "scheduling (cudaDeviceScheduleAuto, spins while cores are free)") if on_gpu else "n/a (CPU)"}
    gpu_model = copy.deepcopy(fused).eval().to(session.device) if on_gpu else None
    variants = [Variant("fused/torch", "torch", session.predict, gpu_model, False, {
        **base_notes, "cuda_graphs": False,
        "device_time": "CUDA events around the eager forward on a device-resident input (copies excluded)" if on_gpu else None})]
    if args.cuda_graphs:
        graphed = open_session(fused, backend="torch", contract=contract, device=args.device,
                               cuda_graph_batch_sizes=tuple(batches))
        opened.append(graphed)
        variants.append(Variant("fused/torch+cudagraph", "torch", graphed.predict, gpu_model, True, {
            **base_notes, "cuda_graphs": True,
            "device_time": "CUDA events around the graph replay; the input is already in the graph's static buffer"}))
    return variants


def _check_parity(model: Path, session: Any, contract: Any, seed: int) -> None:
    """Refuse to compare runtimes that run different models (a stale or wrong --run)."""
    from metaerr_edge.runtime import open_session

    x = _inputs(contract, 4, seed)
    with open_session(model, backend="onnxruntime", intra_op_num_threads=1) as ort:
        a = ort.predict(x)
    b = session.predict(x)
    gap = float(np.max(np.abs(a.failure_score - b.failure_score)))
    if not np.array_equal(a.label, b.label) or gap > PARITY_ATOL:
        raise ConfigError(f"the torch model from --run and {model} disagree (labels {a.label.tolist()} vs "
                          f"{b.label.tolist()}, failure-score gap {gap:.2e} > {PARITY_ATOL}); pass the run the model "
                          "was exported from")


def _inputs(contract: Any, n: int, seed: int) -> np.ndarray:
    spec = contract.input
    shape = (n, spec.channels, spec.height, spec.width) if spec.layout == "NCHW" else (n, spec.height, spec.width, spec.channels)
    rng = np.random.default_rng(seed)
    low, high = spec.value_range
    if spec.dtype == "uint8":
        return rng.integers(int(low), int(high) + 1, size=shape, dtype=np.uint8)
    return rng.uniform(low, high, size=shape).astype(spec.dtype)


def _device_call(gpu_model: Any, x: np.ndarray, graphed: bool) -> Callable[[], Any]:
    """A zero-argument call that only enqueues GPU work: the eager forward, or a captured graph's replay."""
    import torch

    dev = next(gpu_model.parameters()).device
    x_dev = torch.from_numpy(x).to(dev)
    if not graphed:
        def forward() -> Any:
            with torch.inference_mode():
                return gpu_model(x_dev)
        return forward
    with torch.inference_mode():  # PyTorch's capture recipe: warm up on a side stream, then capture
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(3):
                gpu_model(x_dev)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            gpu_model(x_dev)
    return graph.replay


def _measure_all(variants: Sequence[Variant], batches: Sequence[int], contract: Any, config: TimingConfig,
                 args: argparse.Namespace) -> list[BenchResult]:
    steps = len(batches) * args.interleave * (len(variants) + sum(v.gpu_model is not None for v in variants))
    bar = progress_bar(total=steps, enabled=not args.quiet, desc="bench", unit="step")
    results: list[BenchResult] = []
    try:
        for batch in batches:
            x = _inputs(contract, batch, args.seed)
            on_step = lambda name, batch=batch: (bar.set_postfix_str(f"batch {batch} {name}"), bar.update(1))  # noqa: E731
            host = measure_interleaved([(v.name, _bind(v.host, x)) for v in variants], config, args.interleave,
                                       batch_size=batch, on_step=on_step)
            dev_calls = [(v.name, _device_call(v.gpu_model, x, v.graphed)) for v in variants if v.gpu_model is not None]
            device = measure_interleaved(dev_calls, config, args.interleave, batch_size=batch, kind="device",
                                         on_step=on_step) if dev_calls else {}
            for v in variants:
                results.append(BenchResult(v.name, v.backend, str(args.model), batch, host[v.name],
                                           device.get(v.name), dict(v.notes)))
    finally:
        bar.close()
    return results


def _bind(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> Callable[[], Any]:
    return lambda: fn(x)


def _markdown(model: Path, results: Sequence[BenchResult], env: dict[str, Any],
              pairs: Sequence[tuple[str, str]]) -> str:
    from metaerr_edge.bench import ratio_table, ratios_markdown, to_markdown

    pk = env.get("packages", {})
    gpu = env.get("gpu")
    lines = [f"# Latency of {model.name}", "",
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

