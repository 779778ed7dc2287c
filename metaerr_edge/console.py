"""What the package shows a person: progress bars (on a terminal only) and warnings.

Progress bars are drawn only when stderr is a terminal: tqdm redraws with carriage returns, which
turn a log file or a CI log into hundreds of half lines. ``METAERR_EDGE_PROGRESS=1`` forces bars
on, ``=0`` off. tqdm is optional: without it no bar is drawn.

Warnings about results that look wrong (a meta-model that never converged, a calibration that
defers everything, a benchmark dominated by thread oversubscription) go through :func:`warn`, the
``metaerr_edge`` logger at WARNING: one line that says what happened and what to try.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

logger = logging.getLogger("metaerr_edge")


def show_progress(requested: bool = True) -> bool:
    """Whether to draw a progress bar: asked for, and stderr is a terminal (or forced by the env)."""
    forced = os.environ.get("METAERR_EDGE_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return requested and forced == "1"
    try:
        return bool(requested and sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


class _NoBar:
    """Stands in for a tqdm bar when none is drawn (same methods, does nothing)."""

    def __init__(self, iterable: Iterable[Any] | None = None, **_: Any) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable if self._iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr when :func:`show_progress` says so, else a silent stand-in.

    Example:
        >>> for epoch in progress_bar(range(3), enabled=False, desc="base"):
        ...     pass
    """
    if not show_progress(enabled):
        return _NoBar(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar(iterable)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)


def warn(message: str, *, name: str = "metaerr_edge") -> None:
    """Log one warning line (``WARNING metaerr_edge...: message``) about a suspicious result."""
    logging.getLogger(name).warning(message)
