"""Evaluate every failure score of a run on its test split: metrics table, JSON, risk-coverage plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import atomic_write_text, dumps_json, write_npz
from metaerr_edge.metrics import auroc, aurc, bootstrap_ci, failure_metrics
from metaerr_edge.pipeline import Run
from metaerr_edge.plots import plot_risk_coverage
from metaerr_edge.scores import ScoreContext, Scorer, available_scores, create_score

T = TypeVar("T")

#: The per-sample test scores that ``write_report`` keeps beside metrics.json (for the report's curves).
SCORES_FILE = "scores.npz"

def parse_score_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``"metaerr[image]"`` -> (label, name, params). Plain names take no params."""
    if "[" in spec and spec.endswith("]"):
        name, arg = spec[:-1].split("[", 1)
        if name != "metaerr":
            raise ConfigError(f"{spec!r}: only metaerr takes a [meta mode] (e.g. metaerr[probs]); write {name!r} without "
                              "brackets (its options are set through the Python API, create_score)")
        return spec, name, {"mode": arg}
    return spec, spec, {}


def default_scores(run: Run) -> list[str]:
    """MetaErr in every trained mode, then every registered baseline."""
    return [f"metaerr[{m}]" for m in run.config.meta.modes] + [s for s in available_scores() if s != "metaerr"]


