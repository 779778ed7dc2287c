"""``metaerr-edge verify model.onnx``: ONNX Runtime vs the PyTorch reference; non-zero exit on a parity failure."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="parity of the fused graph (ONNX Runtime) against PyTorch on the same inputs")
    p.add_argument("model", help="fused .onnx")
    p.add_argument("--run", required=True, help="the run folder it was exported from (the PyTorch reference)")
    p.add_argument("-n", type=int, default=512, help="test images per batch size (default: %(default)s)")
    p.add_argument("--batch-sizes", default="1,7,64", help="comma list (default: %(default)s)")
    p.add_argument("--atol", type=float, default=1e-5, help="failure-score tolerance (default: %(default)s)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON here")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.fuse.verify import verify_run
    from metaerr_edge.pipeline import atomic_write_text, load_run

    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    report = verify_run(args.model, load_run(args.run), n=args.n, atol=args.atol, batch_sizes=batch_sizes)
    print(report.to_markdown())
    if args.json_out:
        from pathlib import Path

        atomic_write_text(Path(args.json_out), json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if report.passed else 1
