"""One look for every plot: a distinct style per score, MetaErr highlighted, legends outside the data.

- :func:`score_styles`: ``ax.plot`` keyword arguments per score; no two scores share a
  (colour, linestyle) pair. MetaErr scores (names starting with ``metaerr``) are saturated,
  solid, thicker and on top; baselines are muted, thinner and dashed, dotted or dash-dotted.
- :data:`REFERENCE_STYLES`: the ``oracle`` and ``random`` reference curves (black and grey).
- :func:`group_identical`: scores whose curves are equal, so one line labelled ``"msp = temperature"``
  is drawn instead of one hiding the other.
- :func:`legend_outside`: the legend right of the axes, never over the data.
- :func:`figure_format`: the format a plot's file suffix names.

Only numpy is imported here; matplotlib's colormaps are read when more MetaErr scores than
:data:`METAERR_COLOURS` are styled.

Example:
    >>> styles = score_styles(["msp", "metaerr[probs]"])
    >>> styles["metaerr[probs]"]["linestyle"], styles["msp"]["linestyle"]
    ('-', '--')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

METAERR_PREFIX = "metaerr"

#: Saturated, mutually distinct colours for MetaErr scores (solid lines).
METAERR_COLOURS: tuple[str, ...] = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#e377c2", "#17becf", "#8c564b")
#: Muted colours for baselines: greys and desaturated tones, none close to a MetaErr colour.
BASELINE_COLOURS: tuple[str, ...] = ("#595959", "#8a9bb0", "#a89070", "#7d9c86", "#a08aa8", "#9e9e9e", "#b3a76b")
#: Baseline line styles; their count is coprime with the colours', so 7 x 4 = 28 baselines get distinct pairs.
BASELINE_LINESTYLES: tuple[Any, ...] = ("--", ":", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)))

METAERR_WIDTH, BASELINE_WIDTH = 2.0, 1.1
METAERR_ZORDER, BASELINE_ZORDER, REFERENCE_ZORDER = 3.0, 2.0, 1.5

#: Styles of the reference curves: the best possible ranking and a ranking by chance.
REFERENCE_STYLES: dict[str, dict[str, Any]] = {
    "oracle": {"color": "black", "linestyle": "-", "linewidth": 1.0, "zorder": REFERENCE_ZORDER},
    "random": {"color": "#7f7f7f", "linestyle": "-", "linewidth": 1.0, "zorder": REFERENCE_ZORDER},
}


def is_metaerr(name: str) -> bool:
    """Whether ``name`` is a MetaErr score (``metaerr``, ``metaerr[probs]``, ...)."""
    return name.lower().startswith(METAERR_PREFIX)


def _metaerr_colours(count: int) -> list[Any]:
    if count <= len(METAERR_COLOURS):
        return list(METAERR_COLOURS[:count])
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, count)]


def _baseline_colour(j: int, count: int) -> Any:
    limit = len(BASELINE_COLOURS) * len(BASELINE_LINESTYLES)
    if count <= limit:
        return BASELINE_COLOURS[j % len(BASELINE_COLOURS)]
    return str(round(0.2 + 0.5 * j / (count - 1), 4))  # so many baselines: one grey level each


def score_styles(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{name: ax.plot kwargs}`` (color, linestyle, linewidth, zorder), a distinct (colour, linestyle) per name.

    MetaErr scores take :data:`METAERR_COLOURS` in order, solid, ``linewidth`` 2.0, on top;
    baselines cycle :data:`BASELINE_COLOURS` and :data:`BASELINE_LINESTYLES` together, 1.1 wide.
    """
    names = list(dict.fromkeys(names))
    meta = [n for n in names if is_metaerr(n)]
    base = [n for n in names if not is_metaerr(n)]
    styles: dict[str, dict[str, Any]] = {}
    for name, colour in zip(meta, _metaerr_colours(len(meta))):
        styles[name] = {"color": colour, "linestyle": "-", "linewidth": METAERR_WIDTH, "zorder": METAERR_ZORDER}
    for j, name in enumerate(base):
        styles[name] = {"color": _baseline_colour(j, len(base)), "linestyle": BASELINE_LINESTYLES[j % len(BASELINE_LINESTYLES)],
                        "linewidth": BASELINE_WIDTH, "zorder": BASELINE_ZORDER}
    return {name: styles[name] for name in names}


def group_identical(curves: Mapping[str, Sequence[Any]]) -> list[list[str]]:
    """Names whose curves are equal, grouped in first-seen order.

    ``curves`` maps a name to its curve as a sequence of arrays (e.g. ``(coverages, risks)``);
    two names group when every array is equal, element for element.

    Example:
        >>> group_identical({"msp": ([1, 0], [2, 2]), "temperature": ([1, 0], [2, 2]), "energy": ([1, 0], [3, 3])})
        [['msp', 'temperature'], ['energy']]
    """
    groups: list[list[str]] = []
    shapes: list[Sequence[Any]] = []
    for name, curve in curves.items():
        for members, seen in zip(groups, shapes):
            if len(seen) == len(curve) and all(np.array_equal(a, b) for a, b in zip(seen, curve)):
                members.append(name)
                break
        else:
            groups.append([name])
            shapes.append(curve)
    return groups


def group_label(names: Sequence[str]) -> str:
    """``["msp", "temperature"]`` -> ``"msp = temperature"``."""
    return " = ".join(names)


def group_style(names: Sequence[str], styles: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The style a group is drawn with: its first MetaErr member's, else its first member's."""
    first = next((n for n in names if is_metaerr(n) and n in styles), names[0])
    return dict(styles[first])


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """The axes' legend right of its data area; use a ``layout="constrained"`` figure so it is not cropped."""
    options: dict[str, Any] = {"bbox_to_anchor": (1.02, 1), "loc": "upper left", "borderaxespad": 0.0, "fontsize": 7}
    return ax.legend(**{**options, **kwargs})


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format ``savefig`` should write for ``path``: its suffix (``png`` when it has none)."""
    return Path(path).suffix.lstrip(".").lower() or "png"


__all__ = [
    "BASELINE_COLOURS", "BASELINE_LINESTYLES", "METAERR_COLOURS", "REFERENCE_STYLES", "figure_format",
    "group_identical", "group_label", "group_style", "is_metaerr", "legend_outside", "score_styles",
]
