"""Scores read off the base's softmax alone: MSP, entropy, margin and DOCTOR (both forms)."""

from __future__ import annotations

import numpy as np

from metaerr_edge.scores.base import Scorer, ScoreContext, register_score


def msp_score(probs: np.ndarray) -> np.ndarray:
    """``1 - max_k p_k``."""
    return (1.0 - probs.max(axis=1)).astype(np.float64)


def entropy_score(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum p log p`` (nats)."""
    p = probs.astype(np.float64)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def margin_score(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``."""
    top2 = np.sort(probs, axis=1)[:, -2:].astype(np.float64)
    return 1.0 - (top2[:, 1] - top2[:, 0])


def doctor_gini_score(probs: np.ndarray) -> np.ndarray:
    """DOCTOR's D_alpha: ``1 - sum p^2`` (Granese et al., 2021)."""
    return 1.0 - (probs.astype(np.float64) ** 2).sum(axis=1)


def doctor_ratio_score(probs: np.ndarray) -> np.ndarray:
    """DOCTOR's D_beta: ``P_err / (1 - P_err)`` with ``P_err = 1 - max p``."""
    p_err = msp_score(probs)
    return p_err / np.clip(1.0 - p_err, 1e-12, None)


class _ProbsScorer(Scorer):
    fn = staticmethod(msp_score)

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        return type(self).fn(ctx.probs(split))


def _probs_scorer(name: str, fn) -> type[Scorer]:
    cls = type(f"{fn.__name__}_scorer", (_ProbsScorer,), {"fn": staticmethod(fn), "__doc__": fn.__doc__})
    return register_score(name)(cls)


MSP = _probs_scorer("msp", msp_score)
Entropy = _probs_scorer("entropy", entropy_score)
Margin = _probs_scorer("margin", margin_score)
DoctorGini = _probs_scorer("doctor-gini", doctor_gini_score)
DoctorRatio = _probs_scorer("doctor-ratio", doctor_ratio_score)
