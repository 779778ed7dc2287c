"""Argument types shared by the commands: a bad value is refused while parsing (exit code 2, one line).

Each function takes the raw string and returns the value or raises ``argparse.ArgumentTypeError``,
which argparse prints as ``metaerr-edge CMD: error: argument --x: ...`` before any work starts.
Torch-free.
"""

from __future__ import annotations

import argparse
import math
import re

_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int(text, 1)


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    return _int(text, 0)


def fold_count(text: str) -> int:
    """Cross-fitting folds: an integer >= 2."""
    return _int(text, 2)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _float(text, lambda v: v > 0, "a finite number > 0")


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (e.g. seconds of warm-up)."""
    return _float(text, lambda v: v >= 0, "a finite number >= 0")


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    return _float(text, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def unit_interval(text: str) -> float:
    """A number in [0, 1] (a threshold on the failure score, an accuracy)."""
    return _float(text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


#: More intra-op threads than this is a typo, not a machine (ONNX Runtime would try to start them all).
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """A thread count: an integer from 1 to 1024."""
    value = _int(text, 1)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {text!r}")
    return value


def device_name(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (whether CUDA is present is checked when the command runs)."""
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``: comma-separated integers >= 1, duplicates dropped."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p.isdigit() or int(p) < 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 1,8,32), got {text!r}")
    return tuple(dict.fromkeys(int(p) for p in parts))


def name_list(text: str) -> tuple[str, ...]:
    """``"probs,mentor"`` -> ``("probs", "mentor")``: non-empty, no duplicates."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise argparse.ArgumentTypeError(f"{text!r} names {dupes} more than once")
    return tuple(names)


def add_fit_options(p: argparse.ArgumentParser, pool_help: str) -> None:
    """The options every training command (train, demo, ssl) shares, with one meaning each."""
    p.add_argument("--batch-size", type=positive_int, default=128, help="training batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="learning rate (default: %(default)s)")
    p.add_argument("--max-pool", type=positive_int, default=None, help=pool_help)
    p.add_argument("--max-test", type=positive_int, default=None, help="cap the test split at this many images")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of splits, initial weights and data order (default: %(default)s)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are drawn on a terminal only)")


def _float(text: str, ok, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value
