"""``metaerr-edge evaluate RUN``: every failure score's metrics as Markdown + JSON, and a risk-coverage plot.

``--shift``: the same scores on the test split under each corruption family and severity, and on the
out-of-distribution sets (counted as failures), with what each score's calibrated threshold does
there: shift.json, shift.md and shift.png.
"""

from __future__ import annotations

import argparse

from metaerr_edge.errors import ConfigError
from metaerr_edge.options import at_most, fraction, name_list, positive_int, severity_list


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="failure-prediction metrics of MetaErr and the baselines on a run's test split")
    p.add_argument("run", help="run folder written by `metaerr-edge train`")
    p.add_argument("--scores", type=name_list, default=None, help="comma list, e.g. msp,entropy,metaerr[probs] (default: all)")
    p.add_argument("--n-boot", type=at_most(100_000), default=None, help="bootstrap resamples for the CIs (default: 1000)")
    p.add_argument("-o", "--out", default=None, help="folder for metrics.{json,md} and risk_coverage.png (default: the run folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is drawn on a terminal only)")
    shift = p.add_argument_group("under shift (--shift)")
    shift.add_argument("--shift", action="store_true",
                       help="evaluate on corrupted and out-of-distribution copies of the test split instead (shift.*)")
    shift.add_argument("--families", choices=("test", "validation"), default=None,
                       help="corruption families: test (reported only) or validation (the ones choices may look at); "
                            "default: test")  # fmt: skip
    shift.add_argument("--severities", type=severity_list, default=None, help="comma list of 1-5 (default: 1,2,3,4,5)")
    shift.add_argument("--no-ood", action="store_true", help="leave out the out-of-distribution sets")
    shift.add_argument("--root", default=None,
                       help="data root of the OOD datasets (default: the run's data root; the run's own test split "
                            "always comes from the run's data root)")
    shift.add_argument("--max-n", type=positive_int, default=None,
                       help="use at most this many test images (an OOD set adds as many OOD images to them)")
    shift.add_argument("--coverage", type=fraction, default=None,
                       help="calibration coverage of each score's threshold (default: 0.9)")
    return p


#: The options that only --shift uses (given without it, they would silently do nothing: refused).
SHIFT_ONLY = ("families", "severities", "no_ood", "root", "max_n", "coverage")


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.evaluate import evaluate_run, write_report
    from metaerr_edge.pipeline import load_run

    given = [f"--{k.replace('_', '-')}" for k in SHIFT_ONLY if getattr(args, k) not in (None, False)]
    if given and not args.shift:
        raise ConfigError(f"{', '.join(given)} only apply with --shift; add --shift or leave them out")
    if args.shift and args.n_boot is not None:
        raise ConfigError("--n-boot sets the confidence intervals of the clean evaluation; --shift reports no intervals")
    run_ = load_run(args.run)
    scores = list(args.scores) if args.scores else None
    if args.shift:
        return _run_shift(args, run_, scores)
    report = evaluate_run(run_, scores, n_boot=1000 if args.n_boot is None else args.n_boot, progress=not args.quiet)
    paths = write_report(report, args.out or run_.path)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_shift(args: argparse.Namespace, run_, scores: list[str] | None) -> int:
    from metaerr_edge.shift_eval import evaluate_shift, write_shift_report

    given = {k: v for k, v in (("severities", args.severities), ("coverage", args.coverage)) if v is not None}
    report = evaluate_shift(run_, scores, group=args.families or "test", ood=not args.no_ood, root=args.root,
                            max_n=args.max_n, progress=not args.quiet, **given)  # evaluate_shift's defaults otherwise
    paths = write_shift_report(report, args.out or run_.path)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
