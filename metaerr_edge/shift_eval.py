"""Failure prediction under shift: every score of a run on corrupted and out-of-distribution test sets.

A deployed camera sees noise, blur, exposure, compression and objects of no training class; that
is when a device must defer. :func:`evaluate_shift` takes a run's test split through each
corruption family of one group (:func:`metaerr_edge.data.families`: ``"test"``, reported only, by
default; ``"validation"``, the only group any choice may look at) at each severity, and adds the
OOD sets (:func:`metaerr_edge.data.ood_sets`) mixed with the clean test split, every OOD image
counted as a failure (whatever the base predicts, it is wrong). The validation group gets the
validation outlier families instead (:func:`metaerr_edge.data.outlier_sets`: smoothed noise, blends
of two images, made from the split's own images), so a choice about out-of-distribution inputs
never looks at a reported OOD set either. Per set and score: AUROC, AURC and
AUGRC of the failure score against the base's errors on that set, and what the deployed kind of
threshold does there: each score's threshold at ``coverage`` of the calibration split (fitted on
clean calibration data, as deployed), and the coverage and selective risk it gives on the set.

Scores are fitted once, on the run's clean non-test splits, exactly as :func:`evaluate_run` fits
them; nothing here is fitted or chosen on a shifted set.

Example:
    >>> report = evaluate_shift(load_run("runs/fashion"), ["msp", "metaerr[probs]"], group="test", root="../shared/datasets")
    >>> print(report.to_markdown())
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge._fileio import atomic_write_text, dumps_json, replace_files
from metaerr_edge.data import SEVERITIES, corrupt, families, ood_sets, outlier_sets
from metaerr_edge.data.outliers import VALIDATION_OOD_SOURCES
from metaerr_edge.errors import ConfigError
from metaerr_edge.evaluate import each_score
from metaerr_edge.metrics import augrc, auroc, aurc
from metaerr_edge.pipeline import Run
from metaerr_edge.plots import plot_shift
from metaerr_edge.scores import ScoreContext
from metaerr_edge.shift_report import CORRUPTION_KIND, OOD_KIND, SET_METRICS, ShiftReport

__all__ = ["SET_METRICS", "ShiftReport", "calibration_threshold", "evaluate_shift", "plot_shift", "write_shift_report"]

def _set_row(name: str, kind: str, severity: int | None, is_error: np.ndarray) -> dict[str, Any]:
    return {"set": name, "kind": kind, "severity": severity, "n": int(len(is_error)),
            "error_rate": float(is_error.mean()), "scores": {}}


def _score_metrics(score: np.ndarray, is_error: np.ndarray, threshold: float | None) -> dict[str, Any]:
    both = 0 < int(is_error.sum()) < len(is_error)
    row: dict[str, Any] = {"auroc": float(auroc(score, is_error)) if both else math.nan,
                           "aurc": float(aurc(score, is_error)), "augrc": float(augrc(score, is_error))}
    if threshold is not None:
        accepted = score <= threshold
        row["coverage"] = float(accepted.mean())
        row["risk"] = float(is_error[accepted].mean()) if accepted.any() else None
    return row


def calibration_threshold(calib_scores: np.ndarray, coverage: float) -> float | None:
    """The deployed rule: the threshold at ``coverage`` of the calibration scores
    (:func:`metaerr_edge.decide.threshold_for_coverage`), or None for a score outside [0, 1] (no
    threshold in the contract's range can be set on it)."""
    from metaerr_edge.decide import threshold_for_coverage

    s = np.asarray(calib_scores, np.float64)
    if s.size == 0 or s.min() < 0.0 or s.max() > 1.0:
        return None
    return float(threshold_for_coverage(s, coverage=coverage).value)


def evaluate_shift(run: Run, scores: Sequence[str] | None = None, *, group: str,
                   severities: Sequence[int] = SEVERITIES, ood: bool = True, root: str | None = None,
                   max_n: int | None = None, coverage: float = 0.9, seed: int = 0, progress: bool = True,
                   split: str = "test", meta_runs: Mapping[str, Run] | None = None) -> ShiftReport:
    """Every score on the run's test split under each corruption of ``group`` and on the OOD sets.

    Args:
        scores: score specs as for :func:`~metaerr_edge.evaluate.evaluate_run` (default: all).
        group: ``"test"`` (reported only) or ``"validation"`` (the group choices may look at); no
            default, so that code which chooses something says which group it looks at.
        severities: a subset of 1..5.
        ood: add the OOD sets of the run's dataset (:func:`~metaerr_edge.data.ood_sets`), each
            mixed with the clean test split; ``root`` (default: the run's data root) holds them.
            With ``group="validation"``: the validation outlier sets of the split's images instead
            (:func:`~metaerr_edge.data.outlier_sets`), and with a root the validation OOD dataset
            (CIFAR-10's training images for the gray datasets; never a reported OOD set).
        max_n: use at most this many test images: a seeded random subset of the test split
            (``report.test_indices``), not its first images (a split may be sorted by class).
        coverage: the calibration coverage of each score's threshold.
        split: ``"test"`` (reported), or ``"calib"`` to choose between meta-models (with
            ``group="validation"``) without looking at the test split. Scores fitted on the
            calibration split (temperature, MaxLogit-pNorm, REL-U, ...) are then scored on their own
            fitting data: compare MetaErr variants there, not the fitted baselines.
        meta_runs: runs on this run's base (``train_run(base_from=...)``) named in ``scores`` as
            ``metaerr[MODE@NAME]``: their meta-models on the same sets, the base called once.

    Example:
        >>> report = evaluate_shift(run, ["msp", "metaerr[probs]"], group="test", severities=(1, 3, 5), ood=False)
    """
    fams = families(group)
    sev = tuple(sorted({int(s) for s in severities})) if all(isinstance(s, (int, np.integer)) for s in severities) else ()
    if not sev or any(s not in SEVERITIES for s in sev):
        raise ConfigError(f"severities must be a non-empty subset of {list(SEVERITIES)}, got {list(severities)}")
    if not 0.0 < coverage <= 1.0:
        raise ConfigError(f"coverage must lie in (0, 1], got {coverage}")
    if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)) or max_n < 1):
        raise ConfigError(f"max_n must be None (the whole test split) or an integer >= 1, got {max_n!r}")
    if split not in ("test", "calib"):
        raise ConfigError(f"split must be 'test' or 'calib', got {split!r}")
    images, labels = run.split(split)
    # A seeded random subset, never the first max_n: a test split may be ordered by class (ImageFolder).
    picked = np.arange(len(labels)) if max_n is None or max_n >= len(labels) else np.sort(
        np.random.default_rng(seed).choice(len(labels), size=int(max_n), replace=False))
    images, labels = images[picked], labels[picked]
    skipped: dict[str, str] = {}
    oods: dict[str, np.ndarray] = {}
    data_root = root if root is not None else run.config.data.root
    if ood and group == "validation":  # first: a missing OOD dataset fails before any corruption is computed
        oods = outlier_sets(images, "validation", seed=seed, dataset=run.config.data.dataset, root=data_root)
        if data_root is None:
            skipped.update({f"ood:{source}": "the validation OOD dataset needs a data root; pass root= (--root)"
                            for source in VALIDATION_OOD_SOURCES.get(run.config.data.dataset, ())})
    elif ood:
        oods = ood_sets(run.config.data.dataset, (run.channels, run.height, run.width), data_root, n=len(images), seed=seed)
        if run.config.data.dataset == "digits" and data_root is None:
            skipped["ood:fashion-mnist"] = "a digits run without a data root gets the noise set only; pass root= (--root)"
    ctx = ScoreContext(run, seed=seed, meta_runs=meta_runs)
    sets: list[tuple[str, str, int | None, np.ndarray, np.ndarray]] = [("clean", "clean", None, images, labels)]
    sets += [(f, CORRUPTION_KIND, s, corrupt(images, f, s, seed=seed), labels) for f in fams for s in sev]
    for name, x in oods.items():
        sets.append((f"ood:{name}", OOD_KIND, None, np.concatenate([images, x]),
                     np.concatenate([labels, np.full(len(x), -1, labels.dtype)])))
    split_names = []
    for i, (name, _, severity, x, y) in enumerate(sets):
        split_names.append(f"shift/{i}:{name}@{severity}")
        ctx.add_split(split_names[-1], x, y)
    report = ShiftReport(str(run.path), run.config.data.dataset, run.config.base.arch, group, float(coverage),
                         skipped=skipped, split=split, test_indices=picked)
    rows = [_set_row(name, kind, severity, ctx.is_error(split)) for (name, kind, severity, _, _), split in zip(sets, split_names)]
    def use(scorer):
        threshold = calibration_threshold(scorer.score(ctx, "calib"), coverage)
        return threshold, [np.asarray(scorer.score(ctx, split), np.float64) for split in split_names]

    for label, (threshold, values) in each_score(ctx, scores, use, report.skipped, progress, "scores under shift"):
        report.thresholds[label] = threshold
        for row, split, s in zip(rows, split_names, values):
            row["scores"][label] = _score_metrics(s, ctx.is_error(split), threshold)
    report.sets = rows
    return report


def write_shift_report(report: ShiftReport, out_dir: str | Path) -> dict[str, Path]:
    """shift.json, shift.md and shift.png into ``out_dir``, as one set (staged, moved in together)."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "shift.json", "md": out_dir / "shift.md", "png": out_dir / "shift.png"}
    undefined = "undefined on this set: it needs both failures and successes of the base"
    with replace_files(out_dir, [p.name for p in paths.values()]) as stage:
        atomic_write_text(stage / paths["json"].name,
                          dumps_json(report.to_dict(), indent=1, reasons={"auroc": undefined, "risk": "no sample accepted"}))
        atomic_write_text(stage / paths["md"].name, report.to_markdown())
        plot_shift(report, stage / paths["png"].name)
    return paths
