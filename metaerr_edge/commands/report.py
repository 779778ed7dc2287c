"""``metaerr-edge report RUN``: one self-contained HTML page of a run, to read and to share.

The run's evaluation (and its shift evaluation and trade-off sweep, when the run folder has them),
a bench JSON (``--bench``) and the fused model's contract (``--model``), each a section with a short
"how to read this". Figures are embedded; the file needs no network and no JavaScript.
"""

from __future__ import annotations

import argparse
import time


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="one self-contained HTML page: metrics, curves, shift, latency, trade-off, contract")
    p.add_argument("run", help="run folder written by `metaerr-edge train` and evaluated by `metaerr-edge evaluate`")
    p.add_argument("--bench", default=None, help="bench JSON of `metaerr-edge bench` (adds the latency section)")
    p.add_argument("--tradeoff", default=None,
                   help="folder written by `metaerr-edge tradeoff` (default: RUN/tradeoff when it exists)")
    p.add_argument("--model", default=None, help="fused .onnx of `metaerr-edge export` (adds its contract)")
    p.add_argument("-o", "--out", default=None, help="the HTML file to write (default: RUN/report.html)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.report import write_report_html

    t0 = time.perf_counter()
    path = write_report_html(args.run, args.out, bench=args.bench, tradeoff=args.tradeoff, model=args.model)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s): open it in any browser")
    return 0
