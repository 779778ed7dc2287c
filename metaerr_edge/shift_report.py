"""What a shift evaluation measured, as data: :class:`ShiftReport` (shift.json), its tables and summary.

Torch-free, so that ``metaerr-edge report`` and the benchmarks read a shift.json back without the
training stack; :func:`metaerr_edge.shift_eval.evaluate_shift` makes one, and
:func:`metaerr_edge.plots.plot_shift` draws it.

Example:
    >>> report = ShiftReport.from_dict(json.load(open("runs/fashion/shift.json")))
    >>> report.summary()["msp"]["shift_auroc_mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The per-set metrics (raw areas; tables show AURC and AUGRC x1000).
SET_METRICS = ("auroc", "aurc", "augrc")
OOD_KIND, CORRUPTION_KIND = "ood", "corruption"


@dataclass
class ShiftReport:
    """What :func:`evaluate_shift` measured. ``sets`` rows: ``{"set", "kind", "severity", "n",
    "error_rate", "scores": {score: {auroc, aurc, augrc, coverage, risk}}}``; the first row is the
    clean test split (kind ``"clean"``)."""

    run: str
    dataset: str
    arch: str
    group: str
    coverage: float
    thresholds: dict[str, float | None] = field(default_factory=dict)
    sets: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    split: str = "test"  # the run's split the sets are made from ("calib": for choosing, never reported)
    test_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # rows of the test split used

    @property
    def scores(self) -> list[str]:
        return list(self.thresholds)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ShiftReport":
        """A report back from :meth:`to_dict` (e.g. shift.json), enough to tabulate and plot it again."""
        return cls(doc["run"], doc["dataset"], doc["arch"], doc["family_group"], doc["threshold_coverage"],
                   dict(doc["thresholds"]), list(doc["sets"]), dict(doc.get("skipped", {})), doc.get("split", "test"))

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "dataset": self.dataset, "arch": self.arch, "family_group": self.group, "split": self.split,
                "threshold_coverage": self.coverage, "thresholds": self.thresholds, "sets": self.sets,
                "summary": self.summary(), "skipped": self.skipped, "n_test_used": int(len(self.test_indices)),
                "notes": "aurc and augrc are raw areas (tables x1000); OOD sets are the clean test split plus the OOD "
                         "images, each OOD image a failure; thresholds: each score's at the calibration coverage"}  # fmt: skip

    def summary(self) -> dict[str, dict[str, float]]:
        """Per score: clean AUROC, mean AUROC over the corrupted sets (all families and severities),
        the worst corrupted cell, mean OOD AUROC, and the largest rise of selective risk at the threshold."""
        out: dict[str, dict[str, float]] = {}
        clean = self.sets[0]["scores"] if self.sets else {}
        for name in self.scores:
            rows = {kind: [s["scores"][name] for s in self.sets if s["kind"] == kind] for kind in (CORRUPTION_KIND, OOD_KIND)}
            shifted = [r["auroc"] for r in rows[CORRUPTION_KIND] if not math.isnan(r["auroc"])]
            rises = [r["risk"] - clean[name]["risk"] for r in rows[CORRUPTION_KIND]
                     if r.get("risk") is not None and clean.get(name, {}).get("risk") is not None]
            out[name] = {
                "clean_auroc": clean.get(name, {}).get("auroc", math.nan),
                "shift_auroc_mean": float(np.mean(shifted)) if shifted else math.nan,
                "shift_auroc_min": float(np.min(shifted)) if shifted else math.nan,
                "ood_auroc_mean": float(np.mean([r["auroc"] for r in rows[OOD_KIND]])) if rows[OOD_KIND] else math.nan,
                "risk_rise_max": float(np.max(rises)) if rises else math.nan,
            }
        return out

    def to_markdown(self) -> str:
        names = self.scores
        lines = [f"{self.dataset} / {self.arch}: failure prediction under shift ({self.group} corruption families, "
                 f"OOD sets counted as failures)", ""]
        for metric, scale, label in (("auroc", 1.0, "AUROC (higher is better)"), ("aurc", 1000.0, "AURC ×1000 (lower is better)"),
                                     ("augrc", 1000.0, "AUGRC ×1000 (lower is better)")):  # fmt: skip
            lines += [f"### {label}", "", "| set | severity | n | error rate | " + " | ".join(names) + " |",
                      "|---|---|---|---|" + "---|" * len(names)]
            for s in self.sets:
                cells = [_fmt(s["scores"][n][metric], scale) for n in names]
                lines.append(f"| {s['set']} | {s['severity'] or '-'} | {s['n']} | {s['error_rate']:.3f} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [f"### The deployed kind of threshold: each score's at {self.coverage:.0%} calibration coverage, "
                  "then coverage / selective risk on each set", "",
                  "| set | severity | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for s in self.sets:
            cells = [_cov_risk(s["scores"][n]) for n in names]
            lines.append(f"| {s['set']} | {s['severity'] or '-'} | " + " | ".join(cells) + " |")
        summary = self.summary()
        lines += ["", "### Summary", "", "| score | clean AUROC | shift mean AUROC | worst shift cell | OOD mean AUROC | "
                  "max risk rise at the threshold |", "|---|---|---|---|---|---|"]
        for n in names:
            r = summary[n]
            lines.append(f"| {n} | {_fmt(r['clean_auroc'])} | {_fmt(r['shift_auroc_mean'])} | {_fmt(r['shift_auroc_min'])} | "
                         f"{_fmt(r['ood_auroc_mean'])} | {_fmt(r['risk_rise_max'])} |")
        for name, why in self.skipped.items():
            lines.append(f"\nskipped {name}: {why}")
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None or math.isnan(value) else f"{scale * value:.4f}" if scale == 1.0 else f"{scale * value:.2f}"


def _cov_risk(row: dict[str, Any]) -> str:
    if row.get("coverage") is None:
        return "-"
    return f"{row['coverage']:.3f} / {'-' if row['risk'] is None else format(row['risk'], '.3f')}"
