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
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (e.g. seconds of warm-up)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


#: More intra-op threads than this is a typo, not a machine (ONNX Runtime would try to start them all).
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """A thread count: an integer from 1 to 1024."""
    value = _int(text, 1)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (a threshold on the failure score)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] (failure scores lie there), got {text!r}")
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


def _int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value
