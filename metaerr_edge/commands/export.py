"""``metaerr-edge export RUN -o model.onnx``: base + MetaErr fused into one ONNX graph with its contract."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="fuse base + meta-model into one ONNX graph (or a Triton model repository)")
    p.add_argument("run", help="run folder written by `metaerr-edge train`")
    p.add_argument("-o", "--out", default="model.onnx", help="output .onnx, or a repository folder with --format triton")
    p.add_argument("--format", dest="fmt", default="onnx", choices=("onnx", "triton"))
    p.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"),
                   help="NCHW float32 in [0,1], or NHWC uint8 camera frames (default: %(default)s)")  # fmt: skip
    p.add_argument("--meta-mode", default=None, help="which trained meta mode to deploy (default: the run's first)")
    p.add_argument("--threshold", type=float, default=None, help="defer threshold (default: 90%% coverage on calib; refine with calibrate)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's pinned default)")
    p.add_argument("--legacy-exporter", action="store_true", help="use the TorchScript exporter instead of dynamo")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    return p


class _ModeRun:
    """A run whose deployed meta mode is overridden (export_run reads only contract() and fused())."""

    def __init__(self, run, mode: str) -> None:
        self._run, self._mode = run, mode

    def contract(self, layout: str = "NCHW"):
        return self._run.contract(layout=layout, mode=self._mode)

    def fused(self, threshold: float | None = None, layout: str = "NCHW"):
        return self._run.fused(threshold=threshold, layout=layout, mode=self._mode)


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.fuse.export import DEFAULT_OPSET, export_run
    from metaerr_edge.pipeline import load_run

    run_ = load_run(args.run)
    target = _ModeRun(run_, args.meta_mode) if args.meta_mode else run_
    report = export_run(target, args.out, layout=args.layout, fmt=args.fmt, simplify=args.simplify,
                        threshold=args.threshold, opset=args.opset or DEFAULT_OPSET, dynamo=not args.legacy_exporter)  # fmt: skip
    print(json.dumps({
        "path": str(report.path), "size_bytes": report.size_bytes, "seconds": round(report.seconds, 2),
        "opset": report.opset, "exporter": report.exporter, "simplified": report.simplified, "sha256": report.sha256,
        "threshold": report.contract.threshold.value if report.contract else None,
    }, indent=2))  # fmt: skip
    return 0
