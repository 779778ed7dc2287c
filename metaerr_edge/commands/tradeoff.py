"""``metaerr-edge tradeoff RUN``: when does deferring to a fallback pay? Sweep thresholds on the calibration split.

On-device latency comes from a ``metaerr-edge bench`` JSON (or a number); the fallback (a bigger model, a
server, a person) from its own bench JSON or a number, and its accuracy from a number or from a second run
trained on the same dataset and splits (per-sample correctness).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from metaerr_edge.options import name, nonneg_float, positive_float, unit_interval
from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError, MissingDependency
from metaerr_edge._fileio import atomic_write_text, dumps_json, write_json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tradeoff", help="system accuracy vs deferral rate vs latency, and the recommended operating point")
    p.add_argument("run", help="run folder of the on-device model (its calibration split is swept)")
    dev = p.add_mutually_exclusive_group(required=True)
    dev.add_argument("--bench", help="bench JSON of the on-device fused model (`metaerr-edge bench`)")
    dev.add_argument("--device-latency-ms", type=positive_float, help="on-device latency per image, if not measured")
    p.add_argument("--bench-name", type=name, default=None, help="which result in --bench (default: the first fused result at batch 1)")
    fb_lat = p.add_mutually_exclusive_group(required=True)
    fb_lat.add_argument("--fallback-bench", help="bench JSON of the fallback model")
    fb_lat.add_argument("--fallback-latency-ms", type=nonneg_float, help="extra latency of a deferral (network + server, or a person)")
    fb_acc = p.add_mutually_exclusive_group(required=True)
    fb_acc.add_argument("--fallback-run", help="run folder of a larger model trained on the same dataset and splits")
    fb_acc.add_argument("--fallback-accuracy", type=unit_interval, help="accuracy of the fallback, e.g. 0.99")
    p.add_argument("--deadline-ms", type=positive_float, default=None, help="p99 latency budget")
    p.add_argument("--min-accuracy", type=unit_interval, default=None, help="pick the cheapest point reaching this accuracy")
    p.add_argument("--meta-mode", type=name, default=None, help="which meta mode's scores (default: the run's deployed one)")
    p.add_argument("-o", "--out", default=None, help="folder for tradeoff.{json,md,png} (default: RUN/tradeoff)")
    return p


def bench_latency(path: str, name: str | None, batch: int = 1) -> tuple[np.ndarray, str]:
    """Per-image host latency samples (ms) of one result of a bench JSON (its median if samples were not saved)."""
    from metaerr_edge.bench.report import load_json

    report = load_json(path)
    results = [r for r in report.results if r.batch_size == batch and (r.name == name if name else "fused" in r.name)]
    if not results:
        names = sorted({f"{r.name}@{r.batch_size}" for r in report.results})
        raise ConfigError(f"{path} has no result named {name or '*fused*'} at batch {batch}; it has {names}. Pass --bench-name")
    stats = results[0].host
    samples = np.asarray(stats.samples_ms, np.float64)
    if not samples.size:  # a median alone would pass for the p99 and make every deadline verdict wrong
        raise ConfigError(f"{path}: {results[0].name} at batch {batch} keeps no per-call samples, and the trade-off "
                          "needs the whole latency distribution (its p99). Re-run `metaerr-edge bench` (it keeps "
                          "them), or pass --device-latency-ms / --fallback-latency-ms")
    return samples, results[0].name


def run(args: argparse.Namespace) -> int:
    import contextlib

    from metaerr_edge.decide import recommend, sweep_tradeoff
    from metaerr_edge._fileio import path_lock, replace_files
    from metaerr_edge.pipeline import load_run

    run_ = load_run(args.run)
    if args.bench_name is not None and not args.bench:
        raise ConfigError("--bench-name picks a result of --bench; with --device-latency-ms there is none to pick")
    out = Path(args.out) if args.out else run_.path / "tradeoff"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {str(out)!r} is an existing file; tradeoff writes a folder (tradeoff.md, .json, .png)")
    with contextlib.ExitStack() as locks:
        if out.resolve().is_relative_to(run_.path.resolve()):  # inside the run: no retraining meanwhile
            locks.enter_context(path_lock(run_.path))
        locks.enter_context(path_lock(out))
        mode = run_.mode(args.meta_mode)
        preds = run_.predictions
        scores, labels = preds[f"calib_score_{mode}"], preds["calib_labels"]
        is_error = error_labels(preds["calib_probs"], labels)
        device, device_name = (bench_latency(args.bench, args.bench_name) if args.bench else (np.array([args.device_latency_ms]), "given"))
        fallback = bench_latency(args.fallback_bench, None)[0] if args.fallback_bench else np.array([args.fallback_latency_ms])
        fb_kwargs: dict = {}
        if args.fallback_run:
            other = load_run(args.fallback_run)
            if not np.array_equal(other.splits.calib, run_.splits.calib) or other.config.data.dataset != run_.config.data.dataset:
                raise ConfigError(f"{args.fallback_run} was not trained on the same dataset and splits as {args.run} "
                                  "(same --dataset, --seed and split fractions); pass --fallback-accuracy instead")  # fmt: skip
            fb_kwargs["fallback_correct"] = (other.predictions["calib_probs"].argmax(1) == labels).astype(np.int64)
        else:
            fb_kwargs["fallback_accuracy"] = args.fallback_accuracy
        table = sweep_tradeoff(scores, is_error, device, fallback, deadline_ms=args.deadline_ms, **fb_kwargs)
        best = recommend(table, deadline_ms=args.deadline_ms, min_accuracy=args.min_accuracy)
        inputs = {
            "run": str(run_.path), "meta_mode": mode, "split": "calib", "calibration_n": int(len(scores)),
            "calibration_error_rate": float(is_error.mean()),
            "device": {"source": args.bench or "--device-latency-ms", "result": device_name,
                       "samples": int(device.size), "median_ms": float(np.median(device))},
            "fallback": {"source": args.fallback_bench or "--fallback-latency-ms", "samples": int(fallback.size),
                         "median_ms": float(np.median(fallback)),
                         "accuracy": args.fallback_accuracy if args.fallback_accuracy is not None else "per sample",
                         "run": args.fallback_run},
            "deadline_ms": args.deadline_ms, "min_accuracy": args.min_accuracy,
        }
        md = (f"# Deferral trade-off of {run_.path} (meta mode {mode})\n\n"
              f"- on-device latency: {device_name} ({device.size} sample(s), median {np.median(device):.3f} ms) from "
              f"{inputs['device']['source']}\n"
              f"- fallback latency: {fallback.size} sample(s), median {np.median(fallback):.3f} ms, from "
              f"{inputs['fallback']['source']}; fallback accuracy: {inputs['fallback']['accuracy']}"
              + (f" (from run {args.fallback_run})" if args.fallback_run else "") + "\n"
              f"- swept on the calibration split: n={len(scores)}, on-device error rate {is_error.mean():.4f}\n"
              f"- deadline (p99): {args.deadline_ms if args.deadline_ms is not None else 'none'} ms; minimum accuracy: "
              f"{args.min_accuracy if args.min_accuracy is not None else 'none'}\n\n"
              + table.to_markdown() + "\nrecommended: " + dumps_json(best) + "\n")  # fmt: skip
        # One set: a full disk leaves the previous tradeoff.{md,json,png}, never a mix.
        with replace_files(out, ("tradeoff.md", "tradeoff.json", "tradeoff.png")) as stage:
            atomic_write_text(stage / "tradeoff.md", md)
            write_json(stage / "tradeoff.json", {"inputs": inputs, "recommended": best, "rows": table.rows()},
                       reasons={"threshold": "-Infinity is the defer-everything row (no score is accepted)",
                                "selective_risk": "undefined: no sample is accepted at this threshold"})
            written = ["md", "json"]
            try:
                table.plot(stage / "tradeoff.png", deadline_ms=args.deadline_ms, min_accuracy=args.min_accuracy)
                written.append("png")
            except MissingDependency as exc:
                print(f"no plot: {exc}", file=sys.stderr)
        print(md)
        print(f"wrote {out}/tradeoff.{{{','.join(written)}}}")
        return 0
