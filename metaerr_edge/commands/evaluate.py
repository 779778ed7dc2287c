"""``metaerr-edge evaluate RUN``: every failure score's metrics as Markdown + JSON, and a risk-coverage plot."""

from __future__ import annotations

import argparse

from metaerr_edge.options import at_most, name_list


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="failure-prediction metrics of MetaErr and the baselines on a run's test split")
    p.add_argument("run", help="run folder written by `metaerr-edge train`")
    p.add_argument("--scores", type=name_list, default=None, help="comma list, e.g. msp,entropy,metaerr[probs] (default: all)")
    p.add_argument("--n-boot", type=at_most(100_000), default=1000, help="bootstrap resamples for the CIs (default: %(default)s)")
    p.add_argument("-o", "--out", default=None, help="folder for metrics.{json,md} and risk_coverage.png (default: the run folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is drawn on a terminal only)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.evaluate import evaluate_run, write_report
    from metaerr_edge.pipeline import load_run

    run_ = load_run(args.run)
    scores = list(args.scores) if args.scores else None
    report = evaluate_run(run_, scores, n_boot=args.n_boot, progress=not args.quiet)
    paths = write_report(report, args.out or run_.path)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
