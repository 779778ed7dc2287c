"""``metaerr-edge predict model.onnx PATH...``: label, failure score and decision per image, as JSON lines.

Runtime-only: needs numpy, onnxruntime and pillow (no torch). Images whose size differs from the
model's input are refused unless ``--resize`` asks for a bilinear resize.
"""

from __future__ import annotations

import argparse
import sys

from metaerr_edge.options import batch_size
from metaerr_edge._fileio import dumps_json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="run the fused graph on image files or folders; one JSON line per image")
    p.add_argument("model", help="fused .onnx")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, onnxruntime-cuda, onnxruntime (default: %(default)s)")
    p.add_argument("--batch-size", type=batch_size, default=32, help="images per run of the graph (default: %(default)s)")
    p.add_argument("--resize", action="store_true",
                   help="resize images of another size to the model's input (bilinear); without it they are refused")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.contract import read_contract
    from metaerr_edge.runtime import open_session
    from metaerr_edge.runtime.images import load_images

    # The images first (the contract says how to read them): a bad input is the only line on stderr.
    images, files = load_images(args.paths, read_contract(args.model), resize=args.resize)
    with open_session(args.model, backend=args.backend) as session:
        if not session.fallback_report:  # after fallbacks the session's one warning line said where it runs
            print(f"running on {session.backend} ({', '.join(session.providers)})", file=sys.stderr)
        classes = session.contract.classes
        step = min(args.batch_size, session.max_batch or args.batch_size)
        for start in range(0, len(files), step):
            pred = session.predict(images[start : start + step])
            for i, path in enumerate(files[start : start + step]):
                print(dumps_json({
                    "path": str(path), "label": int(pred.label[i]), "class": classes[int(pred.label[i])],
                    "failure_score": round(float(pred.failure_score[i]), 6),
                    "decision": "DEFER" if bool(pred.defer[i]) else "ACCEPT",
                }), flush=False)  # fmt: skip
    sys.stdout.flush()
    return 0
