"""``metaerr-edge quantize model.onnx --int8 --run RUN``: an INT8 (QDQ) or FP16 copy of the fused graph.

INT8 is calibrated on the run's meta_train images (never test); then, by default, the defer
threshold is fitted again on the deployed graph (``calibrate`` on the run's calibration split, with
the FP32 contract's target), because a threshold fitted in FP32 is not the reduced graph's.

    metaerr-edge quantize model.onnx --int8 --run RUN -o model.int8.onnx
    metaerr-edge verify model.int8.onnx --run RUN        # label agreement, score drift, AUROC, flips
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from metaerr_edge._fileio import dumps_json
from metaerr_edge.errors import ConfigError
from metaerr_edge.options import at_most, seed

CALIBRATION_SPLITS = ("meta_train", "base_train")
DEFAULT_CALIBRATION_N = 512


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("quantize", help="INT8 (QDQ, static) or FP16 copy of the fused graph, contract updated, "
                                        "threshold recalibrated on it")
    p.add_argument("model", help="FP32 fused .onnx written by `metaerr-edge export`")
    precision = p.add_mutually_exclusive_group(required=True)
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="ONNX Runtime static quantization in QDQ format (needs --run for calibration images)")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="FP16 weights and activations, float32 input and outputs (TensorRT 11, GPU ONNX Runtime)")
    p.add_argument("--run", default=None, help="the run folder the model was exported from: INT8 calibration images "
                                               "and the threshold recalibration")
    p.add_argument("-o", "--out", default=None, help="output .onnx (default: MODEL with .int8.onnx / .fp16.onnx)")
    p.add_argument("--target", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="INT8 flavour: onnxruntime (asymmetric activations) or tensorrt (symmetric, zero point 0, "
                        "as TensorRT requires) (default: %(default)s)")  # fmt: skip
    p.add_argument("--tail", default="float", choices=("float", "quantized"),
                   help="the score tail (softmax, meta head, sigmoid, defer comparison): kept in float32 (default) "
                        "or reduced like the rest")  # fmt: skip
    p.add_argument("--per-channel", action="store_true", help="INT8: per-output-channel weight scales")
    p.add_argument("--calibration-method", default="minmax", choices=("minmax", "entropy", "percentile"),
                   help="INT8 activation ranges (default: %(default)s)")
    p.add_argument("--calibration-split", default="meta_train", choices=CALIBRATION_SPLITS,
                   help="run split whose images set the INT8 ranges (default: %(default)s; calib stays for the "
                        "threshold, test is never used)")  # fmt: skip
    p.add_argument("--calibration-n", type=at_most(100_000), default=DEFAULT_CALIBRATION_N,
                   help="INT8 calibration images, a seeded sample of the split (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the calibration sample")
    p.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                   help="keep the FP32 threshold (not recommended: it is not the reduced graph's threshold)")
    p.add_argument("--allow-other-run", action="store_true",
                   help="use a run the model was NOT exported from (its splits may overlap the model's training data)")
    return p


def default_out(model: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (or ``.fp16.onnx``) beside it."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{precision}.onnx")


def calibration_images(run, contract, split: str, n: int, seed_: int) -> tuple[np.ndarray, dict]:
    """A seeded sample of ``n`` images of ``split`` in the graph's layout, and what it was."""
    from metaerr_edge.contract.spec import dataset_feed

    images, _ = run.split(split)
    if len(images) == 0:
        raise ConfigError(f"the run's {split} split is empty; pick --calibration-split "
                          f"{'base_train' if split == 'meta_train' else 'meta_train'}")
    take = np.sort(np.random.default_rng(seed_).permutation(len(images))[:n])
    return dataset_feed(contract.input, images[take]), {"split": split, "n": int(len(take)), "seed": int(seed_)}


def recalibration_target(threshold) -> dict:
    """The FP32 contract's threshold target, for fitting the reduced graph's own (coverage 0.9 when it had none)."""
    if threshold.method == "risk" and threshold.target_risk is not None:
        return {"risk": threshold.target_risk, "delta": threshold.delta}
    if threshold.target_coverage is not None:
        return {"coverage": threshold.target_coverage}
    return {"coverage": 0.9}


def run(args: argparse.Namespace) -> int:
    from metaerr_edge._fileio import writable_file
    from metaerr_edge.contract import read_contract

    out = Path(args.out) if args.out else default_out(args.model, args.precision)
    writable_file(out)
    if args.precision == "int8" and not args.run:
        raise ConfigError("--int8 needs calibration images for its activation ranges: pass --run RUN (the run the "
                          "model was exported from; its meta_train split is used, never test)")
    if args.precision == "fp16" and (args.per_channel or args.calibration_method != "minmax"):
        raise ConfigError("--per-channel and --calibration-method are INT8 settings; --fp16 has no calibration")
    contract = read_contract(args.model)
    run_ = None
    if args.run:
        from metaerr_edge.fuse.verify import check_origin
        from metaerr_edge.pipeline import load_run

        run_ = load_run(args.run)
        check_origin(run_, contract, str(args.model), allow_other_run=args.allow_other_run)
    from metaerr_edge.fuse.quantize import convert_fp16, quantize_int8

    if args.precision == "int8":
        images, source = calibration_images(run_, contract, args.calibration_split, args.calibration_n, args.seed)
        report = quantize_int8(args.model, out, images, target=args.target, per_channel=args.per_channel,
                               tail=args.tail, method=args.calibration_method, calibration_source=source)
    else:
        report = convert_fp16(args.model, out, tail=args.tail)
    result = {**report.to_dict(), "fp32_threshold": contract.threshold.value, "recalibrated": False}
    if args.recalibrate and run_ is not None:
        from metaerr_edge.commands.calibrate import calibrate_model

        target = recalibration_target(contract.threshold)
        try:
            choice = calibrate_model(out, run_, **target, allow_other_run=args.allow_other_run)
        except Exception as exc:  # e.g. no FP16 kernel in this ONNX Runtime build: the graph is written anyway
            from metaerr_edge.console import warn

            warn(f"wrote {out}, but could not recalibrate its threshold here ({type(exc).__name__}: {str(exc)[:200]}); "
                 f"it still holds the FP32 threshold. Calibrate it where it runs: metaerr-edge calibrate {out} "
                 f"--run {args.run} --coverage 0.9", name="metaerr_edge.quantize")
            result["recalibration_error"] = str(exc)[:300]
        else:
            result.update(recalibrated=True, threshold=choice.value, threshold_method=choice.method,
                          achieved_coverage=choice.achieved_coverage, target=target)
            print(f"recalibrated the threshold on the {args.precision} graph: {contract.threshold.value:.4g} (FP32) -> "
                  f"{choice.value:.4g}, calibration coverage {choice.achieved_coverage:.2%}", file=sys.stderr)
    elif not args.recalibrate or run_ is None:
        print(f"kept the FP32 threshold {contract.threshold.value:.4g}: recalibrate it on this graph with "
              f"`metaerr-edge calibrate {out} --run RUN --coverage 0.9`", file=sys.stderr)
    print(dumps_json(result, indent=2))
    return 0
