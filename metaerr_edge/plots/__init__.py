"""The figures of an evaluation: risk-coverage, generalized risk-coverage, AUROC under shift.

Torch-free (numpy and matplotlib, no pyplot): the training stack writes them beside its metrics,
and ``metaerr-edge report`` redraws them from files on a machine without torch. Every figure
styles a score the same way (:mod:`metaerr_edge.plots.style`): MetaErr solid and saturated,
baselines muted and dashed, identical curves drawn once, the legend outside the data. The file
format follows the suffix of the path (.png, .svg, .pdf).

Example:
    >>> plot_risk_coverage({"msp": msp, "metaerr[probs]": meta}, is_error, "risk_coverage.png", "digits / small_cnn")
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge._fileio import atomic_write_bytes
from metaerr_edge.errors import require
from metaerr_edge.metrics import risk_coverage_curve
from metaerr_edge.plots.style import (REFERENCE_STYLES, figure_format, group_identical, group_label, group_style, is_metaerr,
                                      legend_outside, score_styles)
from metaerr_edge.shift_report import CORRUPTION_KIND, OOD_KIND, ShiftReport

__all__ = ["plot_generalized_risk", "plot_risk_coverage", "plot_shift"]


def plot_risk_coverage(scores: dict[str, np.ndarray], is_error: np.ndarray, path: Path, title: str = "", *,
                       split: str = "test") -> Path:
    """Selective risk against coverage, one curve per score (AURC x1000 in the legend), with oracle and random.

    Scores with identical curves share one line (``"msp = temperature"``); ``title`` names the data and
    base (``"digits / small_cnn"``), the axes title adds ``split``, n and the error count. The format
    follows the suffix of ``path`` (.png, .svg).
    """
    return _save(_selective_figure(scores, is_error, title, split, generalized=False), path)


def plot_generalized_risk(scores: dict[str, np.ndarray], is_error: np.ndarray, path: Path, title: str = "",
                          split: str = "test") -> Path:
    """Generalized risk (accepted errors / n) against coverage, AUGRC x1000 in the legend; as :func:`plot_risk_coverage`."""
    return _save(_selective_figure(scores, is_error, title, split, generalized=True), path)


def _save(fig: Any, path: Path) -> Path:
    atomic_write_bytes(Path(path), lambda tmp: fig.savefig(tmp, format=figure_format(path), dpi=120))
    return Path(path)


def _figure_class() -> Any:
    """matplotlib's Figure (no pyplot, so no global state or display), or a clear error without matplotlib."""
    require("matplotlib", "metaerr-edge[train]", "drawing figures (or pip install matplotlib)")
    from matplotlib.figure import Figure

    return Figure


