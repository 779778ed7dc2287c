"""Fit the defer threshold of a fused model file on its run's calibration split, and write it.

``calibrate_model`` is what ``metaerr-edge calibrate`` (and ``metaerr-edge quantize``, on the
reduced graph it wrote) runs: the graph's own failure scores on the run's calib split (ONNX Runtime
CPU), a threshold for a target coverage or a target risk with an SGR guarantee
(:mod:`metaerr_edge.decide`), written into the graph and its contract under one lock.

Example:
    >>> choice = calibrate_model("model.int8.onnx", load_run("runs/demo"), coverage=0.9)
    >>> choice.achieved_coverage
    0.8958
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaerr_edge.console import warn
from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError

__all__ = ["calibrate_model", "calibration_scores", "warn_if_degenerate"]


def calibration_scores(model: str, run, contract=None) -> tuple[np.ndarray, np.ndarray]:
    """The deployed graph's failure scores and error labels on the run's calibration split (ONNX Runtime CPU).

    A graph quantized for TensorRT is scored on its Q/DQ semantics (ONNX Runtime's graph optimisations
    off), which is what TensorRT computes, not on ONNX Runtime's x86 int8 kernels. ``contract``: the
    model's, when the caller has read it already.
    """
    from metaerr_edge.contract import read_contract
    from metaerr_edge.contract.spec import dataset_feed
    from metaerr_edge.runtime import open_session
    from metaerr_edge.runtime.ort_backend import CPU, emulates_qdq, open_ort_inference_session

    images, labels = run.split("calib")
    contract = contract if contract is not None else read_contract(model)
    feed = dataset_feed(contract.input, images)
    if emulates_qdq(contract):
        session = open_ort_inference_session(Path(model), [CPU], optimize=False, source=str(model))
        label, _, score, _ = session.run(None, {contract.input.name: feed})
        return np.asarray(score), error_labels(np.asarray(label), labels)
    with open_session(model, backend="onnxruntime") as session:
        pred = session.predict(feed)
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
        scores, is_error = calibration_scores(str(model), run, contract)
        if coverage is not None:
            choice = threshold_for_coverage(scores, is_error, coverage)
        else:
            choice = threshold_for_risk(scores, is_error, risk, 0.05 if delta is None else delta)
        warn_if_degenerate(choice, scores)
        set_threshold(model, choice.to_spec(), out, fitted_on_this_graph=True)
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
