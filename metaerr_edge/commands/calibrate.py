"""``metaerr-edge calibrate model.onnx --run RUN``: choose the deferral threshold and write it into the graph."""

from __future__ import annotations

import argparse
import json

import numpy as np

from metaerr_edge.errors import ConfigError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate",
        help="pick the defer threshold on the calibration split (target coverage, or target risk with an SGR guarantee)",
    )
    p.add_argument("model", help="fused .onnx written by `metaerr-edge export`")
    p.add_argument("--run", required=True, help="the run folder the model came from (its calib split is used)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--coverage", type=float, help="accept this fraction, e.g. 0.9")
    target.add_argument("--risk", type=float, help="target selective risk r*, e.g. 0.02 (SGR, Clopper-Pearson)")
    p.add_argument("--delta", type=float, default=0.05, help="SGR: the guarantee holds with probability 1-delta (default: %(default)s)")
    p.add_argument("-o", "--out", default=None, help="write a calibrated copy here instead of updating MODEL in place")
    return p


def calibration_scores(model: str, run) -> tuple[np.ndarray, np.ndarray]:
    """The deployed graph's failure scores and error labels on the run's calibration split (ONNX Runtime CPU)."""
    from metaerr_edge.runtime import open_session

    images, labels = run.split("calib")
    with open_session(model, backend="onnxruntime") as session:
        x = images.astype(np.float32) / 255.0 if session.contract.input.layout == "NCHW" else images.transpose(0, 2, 3, 1)
        pred = session.predict(np.ascontiguousarray(x))
    return pred.failure_score, (pred.label != labels).astype(np.int64)


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.decide import threshold_for_coverage, threshold_for_risk
    from metaerr_edge.fuse.modelfile import read_contract, set_threshold
    from metaerr_edge.pipeline import load_run

    run_ = load_run(args.run)
    contract = read_contract(args.model)
    if tuple(contract.classes) != tuple(run_.classes):
        raise ConfigError(f"{args.model} has classes {list(contract.classes)[:5]}... but run {args.run} has "
                          f"{list(run_.classes)[:5]}...; calibrate a model with the run it was exported from")  # fmt: skip
    scores, is_error = calibration_scores(args.model, run_)
    if args.coverage is not None:
        choice = threshold_for_coverage(scores, is_error, args.coverage)
    else:
        choice = threshold_for_risk(scores, is_error, args.risk, args.delta)
    if not choice.feasible:
        print(f"warning: no threshold meets the target on {len(scores)} calibration samples ({choice.method}); "
              "the model will defer (nearly) everything. Use more calibration data or a looser target.")  # fmt: skip
    set_threshold(args.model, choice.to_spec(), args.out)
    print(json.dumps({"model": str(args.out or args.model), **vars(choice)}, indent=2, default=str))
    return 0
