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

from metaerr_edge._fileio import dumps_json
from metaerr_edge.errors import ConfigError, MetaErrError
from metaerr_edge.options import at_most, seed

CALIBRATION_SPLITS = ("meta_train", "base_train")  # calib fits the threshold; test is never used
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
    p.add_argument("--target", default=None, choices=("onnxruntime", "tensorrt"),
                   help="INT8 flavour: onnxruntime (uint8 asymmetric activations) or tensorrt (int8 symmetric, zero "
                        "point 0, as TensorRT requires) (default: onnxruntime)")  # fmt: skip
    p.add_argument("--tail", default="float", choices=("float", "quantized"),
                   help="the score tail (softmax, meta head, sigmoid, defer comparison): kept in float32 (default) "
                        "or reduced like the rest")  # fmt: skip
    p.add_argument("--per-channel", action="store_true", help="INT8: per-output-channel weight scales")
    p.add_argument("--reduce-range", default=None, action=argparse.BooleanOptionalAction,
                   help="INT8: 7-bit weights, so that x86 CPUs without AVX-512 VNNI do not saturate in ONNX Runtime's "
                        "int8 kernels (default: on for --target onnxruntime, off for tensorrt; benchmarks/README.md)")
    p.add_argument("--calibration-method", default=None, choices=("minmax", "entropy", "percentile"),
                   help="INT8 activation ranges (default: minmax)")
    p.add_argument("--calibration-split", default=None, choices=CALIBRATION_SPLITS,
                   help="run split whose images set the INT8 ranges (default: meta_train; calib stays for the "
                        "threshold, test is never used)")  # fmt: skip
    p.add_argument("--calibration-n", type=at_most(100_000), default=None,
                   help=f"INT8 calibration images, a seeded sample of the split (default: {DEFAULT_CALIBRATION_N})")
    p.add_argument("--seed", type=seed, default=None, help="seed of the calibration sample (default: 0)")
    p.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                   help="keep the FP32 threshold (not recommended: it is not the reduced graph's threshold)")
    p.add_argument("--allow-other-run", action="store_true",
                   help="use a run the model was NOT exported from (its splits may overlap the model's training data)")
    return p


def default_out(model: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (or ``.fp16.onnx``) beside it."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{precision}.onnx")


def run(args: argparse.Namespace) -> int:
    from metaerr_edge._fileio import writable_file
    from metaerr_edge.contract import read_contract

    out = Path(args.out) if args.out else default_out(args.model, args.precision)
    writable_file(out)
    if args.precision == "int8" and not args.run:
        raise ConfigError("--int8 needs calibration images for its activation ranges: pass --run RUN (the run the "
                          "model was exported from; its meta_train split is used, never test)")
    int8_only = {"--target": args.target, "--per-channel": args.per_channel or None,
                 "--[no-]reduce-range": args.reduce_range,
                 "--calibration-method": args.calibration_method, "--calibration-split": args.calibration_split,
                 "--calibration-n": args.calibration_n, "--seed": args.seed}
    given = [flag for flag, value in int8_only.items() if value is not None]
    if args.precision == "fp16" and given:
        raise ConfigError(f"{', '.join(given)}: INT8 settings; --fp16 has no calibration and one flavour "
                          "(drop them, or use --int8)")
    contract = read_contract(args.model)
    run_ = None
    if args.run:
        from metaerr_edge.fuse.verify import check_origin
        from metaerr_edge.pipeline import load_run

        run_ = load_run(args.run)
        check_origin(run_, contract, str(args.model), allow_other_run=args.allow_other_run)
    from metaerr_edge.fuse.quantize import calibration_images, convert_fp16, quantize_int8, recalibration_target

    if args.precision == "int8":
        images, source = calibration_images(run_, contract, args.calibration_split or "meta_train",
                                            args.calibration_n or DEFAULT_CALIBRATION_N, args.seed or 0)
        report = quantize_int8(args.model, out, images, target=args.target or "onnxruntime",
                               per_channel=args.per_channel, reduce_range=args.reduce_range, tail=args.tail,
                               method=args.calibration_method or "minmax",
                               calibration_source=source)
    else:
        report = convert_fp16(args.model, out, tail=args.tail)
    result = {**report.to_dict(), "fp32_threshold": contract.threshold.value, "recalibrated": False}
    if args.recalibrate and run_ is not None:
        from metaerr_edge.fuse.calibrate import calibrate_model

        target = recalibration_target(contract.threshold)
        try:
            choice = calibrate_model(out, run_, **target, allow_other_run=args.allow_other_run)
        except MetaErrError as exc:  # e.g. no FP16 kernel in this ONNX Runtime build: the graph is written anyway
            from metaerr_edge.console import warn

            warn(f"wrote {out}, but could not recalibrate its threshold here ({type(exc).__name__}: {str(exc)[:200]}); "
                 f"it still holds the FP32 threshold. Calibrate it where it runs: metaerr-edge calibrate {out} "
                 f"--run {args.run} --coverage 0.9", name="metaerr_edge.quantize")
            result["recalibration_error"] = str(exc)[:300]
            print(dumps_json(result, indent=2))
            return 1  # the graph is complete and valid, but not what was asked: its threshold is FP32's
        else:
            result.update(recalibrated=True, threshold=choice.value, threshold_method=choice.method,
                          achieved_coverage=choice.achieved_coverage, target=target)
            print(f"recalibrated the threshold on the {args.precision} graph: {contract.threshold.value:.4g} (FP32) -> "
                  f"{choice.value:.4g}, calibration coverage {choice.achieved_coverage:.2%}", file=sys.stderr)
    else:
        print(f"kept the FP32 threshold {contract.threshold.value:.4g}: recalibrate it on this graph with "
              f"`metaerr-edge calibrate {out} --run RUN --coverage 0.9`", file=sys.stderr)
    print(dumps_json(result, indent=2))
    return 0
