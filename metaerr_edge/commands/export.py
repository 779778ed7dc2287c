"""``metaerr-edge export RUN -o model.onnx``: base + MetaErr fused into one ONNX graph with its contract."""

from __future__ import annotations

import argparse

from metaerr_edge.options import name, unit_interval
from metaerr_edge._fileio import dumps_json


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer opset >= 13, got {text!r}") from None
    if value < 13:
        raise argparse.ArgumentTypeError(f"opset {value} is too old for the fused graph; use 13 or newer "
                                         "(the default, 18, is read by ONNX Runtime >= 1.14 and TensorRT 10)")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="fuse base + meta-model into one ONNX graph (or a Triton model repository)")
    p.add_argument("run", help="run folder written by `metaerr-edge train`")
    p.add_argument("-o", "--out", default="model.onnx", help="output .onnx, or a repository folder with --format triton")
    p.add_argument("--format", dest="fmt", default="onnx", choices=("onnx", "triton"))
    p.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"),
                   help="NCHW float32 in [0,1], or NHWC uint8 camera frames (default: %(default)s)")  # fmt: skip
    p.add_argument("--meta-mode", type=name, default=None,
                   help="which trained meta mode to deploy; its threshold and metrics go into the contract "
                        "(default: the run's first)")  # fmt: skip
    p.add_argument("--threshold", type=unit_interval, default=None,
                   help="defer threshold (default: 90%% coverage on calib for the deployed mode; refine with calibrate)")
    p.add_argument("--opset", type=_opset, default=None,
                   help="ONNX opset (default: 18); the default exporter writes 18 and newer, --legacy-exporter 13-20")
    p.add_argument("--legacy-exporter", action="store_true", help="use the TorchScript exporter instead of dynamo")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.fuse.export import DEFAULT_OPSET, check_opset, export_run
    from metaerr_edge.pipeline import load_run

    from metaerr_edge._fileio import writable_file

    opset = args.opset or DEFAULT_OPSET
    check_opset(opset)
    if args.fmt == "onnx":
        writable_file(args.out)  # a folder, a trailing slash, a device or a run's own file: refused first
    run_ = load_run(args.run)
    mode = run_.mode(args.meta_mode)
    report = export_run(run_, args.out, layout=args.layout, fmt=args.fmt, simplify=args.simplify,
                        threshold=args.threshold, opset=opset, dynamo=not args.legacy_exporter, mode=mode)  # fmt: skip
    contract = report.contract
    print(dumps_json({
        "path": str(report.path), "size_bytes": report.size_bytes, "seconds": round(report.seconds, 2),
        "opset": report.opset, "exporter": report.exporter, "simplified": report.simplified, "sha256": report.sha256,
        "meta_mode": mode, "threshold": contract.threshold.value if contract else None,
        "threshold_method": contract.threshold.method if contract else None,
    }, indent=2))  # fmt: skip
    return 0
