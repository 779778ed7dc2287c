"""Option value types: how a setting is read from text, and refused while parsing if it is wrong.

Each function takes the raw string and returns the value or raises ``argparse.ArgumentTypeError``,
which argparse prints as ``metaerr-edge CMD: error: argument --x: ...`` (exit code 2, one line) before
any work starts. The commands use them, and :mod:`metaerr_edge.config` names them beside each field
whose command-line option they parse. Torch-free.
"""

from __future__ import annotations

import argparse
import math
import re

_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


#: The largest count any option takes: past it a typo (an extra zero or three) would run for days.
MAX_COUNT = 1_000_000_000
MAX_SEED = 2**31 - 1  # what numpy, torch and every worker's RNG accept alike
MAX_BATCH = 65536  # the fused graph's dynamic batch axis is exported up to this size


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int(text, 1)


def fold_count(text: str) -> int:
    """Cross-fitting folds: an integer from 2 to 100."""
    return _int(text, 2, 100)


def seed(text: str) -> int:
    """A seed: an integer from 0 to 2**31 - 1."""
    return _int(text, 0, MAX_SEED)


def batch_size(text: str) -> int:
    """A batch size: an integer from 1 to 65536."""
    return _int(text, 1, MAX_BATCH)


def at_most(high: int):
    """An integer type from 1 to ``high`` (a bound that keeps a typo from running for days)."""

    def check(text: str) -> int:
        return _int(text, 1, high)

    check.__name__ = f"int_1_to_{high}"
    return check


def round_count(text: str) -> int:
    """Rounds: an integer from 0 to 1000."""
    return _int(text, 0, 1000)


def view_count(text: str) -> int:
    """Corrupted views per image: an integer from 0 to 16."""
    return _int(text, 0, 16)


def seconds(text: str) -> float:
    """A duration in seconds, from 0 to one hour."""
    return _float(text, lambda v: 0 <= v <= 3600, "a number of seconds from 0 to 3600")


EPOCHS = at_most(100_000)


def name(text: str) -> str:
    """A non-empty name (an empty string would quietly mean 'the default')."""
    value = str(text).strip()
    if not value:
        raise argparse.ArgumentTypeError("expected a name, got an empty string (leave the option out for its default)")
    return value


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
    """``"1,8,32"`` -> ``(1, 8, 32)``: comma-separated batch sizes (1 to 65536), duplicates dropped."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p.isdigit() or not 1 <= int(p) <= MAX_BATCH for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers from 1 to {MAX_BATCH} (e.g. 1,8,32), "
                                         f"got {text!r}")
    return tuple(dict.fromkeys(int(p) for p in parts))


def severity_list(text: str) -> tuple[int, ...]:
    """``"1,3,5"`` -> ``(1, 3, 5)``: corruption severities from 1 to 5, duplicates dropped."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(p not in ("1", "2", "3", "4", "5") for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated severities from 1 to 5 (e.g. 1,3,5), got {text!r}")
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


def _float(text: str, ok, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _int(text: str, low: int, high: int = MAX_COUNT) -> int:
    expected = f"an integer >= {low}" if high == MAX_COUNT else f"an integer from {low} to {high}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    if value > high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}; a larger value is almost surely a typo")
    return value
