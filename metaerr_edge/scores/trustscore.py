"""TrustScore (Jiang et al., 2018): nearest-other-class over predicted-class distance in feature space.

White-box: it reads the base model's penultimate features (its ``forward_features`` seam, see
:mod:`metaerr_edge.models.seams`). The reference set is the base's own training split (``ctx.train_split``),
subsampled per class and density-filtered: in each class the ``alpha`` fraction of points with the
largest k-NN radius is dropped (the paper's alpha-high-density set).

``trust = d(x, nearest class other than the prediction) / d(x, predicted class)``; high trust means
the prediction agrees with the nearest class, so the failure score is ``-trust``.
"""

from __future__ import annotations

import numpy as np
import torch

from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.scores._features import context_features
from metaerr_edge.scores.base import ScoreContext, Scorer, register_score

_EPS = 1e-12


def _min_dist(queries: torch.Tensor, points: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    if len(points) == 0:
        return torch.full((len(queries),), float("inf"), dtype=torch.float64)
    return torch.cat([torch.cdist(queries[s : s + chunk], points).min(dim=1).values for s in range(0, len(queries), chunk)])


def _knn_radius(points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    kk = min(k + 1, len(points))  # +1: the point itself sits at distance 0
    return torch.cat([torch.cdist(points[s : s + chunk], points).topk(kk, largest=False).values[:, -1]
                      for s in range(0, len(points), chunk)])  # fmt: skip


class TrustScoreIndex:
    """Per-class, alpha-filtered reference sets; ``trust(feats, pred)`` gives the distance ratio.

    Args:
        features: N x D reference features (the base's training data).
        labels: N true labels.
        num_classes: K.
        k: neighbours for the density filter's radius.
        alpha: fraction of lowest-density points dropped per class (0 keeps all).
        max_per_class: random subsample per class before filtering (keeps it fast).
        seed: subsampling seed.

    Example:
        >>> idx = TrustScoreIndex(train_feats, train_labels, 10)
        >>> failure = -idx.trust(test_feats, test_probs.argmax(1))
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 10,
                 alpha: float = 0.05, max_per_class: int | None = 1000, seed: int = 0) -> None:  # fmt: skip
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"trustscore alpha must lie in [0, 1), got {alpha}")
        if len(features) != len(labels) or len(features) == 0:
            raise DataError(f"trustscore needs matching non-empty features/labels, got {len(features)}/{len(labels)}")
        rng = np.random.default_rng(seed)
        feats = torch.from_numpy(np.asarray(features, np.float64))
        self.class_points: list[torch.Tensor] = []
        for c in range(num_classes):
            idx = np.flatnonzero(np.asarray(labels) == c)
            if max_per_class is not None and len(idx) > max_per_class:
                idx = rng.choice(idx, max_per_class, replace=False)
            pts = feats[idx]
            if alpha > 0 and len(pts) > k + 1:
                radius = _knn_radius(pts, k)
                pts = pts[radius <= torch.quantile(radius, 1.0 - alpha)]
            self.class_points.append(pts)

    def class_distances(self, features: np.ndarray) -> np.ndarray:
        """N x K distance of each query to the nearest kept point of each class."""
        q = torch.from_numpy(np.asarray(features, np.float64))
        return torch.stack([_min_dist(q, pts) for pts in self.class_points], dim=1).numpy()

    def trust(self, features: np.ndarray, pred: np.ndarray) -> np.ndarray:
        d = self.class_distances(features)
        rows = np.arange(len(d))
        d_pred = d[rows, pred]
        d_other = d.copy()
        d_other[rows, pred] = np.inf
        d_other = d_other.min(axis=1)
        return np.minimum(d_other, 1e12) / (d_pred + _EPS)


@register_score("trustscore")
class TrustScore(Scorer):
    """``-trust`` on penultimate features. Params: ``k`` (10), ``alpha`` (0.05), ``max_per_class`` (1000)."""

    white_box = True
    PARAMS = {"k": 10, "alpha": 0.05, "max_per_class": 1000}
    index: TrustScoreIndex | None = None

    def fit(self, ctx: ScoreContext) -> TrustScore:
        feats, _ = context_features(ctx, ctx.train_split)
        self.index = TrustScoreIndex(
            feats, ctx.labels(ctx.train_split), ctx.num_classes, k=int(self.params["k"]),
            alpha=float(self.params["alpha"]), max_per_class=self.params["max_per_class"],
            seed=ctx.seed,
        )  # fmt: skip
        return self

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        if self.index is None:
            raise ConfigError("call fit(ctx) before score(ctx, split)")
        feats, probs = context_features(ctx, split)
        return -self.index.trust(feats, probs.argmax(axis=1))
