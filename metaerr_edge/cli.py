"""``metaerr-edge``: one subcommand per pipeline stage. Thin: each lives in ``metaerr_edge/commands/``.

    train -> evaluate -> export -> verify -> calibrate -> predict -> bench -> tradeoff   (+ demo, ssl)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from metaerr_edge.errors import MetaErrError

# The one list of subcommands, in pipeline order. Each module has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = ("demo", "train", "evaluate", "export", "verify", "calibrate", "predict", "bench", "tradeoff", "ssl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaerr-edge",
        description="A failure score for on-device image classifiers: train, evaluate, export, run, decide.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"metaerr_edge.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"metaerr_edge.commands.{name}":
                continue  # a stage not built into this version
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("metaerr_edge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args._run(args) or 0)
    except MetaErrError as exc:
        print(f"metaerr-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metaerr-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
