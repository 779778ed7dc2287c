"""Failure-detection metrics: how well a failure score ranks errors above correct predictions.

Every function takes ``failure_score`` (1-D floats, higher = more likely wrong) and
``is_error`` (1-D 0/1 or bool, 1 = the base model was wrong) and returns a float. When
``is_error`` holds a single class the ranking metrics are undefined and return NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from metaerr_edge.errors import ConfigError, DataError, require

ArrayLike = npt.ArrayLike
_FIX = "pass one failure score and one 0/1 error label per prediction, as 1-D arrays"


def _skm():
    """scikit-learn's metrics, imported when a detection metric is computed (the risk-coverage
    metrics and the report need numpy only)."""
    return require("sklearn.metrics", "metaerr-edge[train]", "failure-detection metrics")


def validate_inputs(
    failure_score: ArrayLike, is_error: ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Check a (failure_score, is_error) pair and return it as float64 / int64 arrays.

    Raises:
        DataError: shapes differ or are not 1-D, input is empty, a score is not finite,
            or ``is_error`` holds values other than 0 and 1.

    Example:
        >>> s, e = validate_inputs([0.2, 0.9], [False, True])
        >>> s.dtype.name, e.tolist()
        ('float64', [0, 1])
    """
    score = np.asarray(failure_score)
    err = np.asarray(is_error)
    if score.ndim != 1 or err.ndim != 1:
        raise DataError(
            f"Expected 1-D failure_score and is_error; got shapes {score.shape} and "
            f"{err.shape}. Flatten them (e.g. `.ravel()`): {_FIX}."
        )
    if score.shape != err.shape:
        raise DataError(
            f"Expected failure_score and is_error of the same length; got {score.size} "
            f"scores and {err.size} labels. Compute both on the same predictions: {_FIX}."
        )
    if score.size == 0:
        raise DataError(
            f"Expected at least one prediction; got empty arrays. Check the data split: {_FIX}."
        )
    if score.dtype.kind not in "biuf":
        raise DataError(
            f"Expected a numeric failure_score; got dtype {score.dtype}. "
            "Convert it with `np.asarray(score, dtype=float)`."
        )
    score = score.astype(np.float64, copy=False)
    bad = ~np.isfinite(score)
    if bad.any():
        raise DataError(
            f"Expected finite failure scores; got {int(bad.sum())} NaN/inf value(s), the "
            f"first at index {int(np.argmax(bad))}. Fix the scorer or drop those samples "
            "from both arrays."
        )
    if err.dtype.kind not in "biuf" or not np.isin(err, (0, 1)).all():
        found = np.unique(err)[:5].tolist() if err.dtype.kind in "biuf" else err.dtype
        raise DataError(
            f"Expected is_error to hold only 0/1 (or False/True); got {found}. "
            "Build it as `(base_pred != y).astype(int)`."
        )
    return score, err.astype(np.int64)


def _one_class(err: npt.NDArray[np.int64]) -> bool:
    total = int(err.sum())
    return total == 0 or total == err.size


def auroc(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Area under the ROC curve for detecting errors (``roc_auc_score(is_error, score)``).

    Returns NaN when ``is_error`` is all 0 or all 1.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    score, err = validate_inputs(failure_score, is_error)
    if _one_class(err):
        return math.nan
    return float(_skm().roc_auc_score(err, score))


def aupr_error(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Average precision with errors as the positive class (a random score gets ~error rate).

    Returns NaN when ``is_error`` is all 0 or all 1.

    Example:
        >>> aupr_error([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.8333333333333333
    """
    score, err = validate_inputs(failure_score, is_error)
    if _one_class(err):
        return math.nan
    return float(_skm().average_precision_score(err, score))


def aupr_success(failure_score: ArrayLike, is_error: ArrayLike) -> float:
    """Average precision with correct predictions positive, ranked by confidence = -score.

    Returns NaN when ``is_error`` is all 0 or all 1.

    Example:
        >>> aupr_success([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.8333333333333333
    """
    score, err = validate_inputs(failure_score, is_error)
    if _one_class(err):
        return math.nan
    return float(_skm().average_precision_score(1 - err, -score))


def fpr_at_95tpr(
    failure_score: ArrayLike, is_error: ArrayLike, target_tpr: float = 0.95
) -> float:
    """False-positive rate at 95% true-positive rate, correct predictions as positives.

    Correct predictions are scored by confidence (-failure_score); the result is the
    smallest FPR (errors accepted / errors) over thresholds whose TPR (correct accepted /
    correct) is at least ``target_tpr``. Lower is better. NaN when only one class is present.

    Example:
        >>> fpr_at_95tpr([0.1, 0.3, 0.2, 0.9], [0, 0, 1, 1])
        0.5
    """
    if not 0.0 < target_tpr <= 1.0:
        raise ConfigError(f"Expected target_tpr in (0, 1]; got {target_tpr!r}. Use 0.95.")
    score, err = validate_inputs(failure_score, is_error)
    if _one_class(err):
        return math.nan
    # Keep every threshold: dropped collinear points could hide the first one over the target.
    fpr, tpr, _ = _skm().roc_curve(1 - err, -score, drop_intermediate=False)
    return float(fpr[tpr >= target_tpr - 1e-12].min())