def _selective_figure(scores: Mapping[str, np.ndarray], is_error: np.ndarray, title: str, split: str,
                      generalized: bool) -> Any:
    """The figure of :func:`plot_risk_coverage` (or, ``generalized``, of :func:`plot_generalized_risk`)."""
    Figure = _figure_class()


    err = np.asarray(is_error).astype(np.int64).reshape(-1)
    n, k = err.size, int(err.sum())
    # The best ranking puts every error last, one at a time; a constant score is a ranking by chance.
    oracle = np.where(err > 0, 1.0 + np.arange(n), 0.0)
    references = {"oracle": oracle, "random": np.zeros(n)}
    named = {(ref if ref not in scores else f"{ref} (reference)"): ref for ref in references}
    curves = {name: risk_coverage_curve(s, err) for name, s in scores.items()}
    curves.update({name: risk_coverage_curve(references[ref], err) for name, ref in named.items()})
    styles = {**score_styles(scores), **{name: REFERENCE_STYLES[ref] for name, ref in named.items()}}
    metric, ys = ("AUGRC", "generalized_risks") if generalized else ("AURC", "risks")

    fig = Figure(figsize=(9.0, 4.6), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    drawn = []
    for names in group_identical({name: (rc.coverages, getattr(rc, ys)) for name, rc in curves.items()}):
        rc = curves[names[0]]
        area = rc.augrc if generalized else rc.aurc
        (line,) = ax.plot(rc.coverages, getattr(rc, ys), label=f"{group_label(names)} ({metric} {1000 * area:.1f}‰)",
                          **group_style(names, styles))
        drawn.append((0 if any(map(is_metaerr, names)) else 2 if set(names) <= set(named) else 1, line))
    ax.set_xlabel("coverage (fraction accepted)")
    ax.set_ylabel("generalized risk (accepted errors / all)" if generalized else "selective risk (error rate of accepted)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    what = title or ("generalized risk-coverage" if generalized else "risk-coverage")
    ax.set_title(f"{what}, {split} split (n={n}, {k} error{'' if k == 1 else 's'})", fontsize=10)
    handles = [line for _, line in sorted(drawn, key=lambda d: d[0])]  # MetaErr, baselines, references
    legend_outside(ax, handles=handles)
    return fig


def plot_shift(report: ShiftReport, path: str | Path) -> Path:
    """AUROC against severity, one panel per corruption family (and one for the OOD sets), one line per score.

    A score keeps its style (:func:`metaerr_edge.plotstyle.score_styles`) in every panel; the legend sits
    below the panels. The format follows the suffix of ``path`` (.png, .svg).
    """
    fig = _shift_figure(report)
    atomic_write_bytes(Path(path), lambda tmp: fig.savefig(tmp, format=figure_format(path), dpi=110))
    return Path(path)


def _shift_figure(report: ShiftReport) -> Any:
    """The figure :func:`plot_shift` writes."""
    Figure = _figure_class()

    fams = list(dict.fromkeys(s["set"] for s in report.sets if s["kind"] == CORRUPTION_KIND))
    oods = [s for s in report.sets if s["kind"] == OOD_KIND]
    panels = fams + (["OOD"] if oods else [])
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    names = sorted(report.scores, key=lambda name: not is_metaerr(name))  # MetaErr first in the legend
    width = max(4.0, 3.2 * cols)
    ncol = max(1, min(len(names), int(width / max((0.4 + 0.065 * len(n) for n in names), default=1.0))))
    fig = Figure(figsize=(width, 2.6 * rows + 0.8 + 0.2 * math.ceil(len(names) / ncol)), dpi=110, layout="constrained")
    clean = report.sets[0]["scores"] if report.sets else {}
    styles = score_styles(report.scores)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name in names:
            if panel == "OOD":
                ax.plot(range(len(oods)), [s["scores"][name]["auroc"] for s in oods], marker="o", ms=3, label=name,
                        **styles[name])
                ax.set_xticks(range(len(oods)), [s["set"].removeprefix("ood:") for s in oods], fontsize=6,
                              rotation=20, ha="right", rotation_mode="anchor")
            else:
                cells = [s for s in report.sets if s["set"] == panel]
                ax.plot([0] + [s["severity"] for s in cells], [clean[name]["auroc"]] + [s["scores"][name]["auroc"] for s in cells],
                        marker="o", ms=3, label=name, **styles[name])  # fmt: skip
                ax.set_xticks(range(0, 6))
        ax.axhline(0.5, color="grey", lw=0.8, ls=":", zorder=1)
        ax.set_title(panel, fontsize=8)
        lowest = min((float(y) for line in ax.get_lines() for y in line.get_ydata() if np.isfinite(y)), default=0.3)
        ax.set_ylim(min(0.3, lowest - 0.02), 1.0)  # an AUROC far below chance stays in view
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("AUROC", fontsize=7)
    if panels:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=7, frameon=False)
    title = f"{report.dataset} / {report.arch}: AUROC vs severity (0 = clean), {report.group} families"
    fig.suptitle(textwrap.fill(title, int(13 * width)), fontsize=9)  # about 13 characters an inch at 9 pt
    return fig
