"""``metaerr-edge ssl``: pseudo-labelling rounds with a chosen selector; a per-round table and a JSON."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from metaerr_edge.commands._options import add_fit_options, fold_count, fraction, nonneg_int, positive_int
from metaerr_edge.commands.train import ARCH_HELP
from metaerr_edge.data import available_sources
from metaerr_edge.errors import ConfigError
from metaerr_edge.io import write_json


# Shown in --help only; the selector registry (metaerr_edge.ssl) decides what is valid when the command runs.
SELECTOR_HELP = "confidence, topk, mc-dropout, metaerr, metaerr-topk"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ssl", help="pseudo-labelling semi-supervised learning with a MetaErr (or baseline) selector")
    p.add_argument("--dataset", default="digits", help=f"one of {available_sources()} (default: %(default)s)")
    p.add_argument("--root", default=None, help="data root for torchvision/ImageFolder datasets (e.g. ../shared/datasets)")
    p.add_argument("--labelled", type=positive_int, default=100,
                   help="how many training images keep their label (class-balanced; default: %(default)s)")
    p.add_argument("--selector", default="metaerr", help=f"{SELECTOR_HELP} (default: %(default)s)")
    p.add_argument("--rounds", type=nonneg_int, default=3, help="pseudo-labelling rounds after round 0 (default: %(default)s)")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="per-round count for topk/metaerr-topk (default: what confidence keeps)")
    p.add_argument("--threshold", type=fraction, default=0.95, help="confidence threshold (confidence, topk, mc-dropout)")
    p.add_argument("--meta-mode", default="probs", help="metaerr head input: probs, image, image+probs (default: %(default)s)")
    p.add_argument("--folds", type=fold_count, default=3, help="cross-fitting folds for the metaerr error labels (default: %(default)s)")
    p.add_argument("--arch", default="small_cnn", help=f"base architecture: {ARCH_HELP} (default: %(default)s)")
    p.add_argument("--width", type=positive_int, default=None, help="small_cnn width (default: the architecture's)")
    p.add_argument("--epochs", type=positive_int, default=10, help="base epochs per round (default: %(default)s)")
    p.add_argument("--min-steps", type=positive_int, default=100, help="at least this many optimiser steps per training")
    add_fit_options(p, pool_help="cap the unlabelled pool at this many images")
    p.add_argument("-o", "--out", default="runs/ssl.json", help="JSON file to write (default: %(default)s)")
    return p


def _selector_options(args: argparse.Namespace) -> dict:
    name = args.selector
    if name.startswith("metaerr"):
        opts = {"mode": args.meta_mode, "folds": args.folds}
        return {**opts, "threshold": args.threshold} if name == "metaerr-topk" else opts
    return {"threshold": args.threshold}


def format_table(result) -> str:
    rows = ["round | kept  | precision | test acc | train n | seconds", "------|-------|-----------|----------|---------|--------"]
    for r in result.rounds:
        prec = "-" if math.isnan(r.precision) else f"{100 * r.precision:8.2f}%"
        rows.append(f"{r.round:5d} | {r.kept:5d} | {prec:>9s} | {100 * r.test_acc:7.2f}% | {r.n_train:7d} | {r.seconds:6.1f}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.data import load_dataset
    from metaerr_edge.models import FitConfig, available_bases
    from metaerr_edge.ssl import create_selector, run_pseudo_labelling, sample_labelled

    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"-o {args.out!r} is a folder; ssl writes one JSON file, e.g. {out / 'ssl.json'}")
    if args.arch not in available_bases():
        raise ConfigError(f"--arch {args.arch!r} is not a registered base architecture; choose one of {available_bases()}")
    selector = create_selector(args.selector, **_selector_options(args))
    data = load_dataset(args.dataset, args.root)
    fit = FitConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        augment="shift_flip" if data.channels == 3 else "shift",
    )  # fmt: skip
    labelled = sample_labelled(data.train.labels, args.labelled, args.seed)
    result = run_pseudo_labelling(
        data, labelled, selector, args.rounds, fit, args.seed, arch=args.arch,
        arch_kwargs={} if args.width is None else {"width": args.width}, pool_size=args.max_pool,
        max_test=args.max_test, budgets=None if args.budget is None else [args.budget] * args.rounds,
        min_steps=args.min_steps, progress=not args.quiet,
    )  # fmt: skip
    print(f"{args.dataset}: {result.n_labelled} labelled, pool {result.n_pool}, test {result.n_test}, selector {result.selector}")
    print(format_table(result))
    write_json(out, {"dataset": args.dataset, **result.to_dict()}, indent=1,
               reasons={"precision": "no pseudo-labels kept in this round (round 0 keeps none)"})
    print(f"wrote {out}")
    return 0
