"""``metaerr-edge tradeoff RUN``: when does deferring to a fallback pay? Sweep thresholds on the calibration split.

On-device latency comes from a ``metaerr-edge bench`` JSON (or a number); the fallback (a bigger model, a
server, a person) from its own bench JSON or a number, and its accuracy from a number or from a second run
trained on the same dataset and splits (per-sample correctness).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metaerr_edge.errors import ConfigError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tradeoff", help="system accuracy vs deferral rate vs latency, and the recommended operating point")
    p.add_argument("run", help="run folder of the on-device model (its calibration split is swept)")
    dev = p.add_mutually_exclusive_group(required=True)
    dev.add_argument("--bench", help="bench JSON of the on-device fused model (`metaerr-edge bench`)")
    dev.add_argument("--device-latency-ms", type=float, help="on-device latency per image, if not measured")
    p.add_argument("--bench-name", default=None, help="which result in --bench (default: the first fused result at batch 1)")
    fb_lat = p.add_mutually_exclusive_group(required=True)
    fb_lat.add_argument("--fallback-bench", help="bench JSON of the fallback model")
    fb_lat.add_argument("--fallback-latency-ms", type=float, help="extra latency of a deferral (network + server, or a person)")
    fb_acc = p.add_mutually_exclusive_group(required=True)
    fb_acc.add_argument("--fallback-run", help="run folder of a larger model trained on the same dataset and splits")
    fb_acc.add_argument("--fallback-accuracy", type=float, help="accuracy of the fallback, e.g. 0.99")
    p.add_argument("--deadline-ms", type=float, default=None, help="p99 latency budget")
    p.add_argument("--min-accuracy", type=float, default=None, help="pick the cheapest point reaching this accuracy")
    p.add_argument("--meta-mode", default=None, help="which meta mode's scores (default: the run's deployed one)")
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
    return (samples if samples.size else np.array([stats.median_ms])), results[0].name


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.decide import recommend, sweep_tradeoff
    from metaerr_edge.pipeline import atomic_write_text, load_run

    run_ = load_run(args.run)
    mode = args.meta_mode or run_.config.meta_modes[0]
    preds = run_.predictions
    key = f"calib_score_{mode}"
    if key not in preds:
        raise ConfigError(f"run {args.run} has no calibration scores for meta mode {mode!r}; it trained {list(run_.config.meta_modes)}")
    scores, labels = preds[key], preds["calib_labels"]
    is_error = (preds["calib_probs"].argmax(1) != labels).astype(np.int64)
    device, device_name = (bench_latency(args.bench, args.bench_name) if args.bench else (np.array([args.device_latency_ms]), "given"))
    fallback = bench_latency(args.fallback_bench, None)[0] if args.fallback_bench else np.array([args.fallback_latency_ms])
    fb_kwargs: dict = {}
    if args.fallback_run:
        other = load_run(args.fallback_run)
        if not np.array_equal(other.splits.calib, run_.splits.calib) or other.config.dataset != run_.config.dataset:
            raise ConfigError(f"{args.fallback_run} was not trained on the same dataset and splits as {args.run} "
                              "(same --dataset, --seed and split fractions); pass --fallback-accuracy instead")  # fmt: skip
        fb_kwargs["fallback_correct"] = (other.predictions["calib_probs"].argmax(1) == labels).astype(np.int64)
    else:
        fb_kwargs["fallback_accuracy"] = args.fallback_accuracy
    table = sweep_tradeoff(scores, is_error, device, fallback, deadline_ms=args.deadline_ms, **fb_kwargs)
    best = recommend(table, deadline_ms=args.deadline_ms, min_accuracy=args.min_accuracy)
    out = Path(args.out) if args.out else run_.path / "tradeoff"
    md = (f"on-device: {device_name} (median {np.median(device):.3f} ms), fallback median {np.median(fallback):.3f} ms, "
          f"calibration n={len(scores)}\n\n" + table.to_markdown() + "\nrecommended: " + json.dumps(best, default=float) + "\n")  # fmt: skip
    atomic_write_text(out / "tradeoff.md", md)
    atomic_write_text(out / "tradeoff.json", json.dumps({"recommended": best, "rows": table.rows()}, indent=2, default=float))
    table.plot(out / "tradeoff.png", deadline_ms=args.deadline_ms, min_accuracy=args.min_accuracy)
    print(md)
    print(f"wrote {out}/tradeoff.{{md,json,png}}")
    return 0
