"""``metaerr-edge verify model.onnx --run RUN``: ONNX Runtime vs the PyTorch reference; exit 1 on a failure.

An FP32 graph gets the parity check (labels equal, scores within ``--atol``, same decisions); a
reduced-precision one (``metaerr-edge quantize``) the precision report on the whole test split
(label agreement, score drift, defer flips, distinct scores, AUROC/AURC of both) against tolerances.
"""

from __future__ import annotations

import argparse

from metaerr_edge.options import at_most, int_list, nonneg_float, positive_float, unit_interval
from metaerr_edge._fileio import write_json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="parity of the fused graph (ONNX Runtime) against PyTorch on the same inputs")
    p.add_argument("model", help="fused .onnx (its meta mode, layout and threshold are read from its contract)")
    p.add_argument("--run", required=True, help="the run folder it was exported from (the PyTorch reference)")
    p.add_argument("-n", type=at_most(1_000_000), default=None,
                   help="test images (default: 512 per batch size for FP32 parity, the whole test split for INT8/FP16)")
    p.add_argument("--batch-sizes", type=int_list, default=(1, 7, 64), help="comma list (default: 1,7,64)")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="failure-score tolerance (default: %(default)s)")
    p.add_argument("--min-label-agreement", type=unit_interval, default=0.99,
                   help="INT8/FP16: least share of labels equal to FP32's (default: %(default)s)")
    p.add_argument("--max-auroc-drop", type=nonneg_float, default=0.005,
                   help="INT8/FP16: largest failure-prediction AUROC drop from FP32 (default: %(default)s)")
    p.add_argument("--json-out", default=None, help="also write the report as JSON to this file")
    p.add_argument("--allow-other-run", action="store_true",
                   help="compare with a run the model was NOT exported from (other splits or weights): parity then "
                        "says nothing about this model's own training")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.fuse.verify import verify_run
    from metaerr_edge._fileio import writable_file
    from metaerr_edge.pipeline import load_run

    if args.json_out:
        writable_file(args.json_out)  # a folder, a device or a run's own file: refused before the parity run
    from metaerr_edge.contract import read_contract
    from metaerr_edge.fuse.verify import verify_precision

    run_ = load_run(args.run)
    if read_contract(args.model).precision_name != "fp32":
        report = verify_precision(args.model, run_, n=args.n, min_label_agreement=args.min_label_agreement,
                                  max_auroc_drop=args.max_auroc_drop, allow_other_run=args.allow_other_run)
    else:
        report = verify_run(args.model, run_, n=512 if args.n is None else args.n, atol=args.atol,
                            batch_sizes=tuple(args.batch_sizes), allow_other_run=args.allow_other_run)
    print(report.to_markdown())
    if args.json_out:
        write_json(args.json_out, report.to_dict())
    return 0 if report.passed else 1
