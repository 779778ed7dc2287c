"""``metaerr-edge ssl``: pseudo-labelling rounds with a chosen selector; a per-round table and a JSON."""

from __future__ import annotations

import argparse
import math
import os

from metaerr_edge.config import add_config_options
from metaerr_edge.data import available_sources
from metaerr_edge.options import at_most, fold_count, fraction, name, positive_int, round_count, view_count
from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import write_json


# Shown in --help only; the selector registry (metaerr_edge.semisup) decides what is valid when the command runs.
SELECTOR_HELP = "confidence, topk, mc-dropout, mc-dropout-topk, metaerr, metaerr-topk, metaerr-balanced, metaerr-perclass"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ssl", help="pseudo-labelling semi-supervised learning with a MetaErr (or baseline) selector")
    p.add_argument("--labelled", type=positive_int, default=100,
                   help="how many training images keep their label (class-balanced; default: %(default)s)")
    p.add_argument("--selector", default="metaerr", help=f"{SELECTOR_HELP} (default: %(default)s)")
    p.add_argument("--compare", nargs="+", default=[], metavar="SELECTOR",
                   help="other selectors to score on the same run: each round each picks from the same model at the "
                        "--selector's count (precision at equal count), without being trained on; the metaerr flags "
                        "apply to the metaerr ones")
    p.add_argument("--rounds", type=round_count, default=3, help="pseudo-labelling rounds after round 0 (default: %(default)s)")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="per-round count for topk and the count-based metaerr selectors (default: what confidence "
                        "would keep)")
    p.add_argument("--threshold", type=fraction, default=None,
                   help="confidence threshold of confidence and mc-dropout; sets the default budget of topk and the "
                        "count-based metaerr selectors (metaerr-perclass: also its class mix) (default: 0.95)")
    p.add_argument("--max-score", type=fraction, default=None,
                   help="metaerr keeps pool images whose failure score is below this (default: 0.5)")
    p.add_argument("--meta-mode", type=name, default="probs",
                   help="metaerr head input: probs, image, image+probs, mentor, mentor-features (default: %(default)s)")
    p.add_argument("--shift-views", type=view_count, default=0,
                   help="corrupted views of each meta row the metaerr head also learns from (validation corruption "
                        "families, scored out of fold); --meta-mode mentor-features --shift-views 2 is train's robust "
                        "preset (default: %(default)s)")
    p.add_argument("--folds", type=fold_count, default=3, help="cross-fitting folds for the metaerr error labels (default: %(default)s)")
    p.add_argument("--meta-rows", choices=("labelled", "labelled+pseudo"), default="labelled",
                   help="what the metaerr meta-model learns from: the labelled set's out-of-fold errors, or also the "
                        "previous round's pseudo-labels (one cross-fit over both) (default: %(default)s)")
    p.add_argument("--width", type=at_most(1024), default=None, help="small_cnn width (default: the architecture's)")
    p.add_argument("--min-steps", type=at_most(10_000_000), default=100, help="at least this many optimiser steps per training")
    # What a pseudo-labelling run shares with `train`: the same fields, defaults and help.
    add_config_options(p, only=("data.dataset", "data.root", "data.max_pool", "data.max_test", "base.arch", "base.epochs",
                                "base.batch_size", "base.lr", "seed", "device"),
                       helps={"data.dataset": f"one of {available_sources()}", "base.epochs": "base epochs per round",
                              "data.max_pool": "cap the unlabelled pool at this many images"})  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are drawn on a terminal only)")
    p.add_argument("-o", "--out", default="runs/ssl.json", help="JSON file to write (default: %(default)s)")
    return p


#: Which of --threshold / --budget / --max-score each selector takes (a flag it does not take is refused).
SELECTOR_OPTIONS = {"confidence": ("threshold",), "mc-dropout": ("threshold",), "topk": ("threshold", "budget"),
                    "mc-dropout-topk": ("threshold", "budget"),
                    "metaerr": ("max_score",), "metaerr-topk": ("threshold", "budget"),
                    "metaerr-balanced": ("threshold", "budget"), "metaerr-perclass": ("threshold", "budget")}


def _selector_options(args: argparse.Namespace, name: str | None = None) -> dict:
    """The options of ``name`` (default: ``--selector``) from the flags. A flag ``--selector`` does not
    use is a ConfigError; a ``--compare`` selector is simply not given the flags it does not take."""
    compared = name is not None
    name = name or args.selector
    takes = SELECTOR_OPTIONS.get(name, ("threshold",))
    unused = [f"--{k.replace('_', '-')}" for k in ("threshold", "budget", "max_score")
              if getattr(args, k) is not None and k not in takes]
    if unused and not compared:
        raise ConfigError(f"selector {name!r} does not use {', '.join(unused)}; it takes "
                          f"{', '.join('--' + k.replace('_', '-') for k in takes)}")
    opts = {k: getattr(args, k) for k in ("threshold", "max_score") if k in takes and getattr(args, k) is not None}
    if name.startswith("metaerr"):
        opts.update(mode=args.meta_mode, folds=args.folds, meta_rows=args.meta_rows, shift_views=args.shift_views)
    return opts


def format_table(result) -> str:
    """Per round: the main selector's count, precision, balance and test accuracy, then the precision
    of each ``--compare`` selector at the same count on the same model."""
    compared = list(dict.fromkeys(name for r in result.rounds for name in r.shadows))
    widths = {n: max(len(n), 15) for n in compared}  # "precision% (kept)"
    rows = ["round | kept  | precision | imbalance | test acc | train n | seconds" + "".join(f" | {n:>{widths[n]}s}" for n in compared),
            "------|-------|-----------|-----------|----------|---------|--------" + "".join(f"-|-{'-' * widths[n]}" for n in compared)]

    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{100 * value:.2f}%"

    def cell(shadow: dict | None) -> str:
        return "-" if shadow is None or not shadow["kept"] else f"{pct(shadow['precision'])} ({shadow['kept']})"

    for r in result.rounds:
        imb = "-" if math.isnan(r.imbalance) else f"{r.imbalance:9.2f}"
        rows.append(f"{r.round:5d} | {r.kept:5d} | {pct(r.precision):>9s} | {imb:>9s} | {100 * r.test_acc:7.2f}% | "
                    f"{r.n_train:7d} | {r.seconds:7.1f}" + "".join(f" | {cell(r.shadows.get(n)):>{widths[n]}s}" for n in compared))
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.data import load_dataset
    from metaerr_edge.models import FitConfig, available_bases
    from metaerr_edge.semisup import create_selector, run_pseudo_labelling, sample_labelled

    from metaerr_edge._fileio import writable_file

    out = writable_file(args.out)  # refused now, not after hours of training
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise ConfigError(f"-o {args.out!r}: {ancestor} is not a writable folder, so the result could not be written "
                          "after the run; choose another path")
    if args.arch not in available_bases():
        raise ConfigError(f"--arch {args.arch!r} is not a registered base architecture; choose one of {available_bases()}")
    selector = create_selector(args.selector, **_selector_options(args))
    compare = {name: create_selector(name, **_selector_options(args, name)) for name in dict.fromkeys(args.compare)}
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
        min_steps=args.min_steps, progress=not args.quiet, shadows=compare,
    )  # fmt: skip
    print(f"{args.dataset}: {result.n_labelled} labelled, pool {result.n_pool}, test {result.n_test}, selector {result.selector}")
    print(format_table(result))
    write_json(out, {"dataset": args.dataset, **result.to_dict()}, indent=1,
               reasons={"precision": "no pseudo-labels kept in this round (round 0 keeps none)"})
    print(f"wrote {out}")
    return 0
