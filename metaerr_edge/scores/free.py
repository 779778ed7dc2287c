"""Stronger free (black-box) baselines, and a fusable torch module for every free score.

All of them read the base's probabilities ``p`` (N x K) only; higher = more likely wrong.

* ``maxlogit-pnorm`` (Cattelan & Silva, "How to fix a broken confidence estimator: evaluating
  post-hoc methods for selective classification with deep neural networks", UAI 2024).
  ``z = log(max(p, f))`` with ``f`` the smallest normal float32 (``PROB_FLOOR``, about 1.2e-38:
  a float32 softmax still tells apart probabilities far below 1e-7, and flooring there would tie every
  row whose top logit leads by more than 16); ``z_c = z - mean_k z_k`` (the centred logits: ``log p`` differs from
  the logits by a per-row constant, which centring removes); confidence
  ``c = max_k z_c,k / ||z_c||_p``, with ``p = 0`` meaning no normalisation (MaxLogit of the
  centred logits). Failure score ``1 - c / B``, a rank-preserving map into [0, 1]: ``B = 1`` for
  ``p >= 1`` (``0 <= max_k z_c,k <= ||z_c||_inf <= ||z_c||_p``, so ``0 <= c <= 1``) and
  ``B = -ln f`` (about 87.3) for ``p = 0`` (``max_k z_c,k <= max z - min z <= -ln f``). A uniform row
  (``z_c = 0``) gets ``c = 0``. ``p`` is chosen in {0, ..., 8} by the lowest AURC on the calib
  split; when no ``p`` beats MSP's calib AURC the score falls back to MSP (the paper's safeguard).
  No temperature: ``c / T`` ranks the rows as ``c`` does, so T cannot change AURC or AUROC; the
  paper tunes a temperature only for the softmax variant (MSP-pNorm), which is not implemented.
* ``rel-u`` (Dadalto et al., "A data-driven measure of relative uncertainty for misclassification
  detection", ICLR 2024). On the calib split,
  ``D = ReLU(lam * E[p p^T | wrong] - (1 - lam) * E[p p^T | correct])`` off the diagonal, zero on
  it, divided by its largest entry; failure score ``p D p^T``, in [0, 1] (at most
  ``sum_{i != j} p_i p_j = 1 - sum p^2``). ``D`` is symmetric and non-negative. ``lam`` is chosen
  in {0.1, ..., 0.9} by 2-fold cross-fitted calib AURC (``D`` fitted on one half of calib, AURC
  on the other, averaged; then ``D`` refitted on all of calib), so the choice does not reward
  ``D`` for fitting its own rows. When ``D`` is all zero (e.g. calib holds no error) it falls back
  to ``1 - I``, where ``p D p^T = 1 - sum p^2`` is DOCTOR's Gini score. The formula is the
  project's design notes' reading of the paper.
* ``logit-margin``: ``exp(-(z_(1) - z_(2)))`` with ``z_(1) >= z_(2)`` the two largest logits,
  which equals ``p_(2) / p_(1)`` (softmax ratios are exponentiated logit differences): in [0, 1].

:func:`score_module` turns any fitted free scorer (these three and msp, entropy, margin,
doctor-gini, doctor-ratio, temperature) into an ``nn.Module`` ``forward(x, probs) -> [N]`` that
:class:`~metaerr_edge.models.fused.FusedModel` takes as its ``meta`` and that exports to ONNX.
``score`` of the three scorers here runs that same module in float64. Entropy (in [0, ln K]) and
doctor-ratio (in [0, K - 1]) keep their own ranges, so a deployed threshold in [0, 1] reaches only
part of them; the others lie in [0, 1].
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.metrics import aurc
from metaerr_edge.scores.base import ScoreContext, Scorer, register_score
from metaerr_edge.scores.temperature import PROB_FLOOR

__all__ = [
    "FUSABLE_SCORES", "LAMBDA_GRID", "P_GRID", "FreeScoreModule", "LogitMargin", "MaxLogitPNorm", "RelU",
    "choose_lambda", "choose_p", "fit_relu_matrix", "logit_margin_score", "maxlogit_pnorm_score", "relu_score",
    "score_module",
]

P_GRID: tuple[int, ...] = tuple(range(9))  # p = 0 (no normalisation), 1, ..., 8
LAMBDA_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))


# --- the scores as torch functions of probs (float64 in `score`, float32 in the fused graph) -------------


def _msp(p: Tensor) -> Tensor:
    return 1.0 - p.amax(dim=1)


def _entropy(p: Tensor) -> Tensor:
    return -(p * p.clamp_min(PROB_FLOOR).log()).sum(dim=1)


def _margin(p: Tensor) -> Tensor:
    top = p.topk(2, dim=1).values
    return 1.0 - (top[:, 0] - top[:, 1])


def _gini(p: Tensor) -> Tensor:
    return 1.0 - (p * p).sum(dim=1)


def _ratio(p: Tensor) -> Tensor:
    err = _msp(p)
    return err / (1.0 - err).clamp_min(1e-12)


def _temperature(p: Tensor, temperature: float) -> Tensor:
    return 1.0 - torch.softmax(p.clamp_min(PROB_FLOOR).log() / temperature, dim=1).amax(dim=1)


def _maxlogit_pnorm(p: Tensor, norm: int) -> Tensor:
    z = p.clamp_min(PROB_FLOOR).log()
    zc = z - z.mean(dim=1, keepdim=True)
    if norm == 0:
        return 1.0 - zc.amax(dim=1) / -math.log(PROB_FLOOR)
    scale = zc.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)  # ||z_c||_p = scale * ||z_c / scale||_p, no overflow
    unit = zc / scale
    # ||unit||_p >= max|unit| = 1 unless z_c = 0, where the clamp makes c = 0 / 1 = 0
    length = (unit.abs() ** norm).sum(dim=1).pow(1.0 / norm).clamp_min(1.0)
    return 1.0 - unit.amax(dim=1) / length


def _relu(p: Tensor, matrix: Tensor) -> Tensor:
    return ((p @ matrix) * p).sum(dim=1)


def _logit_margin(p: Tensor) -> Tensor:
    top = p.topk(2, dim=1).values
    return top[:, 1] / top[:, 0].clamp_min(PROB_FLOOR)


class FreeScoreModule(nn.Module):
    """One free failure score as ``forward(x, probs) -> [N]`` (``x`` unused), for :class:`FusedModel`.

    Torch ops only, no data-dependent shapes: it traces and exports with the fused graph. A fitted
    matrix (REL-U's ``D``) is a buffer; other fitted values (T, p) are constants of ``fn``.

    Example:
        >>> fused = FusedModel(base, score_module(scorer), preprocess, threshold=0.5)
        >>> score_module(create_score("msp"))(None, torch.tensor([[0.7, 0.3]]))
        tensor([0.3000])
    """

    matrix: Tensor | None

    def __init__(self, score_name: str, fn: Callable[..., Tensor], matrix: npt.ArrayLike | None = None) -> None:
        super().__init__()
        self.score_name = score_name
        self.fn = fn
        self._exact = None if matrix is None else np.array(matrix, dtype=np.float64)  # for `numpy`
        self.register_buffer("matrix", None if self._exact is None else torch.from_numpy(self._exact).float())

    def forward(self, x: Tensor | None, probs: Tensor) -> Tensor:
        return self.fn(probs) if self.matrix is None else self.fn(probs, self.matrix.to(probs.dtype))

    def extra_repr(self) -> str:
        return self.score_name

    def numpy(self, probs: npt.ArrayLike) -> np.ndarray:
        """The score of ``probs`` (N x K, K >= 2) in float64 (the module itself stays float32)."""
        arr = np.asarray(probs, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise DataError(f"{self.score_name} needs N x K probabilities with K >= 2, got shape {arr.shape}")
        extra = () if self._exact is None else (torch.from_numpy(self._exact),)
        if extra and self._exact.shape != (arr.shape[1],) * 2:
            raise DataError(f"{self.score_name} needs a K x K matrix for N x K probabilities, got "
                            f"{self._exact.shape} and {arr.shape}")
        with torch.no_grad():
            return self.fn(torch.from_numpy(arr), *extra).numpy()


_PLAIN: dict[str, Callable[[Tensor], Tensor]] = {
    "msp": _msp, "entropy": _entropy, "margin": _margin, "doctor-gini": _gini, "doctor-ratio": _ratio}
#: Registered scores that :func:`score_module` turns into a fusable module.
FUSABLE_SCORES: tuple[str, ...] = (*_PLAIN, "temperature", "maxlogit-pnorm", "rel-u", "logit-margin")


def score_module(scorer: Scorer) -> FreeScoreModule:
    """The fitted free ``scorer`` as a fusable module ``forward(x, probs) -> failure score [N]``.

    Raises:
        ConfigError: the scorer is not a free score (see :data:`FUSABLE_SCORES`) or is not fitted.

    Example:
        >>> scorer = create_score("rel-u").fit(ctx)
        >>> fused = FusedModel(run.base, score_module(scorer), run.preprocess, threshold=0.4)
        >>> export_onnx(fused, contract, "rel-u.onnx", dynamo=False)
    """
    if isinstance(scorer, _TorchScorer):
        return scorer.as_module()
    if scorer.name in _PLAIN:
        return FreeScoreModule(scorer.name, _PLAIN[scorer.name])
    if scorer.name == "temperature":
        return FreeScoreModule(scorer.name, partial(_temperature, temperature=float(getattr(scorer, "temperature"))))
    raise ConfigError(f"failure score {scorer.name!r} has no fusable module; the free scores have one: {list(FUSABLE_SCORES)}")


# --- numpy entry points ----------------------------------------------------------------------------------


def maxlogit_pnorm_score(probs: npt.ArrayLike, p: int) -> np.ndarray:
    """MaxLogit-pNorm failure score ``1 - c / B`` (module docstring), float64.

    Example:
        >>> maxlogit_pnorm_score(np.exp([[1.0, 0.0, -1.0]]) / np.exp([1.0, 0.0, -1.0]).sum(), 1)
        array([0.5])
    """
    return FreeScoreModule("maxlogit-pnorm", partial(_maxlogit_pnorm, norm=_check_p(p))).numpy(probs)


def logit_margin_score(probs: npt.ArrayLike) -> np.ndarray:
    """``exp(-(z_(1) - z_(2))) = p_(2) / p_(1)``, float64.

    Example:
        >>> logit_margin_score([[0.5, 0.25, 0.25]])
        array([0.5])
    """
    return FreeScoreModule("logit-margin", _logit_margin).numpy(probs)


def relu_score(probs: npt.ArrayLike, matrix: npt.ArrayLike) -> np.ndarray:
    """REL-U's ``p D p^T`` per row, float64.

    Example:
        >>> relu_score([[0.5, 0.5]], [[0.0, 1.0], [1.0, 0.0]])
        array([0.5])
    """
    return FreeScoreModule("rel-u", _relu, matrix).numpy(probs)


def fit_relu_matrix(probs: npt.ArrayLike, is_error: npt.ArrayLike, lam: float) -> np.ndarray:
    """REL-U's ``D``: ``ReLU(lam E[pp^T|wrong] - (1-lam) E[pp^T|correct])``, zero diagonal, max entry 1.

    All zero when no off-diagonal entry is positive (e.g. no wrong row); an absent group counts as 0.

    Example:
        >>> fit_relu_matrix([[0.9, 0.1], [0.5, 0.5]], [0, 1], 0.5)
        array([[0., 1.],
               [1., 0.]])
    """
    p, wrong = np.asarray(probs, dtype=np.float64), np.asarray(is_error).astype(bool)
    if p.ndim != 2 or wrong.shape != (len(p),):
        raise DataError(f"rel-u needs N x K probabilities and N error labels, got shapes {p.shape} and {wrong.shape}")

    def second_moment(rows: np.ndarray) -> np.ndarray:
        return rows.T @ rows / max(len(rows), 1)

    d = np.maximum(lam * second_moment(p[wrong]) - (1.0 - lam) * second_moment(p[~wrong]), 0.0)
    np.fill_diagonal(d, 0.0)
    top = d.max()
    return d / top if top > 0 else d


def choose_p(probs: npt.ArrayLike, is_error: npt.ArrayLike, grid: Sequence[int] = P_GRID) -> dict[str, Any]:
    """``{"p": p}`` with the lowest AURC on these rows (the smallest p on ties), or ``{"fallback": "msp"}``
    when none is below MSP's AURC.

    Example:
        >>> choose_p(ctx.probs("calib"), ctx.is_error("calib"))
        {'p': 2}
    """
    msp = aurc(FreeScoreModule("msp", _msp).numpy(probs), is_error)
    by_p = {p: aurc(maxlogit_pnorm_score(probs, p), is_error) for p in grid}
    best = min(by_p, key=by_p.__getitem__)
    return {"p": best} if by_p[best] < msp - 1e-12 else {"fallback": "msp"}


def choose_lambda(probs: npt.ArrayLike, is_error: npt.ArrayLike, grid: Sequence[float] = LAMBDA_GRID,
                  seed: int = 0) -> float:
    """The ``lam`` with the lowest 2-fold cross-fitted AURC on these rows (the smallest on ties).

    The rows are split in two halves at random (``seed``); ``D`` fitted on one half is scored on
    the other, both ways, and the two AURCs averaged.

    Example:
        >>> choose_lambda(ctx.probs("calib"), ctx.is_error("calib"))
        0.6
    """
    p, err = np.asarray(probs, dtype=np.float64), np.asarray(is_error)
    if len(p) < 2:
        raise DataError(f"rel-u chooses lam on at least 2 calibration rows, got {len(p)}")
    order = np.random.default_rng(seed).permutation(len(p))
    halves = (order[: len(p) // 2], order[len(p) // 2:])

    def held_out(lam: float) -> float:
        return sum(aurc(relu_score(p[b], fit_relu_matrix(p[a], err[a], lam)), err[b])
                   for a, b in (halves, halves[::-1])) / 2

    return min(grid, key=held_out)


# --- the scorers -----------------------------------------------------------------------------------------


def _check_p(p: Any) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
        raise ConfigError(f"maxlogit-pnorm p must be None (chosen on calib) or an integer >= 0, got {p!r}")
    return int(p)


def _calib(ctx: ScoreContext, name: str) -> tuple[np.ndarray, np.ndarray]:
    probs = ctx.probs("calib")
    if len(probs) == 0:
        raise DataError(f"{name} is fitted on the calibration split, which is empty")
    return probs, error_labels(probs, ctx.labels("calib"))


class _TorchScorer(Scorer):
    """A free scorer whose ``score`` is its own fusable module run in float64."""

    @abc.abstractmethod
    def as_module(self) -> FreeScoreModule:
        """The fitted score as ``forward(x, probs) -> [N]`` for :class:`FusedModel` (``x`` unused).

        Example:
            >>> FusedModel(base, create_score("logit-margin").as_module(), preprocess)
        """

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        return self.as_module().numpy(ctx.probs(split))


@register_score("logit-margin")
class LogitMargin(_TorchScorer):
    """``exp(-(z_(1) - z_(2))) = p_(2) / p_(1)``: the logit margin as a failure score in [0, 1]."""

    def as_module(self) -> FreeScoreModule:
        return FreeScoreModule(self.name, _logit_margin)


@register_score("maxlogit-pnorm")
class MaxLogitPNorm(_TorchScorer):
    """MaxLogit-pNorm (Cattelan & Silva, 2024): ``p`` chosen on calib AURC, MSP when none beats it.

    ``p=None`` chooses ``p`` in :data:`P_GRID` on the calib split; an integer ``p >= 0`` pins it.
    After ``fit``, ``chosen`` is ``{"p": p}`` or ``{"fallback": "msp"}``.

    Example:
        >>> create_score("maxlogit-pnorm").fit(ctx).chosen
        {'p': 2}
    """

    PARAMS = {"p": None}
    chosen: dict[str, Any]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params["p"]
        self.chosen = {} if p is None else {"p": _check_p(p)}

    def fit(self, ctx: ScoreContext) -> MaxLogitPNorm:
        if self.params["p"] is None:
            self.chosen = choose_p(*_calib(ctx, self.name))
        return self

    def as_module(self) -> FreeScoreModule:
        if not self.chosen:
            raise ConfigError("maxlogit-pnorm chooses p on the calib split: call fit(ctx) first, or pass p=...")
        if "fallback" in self.chosen:
            return FreeScoreModule("msp", _msp)
        return FreeScoreModule(self.name, partial(_maxlogit_pnorm, norm=self.chosen["p"]))


@register_score("rel-u")
class RelU(_TorchScorer):
    """REL-U (Dadalto et al., 2024): ``p D p^T`` with ``D`` fitted on calib in closed form.

    ``lam=None`` chooses ``lam`` in :data:`LAMBDA_GRID` by cross-fitted calib AURC; a number in
    [0, 1] pins it. After ``fit``, ``chosen`` is ``{"lam": lam}``, plus ``"fallback": "doctor-gini"``
    when ``D`` came out all zero; ``matrix`` is ``D``.

    Example:
        >>> create_score("rel-u").fit(ctx).chosen
        {'lam': 0.6}
    """

    PARAMS = {"lam": None}
    chosen: dict[str, Any]
    matrix: np.ndarray | None = None

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        lam = self.params["lam"]
        if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0):
            raise ConfigError(f"rel-u lam must be None (chosen on calib) or a number in [0, 1], got {lam!r}")
        self.chosen = {}

    def fit(self, ctx: ScoreContext) -> RelU:
        probs, err = _calib(ctx, self.name)
        lam = self.params["lam"]
        lam = float(lam) if lam is not None else choose_lambda(probs, err, seed=ctx.seed)
        d = fit_relu_matrix(probs, err, lam)
        self.chosen = {"lam": lam}
        if not d.any():
            d = 1.0 - np.eye(len(d))
            self.chosen["fallback"] = "doctor-gini"
        self.matrix = d
        return self

    def as_module(self) -> FreeScoreModule:
        if self.matrix is None:
            raise ConfigError("rel-u fits its matrix on the calib split: call fit(ctx) before score or as_module")
        return FreeScoreModule(self.name, _relu, self.matrix)
