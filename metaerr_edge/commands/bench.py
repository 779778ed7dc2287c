"""``metaerr-edge bench model.onnx``: latency of the fused graph per backend and batch size.

Times the fused graph on each ``--backend`` side by side in ``--interleave`` round-robin slices, with
trtexec's conventions: host time through ``Session.predict``; for torch on CUDA also CUDA-event device
time, eager and (``--cuda-graphs``) replayed. :mod:`metaerr_edge.bench` does the work; this parses and writes.

    metaerr-edge bench model.onnx --backend onnxruntime,torch --run RUN --batch-sizes 1,8,32 -o bench/

Writes ``bench.json`` (per-call samples kept, for ``metaerr-edge tradeoff --bench``), ``bench.md``,
``bench.png`` (host latency distribution) and ``bench_device.png`` (when device times were taken).
Results are named ``fused/<backend>`` (``fused/torch+cudagraph`` for the replayed graph); with several
models (``bench model.onnx model.int8.onnx``) ``fused[fp32]/<backend>``, ``fused[int8]/<backend>``, and
``--base-alone`` adds ``base[...]/<backend>``, the graph's base half (the price of the failure score).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from metaerr_edge.bench import (
    TimingConfig,
    bench_markdown,
    environment,
    measure_variants,
    open_model_variants,
    plot_bench,
    save_json,
    thread_counts,
    warn_if_oversubscribed,
)
from metaerr_edge.options import at_most, device_name, int_list, seconds, seed, thread_count
from metaerr_edge.errors import ConfigError, MissingDependency
from metaerr_edge._fileio import atomic_write_text

def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="latency of the fused graph per backend and batch size (trtexec conventions)")
    p.add_argument("models", nargs="+", metavar="model",
                   help="fused .onnx written by `metaerr-edge export` (several: e.g. the FP32 and INT8 graphs, timed "
                        "side by side)")  # fmt: skip
    p.add_argument("--base-alone", action="store_true",
                   help="also time the base half of each graph (label and probs: the price of the failure score; "
                        "ONNX Runtime backends, needs onnx)")  # fmt: skip
    p.add_argument("--backend", default=("onnxruntime",), type=parse_backends,
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


def parse_backends(text: str) -> tuple[str, ...]:
    """``"onnxruntime,torch"`` -> names checked against the backend registry (an argparse type)."""
    from metaerr_edge.runtime import available_backends

    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    known = available_backends()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--backend {text!r}: unknown backend(s) {unknown}; choose from {list(known)} "
                                         "(comma-separated; 'auto' is not allowed here: name what to measure)")
    return names


def run(args: argparse.Namespace) -> int:
    models, out = _check_args(args)
    backends, batches = tuple(args.backend), tuple(args.batch_sizes)
    config = TimingConfig(args.warmup_s, args.duration_s, args.min_iters, args.max_iters)

    from metaerr_edge._fileio import path_lock, replace_files
    from metaerr_edge.contract import read_contract

    contracts = [read_contract(m) for m in models]
    model, contract = models[0], contracts[0]
    with path_lock(out):  # a second bench into the same folder fails now, not after measuring
        fp32 = next(((m, c) for m, c in zip(models, contracts) if c.precision_name == "fp32"), None) \
            if "torch" in backends else None
        if "torch" in backends and fp32 is None:
            raise ConfigError("the torch backend runs the run's FP32 model: add the FP32 graph to the models, or "
                              "drop torch from --backend")
        fused = _reference_model(args.run, fp32[1], fp32[0]) if fp32 else None
        with open_model_variants(models, contracts, backends, batches, fused=fused, base_alone=args.base_alone,
                                 device=args.device, cuda_graphs=args.cuda_graphs, threads=args.threads,
                                 seed=args.seed) as (variants, pairs):
            results = measure_variants(variants, batches, contract, config, args.interleave, seed=args.seed,
                                       model=", ".join(map(str, models)), progress=not args.quiet)
        env = {**environment(), "bench_threads": thread_counts(args.threads)}
        extra = {"model": str(model), "models": [str(m) for m in models], "argv": sys.argv[1:],
                 "rounds": args.interleave, "seed": args.seed, "timing": dataclasses.asdict(config),
                 "precisions": [c.precision_name for c in contracts],
                 "input": "uniform random in the contract's value range, one fixed batch per size"}
        text = bench_markdown(model if len(models) == 1 else " vs ".join(Path(m).name for m in models),
                              results, env, pairs)
        # One set: a full disk leaves the previous bench.{json,md,png}, never a mix (nor an old bench_device.png).
        with replace_files(out, ("bench.json", "bench.md", "bench.png", "bench_device.png")) as stage:
            save_json(stage / "bench.json", results, env, extra, pairs=pairs, include_samples=True)
            atomic_write_text(stage / "bench.md", text + "\n")
            written = ["bench.json", "bench.md", *_plots(results, stage)]
    print(text)
    print(f"wrote {out}/{{{','.join(written)}}}")
    warn_if_oversubscribed(results, env)
    return 0


def _check_args(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The model files and output folder; ConfigError for options that do not go together."""
    models = list({Path(m).resolve(): Path(m) for m in args.models}.values())  # one file named twice: timed once
    for model in models:
        if not model.is_file():
            where = (f"{str(model)!r} is a folder" if model.is_dir() else f"{str(model)!r} is not a regular file"
                     if model.exists() else f"no model file at {str(model)!r}")
            raise ConfigError(f"{where}; pass the fused .onnx written by `metaerr-edge export`")
    out = Path(args.out) if args.out else models[0].parent / "bench"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {str(out)!r} is an existing file; bench writes a folder (bench.json, bench.md, bench.png)")
    backends = tuple(args.backend)
    if "torch" in backends and not args.run:
        raise ConfigError("the torch backend needs --run RUN: an .onnx file holds no PyTorch module, so the run folder "
                          "the model was exported from supplies the weights")
    if args.device != "cpu" and "torch" not in backends:
        raise ConfigError(f"--device {args.device} applies to the torch backend only; add torch to --backend, or "
                          "pick the ONNX Runtime device with --backend onnxruntime-cuda")
    if args.cuda_graphs and ("torch" not in backends or not str(args.device).startswith("cuda")):
        raise ConfigError("--cuda-graphs times the torch backend on a GPU: add torch to --backend and pass --device cuda")
    if args.base_alone and not any(b.startswith("onnxruntime") for b in backends):
        raise ConfigError("--base-alone times the base half of the graph on ONNX Runtime: add onnxruntime to --backend")
    return models, out


def _reference_model(run_path: str, contract: Any, model: Path) -> Any:
    """The run's FusedModel exactly as ``model`` was exported (meta mode, layout, threshold)."""
    from metaerr_edge.fuse.verify import reference_model
    from metaerr_edge.pipeline import load_run

    return reference_model(load_run(run_path), contract, str(model))


def _plots(results: Any, out: Path) -> list[str]:
    try:
        return plot_bench(results, out)
    except MissingDependency:
        print("no plot: matplotlib is not installed (pip install matplotlib, or plot bench.json elsewhere)",
              file=sys.stderr)
        return []
