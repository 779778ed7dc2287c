"""Error labels: where the base model is wrong. The one definition every stage uses.

``is_error = 1`` where the base's prediction differs from the true label. The meta-model learns from
them (on rows the base did not train on), the metrics and thresholds are computed against them.
numpy only, so a device computes them without the training stack.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metaerr_edge.errors import DataError


def error_labels(prediction: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """``1`` where the base is wrong, ``0`` where it is right (int64, one per row).

    ``prediction`` is either the base's probabilities (or logits), N x K, whose argmax is the
    prediction, or the predicted labels themselves, shape (N,).

    Example:
        >>> error_labels(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 0]))
        array([0, 1])
        >>> error_labels(np.array([2, 1]), np.array([2, 0]))
        array([0, 1])
    """
    pred, truth = np.asarray(prediction), np.asarray(labels)
    if pred.ndim not in (1, 2) or truth.ndim != 1:
        raise DataError(f"error labels need (N, K) probabilities or (N,) predicted labels, and (N,) true labels; "
                        f"got shapes {pred.shape} and {truth.shape}")
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    elif pred.dtype.kind not in "iub":
        raise DataError(f"1-D predictions must be predicted labels (integers), got {pred.dtype}; pass the (N, K) "
                        "probabilities instead, whose argmax is the prediction")
    if len(pred) != len(truth):
        raise DataError(f"{len(pred)} predictions but {len(truth)} labels; pass one label per prediction")
    return (pred != truth).astype(np.int64)
