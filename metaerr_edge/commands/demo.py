"""``metaerr-edge demo``: the main job on the embedded digits, end to end (train, evaluate, table)."""

from __future__ import annotations

import argparse
import time

from metaerr_edge.commands.train import add_train_options
from metaerr_edge.config import META_MODES


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train + evaluate MetaErr (every input mode) vs MSP and entropy on digits")
    add_train_options(p, modes=META_MODES)
    p.add_argument("-o", "--out", default="runs/demo", help="run folder (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.commands.train import check_run_folder
    from metaerr_edge.config import config_from_args
    from metaerr_edge.evaluate import evaluate_run, write_report
    from metaerr_edge.pipeline import train_run

    t0 = time.perf_counter()
    out = check_run_folder(args.out)
    config = config_from_args(args)
    print(f"training {config.base.arch} on {config.data.dataset} ({config.meta.labels}, {config.meta.folds} folds) "
          f"and MetaErr in modes {', '.join(config.meta.modes)} ...")  # fmt: skip
    run_ = train_run(config, out, progress=not args.quiet)
    scores = [f"metaerr[{m}]" for m in config.meta.modes] + ["msp", "entropy", "doctor-gini"]
    report = evaluate_run(run_, scores, progress=not args.quiet)
    paths = write_report(report, run_.path)
    print(report.to_markdown())
    print(f"run folder: {run_.path} (plot: {paths['png']})")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0
