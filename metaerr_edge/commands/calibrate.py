"""``metaerr-edge calibrate model.onnx --run RUN``: choose the deferral threshold and write it into the graph."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from metaerr_edge.options import fraction
from metaerr_edge.data.labels import error_labels
from metaerr_edge.console import warn
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


def calibration_scores(model: str, run) -> tuple[np.ndarray, np.ndarray]:
    """The deployed graph's failure scores and error labels on the run's calibration split (ONNX Runtime CPU)."""
    from metaerr_edge.contract.spec import dataset_feed
    from metaerr_edge.runtime import open_session

    images, labels = run.split("calib")
    with open_session(model, backend="onnxruntime") as session:
        pred = session.predict(dataset_feed(session.contract.input, images))
    return pred.failure_score, error_labels(pred.label, labels)


def calibrate_model(model: str | Path, run, *, coverage: float | None = None, risk: float | None = None,
                    delta: float | None = None, out: str | Path | None = None, allow_other_run: bool = False):
    """Fit the defer threshold of ``model`` on ``run``'s calibration split and write it (into ``out``,
    else in place); returns the :class:`~metaerr_edge.decide.ThresholdChoice`.

    One writer from reading the model to writing the threshold: a second calibrate fails at once.
    """
    from metaerr_edge._fileio import path_lock
    from metaerr_edge.contract import read_contract
    from metaerr_edge.decide import threshold_for_coverage, threshold_for_risk
    from metaerr_edge.fuse.modelfile import set_threshold
    from metaerr_edge.fuse.verify import check_origin

    if (coverage is None) == (risk is None):
        raise ConfigError("pass exactly one of a target coverage or a target risk")
    with path_lock(Path(out or model)):
        contract = read_contract(model)
        check_origin(run, contract, str(model), allow_other_run=allow_other_run)
        scores, is_error = calibration_scores(str(model), run)
        if coverage is not None:
            choice = threshold_for_coverage(scores, is_error, coverage)
        else:
            choice = threshold_for_risk(scores, is_error, risk, 0.05 if delta is None else delta)
        warn_if_degenerate(choice, scores)
        set_threshold(model, choice.to_spec(), out)
    return choice


def warn_if_degenerate(choice, scores: np.ndarray) -> str | None:
    """Warn (and return the message) when the chosen threshold defers (nearly) everything."""
    accepted = float(np.mean(scores <= choice.value))
    if not choice.feasible:
        message = (f"no threshold meets the target on {len(scores)} calibration samples ({choice.method}); the "
                   f"model now defers {1 - accepted:.1%} of them. Use more calibration data or a looser target.")
    elif accepted == 0.0:
        message = (f"the threshold {choice.value:.6g} accepts none of the {len(scores)} calibration samples, so the "
                   "device would defer everything. Use a looser target or more calibration data.")
    else:
        return None
    warn(message, name="metaerr_edge.calibrate")
    return message


def run(args: argparse.Namespace) -> int:
    from metaerr_edge._fileio import writable_file
    from metaerr_edge.pipeline import load_run

    if args.delta is not None and args.risk is None:
        raise ConfigError("--delta belongs to --risk (the SGR guarantee's failure probability); --coverage has none")
    if args.out:
        writable_file(args.out)  # a folder, a device or a run's own file: refused before any work
    choice = calibrate_model(args.model, load_run(args.run), coverage=args.coverage, risk=args.risk, delta=args.delta,
                             out=args.out, allow_other_run=args.allow_other_run)
    print(dumps_json({"model": str(args.out or args.model), **asdict(choice)}, indent=2))
    return 0
