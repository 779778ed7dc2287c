"""Temperature scaling (Guo et al., 2017): MSP of ``softmax(logits / T)``, T fitted on calib NLL.

Only probabilities are stored, so ``log p`` stands in for the logits: it differs from them by a
per-row constant, which the softmax ignores, so ``softmax(log p / T) = softmax(logits / T)`` exactly.
"""

from __future__ import annotations

import numpy as np

from metaerr_edge.errors import DataError
from metaerr_edge.scores.base import ScoreContext, Scorer, register_score

_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]
#: The floor of a probability before its log, in every free score and its fused module alike: the
#: smallest normal float32 (probabilities come from a float32 softmax; an exact 0 becomes this).
PROB_FLOOR = float(np.finfo(np.float32).tiny)


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs.astype(np.float64), PROB_FLOOR, None))


def scaled_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` in float64."""
    z = _log_probs(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def temperature_nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(log(probs) / T)``."""
    z = _log_probs(probs) / temperature
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising calib NLL (bounded scalar search on log T).

    Example:
        >>> t = fit_temperature(ctx.probs("calib"), ctx.labels("calib"))
    """
    from scipy.optimize import minimize_scalar

    if len(probs) == 0:
        raise DataError("temperature scaling needs a non-empty calibration split")
    labels = np.asarray(labels, np.int64)
    res = minimize_scalar(lambda lt: temperature_nll(probs, labels, float(np.exp(lt))), bounds=_LOG_T_BOUNDS,
                          method="bounded", options={"xatol": 1e-5})  # fmt: skip
    return float(np.exp(res.x))


@register_score("temperature")
class TemperatureScore(Scorer):
    """``1 - max softmax(logits / T)`` with T fitted on the calib split's NLL. Black-box."""

    temperature: float = 1.0

    def fit(self, ctx: ScoreContext) -> TemperatureScore:
        self.temperature = fit_temperature(ctx.probs("calib"), ctx.labels("calib"))
        return self

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        return 1.0 - scaled_probs(ctx.probs(split), self.temperature).max(axis=1)
