"""Failure scores behind one interface (higher = more likely wrong): MetaErr and every baseline."""

from metaerr_edge.scores.base import Scorer, ScoreContext, available_scores, create_score, register_score
from metaerr_edge.scores.softmax import (
    doctor_gini_score,
    doctor_ratio_score,
    entropy_score,
    margin_score,
    msp_score,
)

__all__ = [
    "ScoreContext",
    "Scorer",
    "available_scores",
    "create_score",
    "doctor_gini_score",
    "doctor_ratio_score",
    "entropy_score",
    "margin_score",
    "msp_score",
    "register_score",
]
