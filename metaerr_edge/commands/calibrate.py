"""``metaerr-edge calibrate model.onnx --run RUN``: choose the deferral threshold and write it into the graph."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from metaerr_edge.options import fraction
from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import dumps_json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate",
        help="pick the defer threshold on the calibration split (target coverage, or target risk with an SGR guarantee)",
    )
    p.add_argument("model", help="fused .onnx written by `metaerr-edge export`")
    p.add_argument("--run", required=True, help="the run folder the model came from (its calib split is used)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--coverage", type=fraction, help="accept this fraction, e.g. 0.9")
    target.add_argument("--risk", type=fraction, help="target selective risk r*, e.g. 0.02 (SGR, Clopper-Pearson)")
    p.add_argument("--delta", type=fraction, default=None,
                   help="with --risk (SGR): the guarantee holds with probability 1-delta (default: 0.05)")
    p.add_argument("-o", "--out", default=None, help="write a calibrated copy here instead of updating MODEL in place")
    p.add_argument("--allow-other-run", action="store_true",
                   help="calibrate on a run the model was NOT exported from: its calibration split may hold images "
                        "the model trained on, so the threshold is optimistic and the risk guarantee does not hold")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge._fileio import writable_file
    from metaerr_edge.fuse.calibrate import calibrate_model
    from metaerr_edge.pipeline import load_run

    if args.delta is not None and args.risk is None:
        raise ConfigError("--delta belongs to --risk (the SGR guarantee's failure probability); --coverage has none")
    if args.out:
        writable_file(args.out)  # a folder, a device or a run's own file: refused before any work
    choice = calibrate_model(args.model, load_run(args.run), coverage=args.coverage, risk=args.risk, delta=args.delta,
                             out=args.out, allow_other_run=args.allow_other_run)
    print(dumps_json({"model": str(args.out or args.model), **asdict(choice)}, indent=2))
    return 0
