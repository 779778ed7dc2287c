"""Error labels from data the base model did not train on: held-out, or k-fold cross-fitting.

``is_error = (argmax(probs) != y)``, 1 = failure (:func:`metaerr_edge.data.error_labels`). On its own
training set a base model makes almost no errors, so labels from there would teach the meta-model nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models.training import FitConfig, fit_classifier, predict_probs

__all__ = ["crossfit_probs", "error_labels", "fold_ids"]


def fold_ids(n: int, k: int, seed: int) -> np.ndarray:
    """A seeded assignment of ``n`` samples to ``k`` folds of near-equal size."""
    if k < 2:
        raise ConfigError(f"cross-fitting needs at least 2 folds, got {k}")
    if n < k:
        raise DataError(f"cannot split {n} samples into {k} folds; use fewer folds or more data")
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def crossfit_probs(
    factory: Callable[[], nn.Module],
    images: np.ndarray,
    labels: np.ndarray,
    preprocess: Preprocess,
    fit: FitConfig,
    k: int = 5,
    progress: bool = True,
    desc: str = "fold",
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    on_fold: Callable[[nn.Module, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities: k models, each scoring the fold it did not see.

    Returns ``(oof_probs, fold_id)``; row ``i`` of ``oof_probs`` comes from the model trained
    without fold ``fold_id[i]``. ``extra`` (images, labels) joins every fold model's training data
    and is never scored (e.g. the pseudo-labels the deployed base also trained on). ``on_fold(model,
    held)`` is called with each fold model and the indices it did not see (e.g. to score corrupted
    views of those rows out of fold too).

    Example:
        >>> oof, folds = crossfit_probs(lambda: create_base("small_cnn", 1, 10, (8, 8)), x, y, pre, FitConfig(), k=5)
    """
    folds = fold_ids(len(images), k, fit.seed)
    oof: np.ndarray | None = None
    for f in range(k):
        train, held = folds != f, folds == f
        x, y = images[train], labels[train]
        if extra is not None and len(extra[1]):
            x, y = np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]])
        torch.manual_seed(fit.seed + 1000 * (f + 1))  # each fold model's initial weights: seed-determined
        model = fit_classifier(
            factory(), x, y, preprocess,
            FitConfig(**{**fit.__dict__, "seed": fit.seed + 1000 * (f + 1)}), progress, f"{desc} {f + 1}/{k}",
        )  # fmt: skip
        p = predict_probs(model, images[held], preprocess, device=fit.device)
        if oof is None:
            oof = np.zeros((len(images), p.shape[1]), np.float32)
        oof[held] = p
        if on_fold is not None:
            on_fold(model, np.flatnonzero(held))
    assert oof is not None
    return oof, folds