@dataclass
class EvalReport:
    run: str
    dataset: str
    arch: str
    n_test: int
    error_rate: float
    test_accuracy: float
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    is_error: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def to_dict(self) -> dict[str, Any]:
        deployed = next(iter(self.rows), None)
        summary = {"test_accuracy": self.test_accuracy, "error_rate": self.error_rate, "n_test": self.n_test}
        if deployed:
            summary.update({f"{deployed}.{k}": self.rows[deployed][k] for k in ("auroc", "aurc", "aupr_error")})
        if "msp" in self.rows:
            summary.update({f"msp.{k}": self.rows["msp"][k] for k in ("auroc", "aurc")})
        return {"run": self.run, "dataset": self.dataset, "arch": self.arch, "summary": summary,
                "metrics": self.rows, "skipped": self.skipped,
                "notes": "aurc, eaurc, augrc are raw areas (tables show x1000); failure score: higher = more likely wrong"}  # fmt: skip

    def to_markdown(self) -> str:
        head = ["score", "AUROC [95% CI]", "AUPR-Err", "AUPR-Succ", "FPR@95", "AURC‰ [95% CI]", "E-AURC‰", "AUGRC‰", "risk@90%", "cov@2%"]
        lines = [
            f"{self.dataset} / {self.arch}: test n={self.n_test}, accuracy {self.test_accuracy:.4f}, "
            f"error rate r={self.error_rate:.4f} (a random score has AUPR-Err about r)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        best_auroc = max((r["auroc"] for r in self.rows.values() if not math.isnan(r["auroc"])), default=math.nan)
        best_aurc = min((r["aurc"] for r in self.rows.values()), default=math.nan)
        for name, r in self.rows.items():
            au = f"{r['auroc']:.4f} [{r['auroc_low']:.3f}, {r['auroc_high']:.3f}]"
            ar = f"{1000 * r['aurc']:.2f} [{1000 * r['aurc_low']:.2f}, {1000 * r['aurc_high']:.2f}]"
            au = f"**{au}**" if r["auroc"] == best_auroc else au
            ar = f"**{ar}**" if r["aurc"] == best_aurc else ar
            cells = [name, au, f"{r['aupr_error']:.4f}", f"{r['aupr_success']:.4f}", f"{r['fpr95tpr']:.4f}", ar,
                     f"{1000 * r['eaurc']:.2f}", f"{1000 * r['augrc']:.2f}", f"{r['risk@cov90']:.4f}", f"{r['cov@risk2']:.4f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        for name, why in self.skipped.items():
            lines.append(f"\nskipped {name}: {why}")
        return "\n".join(lines) + "\n"


def each_score(ctx: ScoreContext, specs: Sequence[str] | None, use: Callable[[Scorer], T], skipped: dict[str, str],
               progress: bool = True, desc: str = "scores") -> Iterator[tuple[str, T]]:
    """``(label, use(scorer))`` for every spec (default: :func:`default_scores`), each scorer fitted on
    ``ctx`` first (:meth:`ScoreContext.fit`). A score that cannot run on this run (a ConfigError) is
    recorded in ``skipped`` when it came from the default list, and raised when it was asked for."""
    from metaerr_edge.console import progress_bar

    for spec in progress_bar(list(specs or default_scores(ctx.run)), enabled=progress, desc=desc):
        label, name, params = parse_score_spec(spec)
        try:
            out = use(ctx.fit(create_score(name, **params)))
        except ConfigError as exc:
            if specs:  # asked for by name: a real error
                raise
            skipped[label] = str(exc)
            continue
        yield label, out


def evaluate_run(run: Run, scores: list[str] | None = None, n_boot: int = 1000, seed: int = 0, progress: bool = True,
                 meta_runs: Mapping[str, Run] | None = None) -> EvalReport:
    """Fit (on non-test splits) and score every requested failure score on the test split.

    ``meta_runs``: runs trained on this run's base (``train_run(base_from=...)``), whose meta-models
    the specs name as ``metaerr[MODE@NAME]``.

    Example:
        >>> report = evaluate_run(load_run("runs/digits"), ["msp", "metaerr[probs]"])
        >>> print(report.to_markdown())
    """
    ctx = ScoreContext(run, seed=seed, meta_runs=meta_runs)
    is_error = ctx.is_error("test")
    report = EvalReport(str(run.path), run.config.data.dataset, run.config.base.arch, int(len(is_error)),
                        float(is_error.mean()), float(1 - is_error.mean()), is_error=is_error)  # fmt: skip
    test_scores = each_score(ctx, scores, lambda scorer: np.asarray(scorer.score(ctx, "test"), np.float64),
                             report.skipped, progress, "scores")
    for label, s in test_scores:
        row = failure_metrics(s, is_error)
        ci_auc, ci_aurc = bootstrap_ci(auroc, s, is_error, n_boot, seed=seed), bootstrap_ci(aurc, s, is_error, min(n_boot, 300), seed=seed)
        row.update(auroc_low=ci_auc.low, auroc_high=ci_auc.high, aurc_low=ci_aurc.low, aurc_high=ci_aurc.high)
        report.rows[label] = {k: float(v) for k, v in row.items()}
        report.scores[label] = s
    return report


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """metrics.json, metrics.md, risk_coverage.png and scores.npz into ``out_dir``, as one set.

    ``scores.npz`` keeps the per-sample test scores (``names``, ``scores`` [score, sample], ``is_error``)
    so that ``metaerr-edge report`` draws the curves without torch or the model.
    The three are staged and moved in together (:func:`metaerr_edge._fileio.replace_files`, under the
    lock of ``out_dir``, which is the run's own lock when ``out_dir`` is the run folder): a failure
    such as a full disk leaves the previous set, never new metrics beside an old plot.
    """
    from metaerr_edge._fileio import replace_files

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "metrics.json", "md": out_dir / "metrics.md", "png": out_dir / "risk_coverage.png",
             "npz": out_dir / SCORES_FILE}
    undefined = "undefined on this split: it needs both failures and successes of the base"
    with replace_files(out_dir, [p.name for p in paths.values()]) as stage:
        atomic_write_text(stage / paths["json"].name, dumps_json(report.to_dict(), indent=2, reasons={
            k: undefined for k in ("auroc", "auroc_low", "auroc_high", "aupr_error", "aupr_success", "fpr95tpr")}))
        atomic_write_text(stage / paths["md"].name, report.to_markdown())
        names = list(report.scores)
        write_npz(stage / SCORES_FILE, {"names": np.array(names, dtype=np.str_), "is_error": report.is_error.astype(np.int8),
                                        "scores": np.stack([report.scores[n] for n in names]) if names else np.zeros((0, len(report.is_error)))})
        plot_risk_coverage(report.scores, report.is_error, stage / paths["png"].name, f"{report.dataset} / {report.arch}")
    return paths
