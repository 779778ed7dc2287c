"""``metaerr-edge``: one subcommand per pipeline stage. Thin: each lives in ``metaerr_edge/commands/``.

    train -> evaluate -> export -> [quantize] -> verify -> calibrate -> predict -> bench -> tradeoff -> report   (+ demo, ssl, inspect)

Building the parser imports no heavy library: every command module keeps torch, onnx, scikit-learn
and matplotlib inside ``run``. So ``--help``, ``--version``, ``inspect``, ``predict`` and ``bench``
on ONNX Runtime work on a device with the core install alone (numpy, onnxruntime, pillow), and a
command that needs the training extras says so in one line.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from metaerr_edge import __version__
from metaerr_edge.errors import MetaErrError

# The one list of subcommands, in pipeline order: command name -> module in metaerr_edge.commands. Each
# module has ``add_parser(subparsers)`` and ``run(args) -> int``. (``ssl`` lives in ``semisup``: a module
# named ``ssl`` would shadow the standard library's when a file of this package is run as a script.)
COMMANDS = {name: name for name in ("demo", "train", "evaluate", "export", "quantize", "verify", "calibrate", "predict",
                                    "bench", "tradeoff", "report")} | {"ssl": "semisup", "inspect": "inspect_model"}

# Which pip extra brings a missing top-level module (anything else: the training extras).
_EXTRA_OF = {"onnxslim": "simplify", "tensorrt": "tensorrt", "cuda": "tensorrt", "pycuda": "pycuda"}
_TRAIN_MODULES = ("torch", "torchvision", "sklearn", "scipy", "onnx", "onnxscript", "matplotlib", "tqdm")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="metaerr-edge", allow_abbrev=False,
        description="A failure score for on-device image classifiers: train, evaluate, export, run, decide.",
    )
    parser.add_argument("--version", action="version", version=f"metaerr-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (e.g. every backend fallback)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"metaerr_edge.commands.{module_name}")
        p = module.add_parser(sub)
        p.allow_abbrev = False  # `--batch` is not `--batch-sizes`: a flag is spelled out or refused
        # -v also after the command name; SUPPRESS keeps a top-level -v from being reset.
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log debug messages")
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line for a missing optional library, with the pip command that installs it (None: not ours)."""
    top = (exc.name or "").split(".")[0]
    if top in _EXTRA_OF:
        extra = _EXTRA_OF[top]
    elif top in _TRAIN_MODULES:
        extra = "train"
    else:
        return None
    return (f"this command needs the '{extra}' extra (the Python module '{top}' is not installed). "
            f"Install it with: pip install 'metaerr-edge[{extra}]'")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for a usage error, printed in one line by argparse)."""
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # reported by the command's own parser, which names the command
            args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version (0) and usage errors (2): a code, not an exception
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` hands to torchrun
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("metaerr_edge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    prefix = f"metaerr-edge {args.command}: error:"
    try:
        return int(args._run(args) or 0)
    except MetaErrError as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metaerr-edge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `metaerr-edge predict ... | head -n 1`: the reader left; stop quietly, as cat does.
        _silence_stdout()
        return 141
    except (ModuleNotFoundError, OSError) as exc:  # a missing extra, a full disk: the user's to fix
        message = missing_extra_message(exc) if isinstance(exc, ModuleNotFoundError) else _os_error_message(exc)
        if message is None:
            raise
        print(f"{prefix} {message}", file=sys.stderr)
        return 2


#: errno -> what to do about it, for file-system faults that are the user's to fix (not bugs).
_OS_FIXES = {
    errno.ENOSPC: "free space on that disk, or choose another -o path",
    errno.EDQUOT: "free space in your quota, or choose another -o path",
    errno.EROFS: "the file system is read-only: choose a writable -o path",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EEXIST: "a file is in the way where a folder is needed: remove it, or choose another path",
    errno.ENOTDIR: "a file is in the way where a folder is needed: remove it, or choose another path",
    errno.EISDIR: "a folder is in the way where a file is needed: choose a file path",
    errno.EBUSY: "the path is busy (a mount point, or in use): choose another path",
    errno.ENOENT: "a folder on the way does not exist and cannot be created there: choose another path",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter path",
    errno.EXDEV: "it cannot be replaced across file systems (a mount point?): choose a path inside one",
}


def _os_error_message(exc: OSError) -> str | None:
    """One line for a file-system fault (disk full, read-only, permissions, a file in the way), else None."""
    fix = _OS_FIXES.get(exc.errno)
    if fix is None:
        return None
    where = f" {exc.filename!r}" if exc.filename else ""
    return f"cannot use{where}: {exc.strerror or exc}; {fix}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
