"""Pseudo-label selectors: which unlabelled pool samples to keep, and with which label.

Every selector has one method, ``select(ctx) -> (pool_indices, pseudo_labels)``, where ``ctx`` is a
:class:`SelectContext` (the current base, its probabilities on the pool, the labelled set, the
pseudo-labels the current base was trained on, preprocessing, round number and budget). The
pseudo-label is always the current base's argmax; selectors differ only in which samples they keep.
The registry below is the one list of them:

- ``confidence``: max softmax probability >= ``threshold`` (the classic pseudo-labelling rule).
- ``topk``: class-balanced top-``budget`` by confidence (``budget // K`` per predicted class).
- ``mc-dropout``: UPS-style, confident (MC-mean probability >= ``threshold``) AND certain (std of the
  predicted class's probability over ``passes`` dropout passes <= ``max_std``).
- ``metaerr``: a MetaErr meta-model, re-fitted each round on out-of-fold errors of the labelled set,
  keeps the pool samples it predicts correct (failure score < ``max_score``).
- ``metaerr-topk``: the same meta-model, keeping the ``budget`` samples with the lowest failure score
  (count-matched: with the budget set to what ``confidence`` kept, precision compares at equal count).
- ``metaerr-balanced``: MetaErr with class balance: the budget split evenly over the predicted
  classes (as ``topk``), the lowest failure scores within each.
- ``metaerr-perclass``: MetaErr's ranking within each predicted class, keeping per class as many as
  ``confidence`` keeps there: the confidence selector's class mix, MetaErr's choice inside each class.

The MetaErr selectors learn from out-of-fold errors of the labelled set (``skip="auto"``: the head
stacked on the best free score, the cheap preset of ``metaerr-edge train``); ``meta_rows="labelled+pseudo"``
cross-fits over the labelled set and the pseudo-labels accepted in the round before, so the
meta-model sees many more (pseudo-)errors, at the price of targets that are themselves guesses.

A count-based selector given no budget uses the count ``confidence`` would keep from the same model
in the same round, so it is count-matched by default.
"""

from __future__ import annotations

import abc

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
from torch import nn

from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta import HeadConfig, MentorData, MetaData, MetaFitConfig, MetaModel, crossfit_probs, fit_meta, meta_scores
from metaerr_edge.models import FitConfig
from metaerr_edge.registry import Registry

log = logging.getLogger(__name__)

Selection = tuple[np.ndarray, np.ndarray]
#: What the MetaErr selectors' meta-model learns from (``meta_rows``).
META_ROWS = ("labelled", "labelled+pseudo")


@dataclass(frozen=True)
class SelectContext:
    """What a selector may look at in one round. Pool arrays are the *unlabelled* pool only.

    ``pseudo_images``/``pseudo_labels`` are the pseudo-labels the current ``model`` was trained on
    (empty in round 1); ``fit`` is the config the current model was trained with; ``factory`` builds a
    fresh, untrained base of the same architecture.
    """

    model: nn.Module
    probs: np.ndarray
    pool_images: np.ndarray
    labelled_images: np.ndarray
    labelled_labels: np.ndarray
    preprocess: Preprocess
    round: int
    budget: int | None
    fit: FitConfig
    factory: Callable[[], nn.Module]
    pseudo_images: np.ndarray | None = None
    pseudo_labels: np.ndarray | None = None
    seed: int = 0
    progress: bool = False
    info: dict = field(default_factory=dict)  # selectors write diagnostics here (meta AUROC...)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])


class Selector(abc.ABC):
    """Base class: ``select(ctx)`` returns sorted unique pool indices and their pseudo-labels."""

    name: str = ""

    @abc.abstractmethod
    def select(self, ctx: SelectContext) -> Selection:
        """The chosen pool indices (sorted, unique) and their pseudo-labels."""

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}


#: The pseudo-label selectors; options are checked against each dataclass's fields.
SELECTORS: Registry[type[Selector]] = Registry("selector", name_attr="name")
register_selector = SELECTORS.register


def available_selectors() -> list[str]:
    """The registered selectors, sorted."""
    return sorted(SELECTORS.available())


def create_selector(name: str, **kwargs) -> Selector:
    """Build a registered selector; unknown names or options raise :class:`ConfigError`.

    Example:
        >>> sel = create_selector("confidence", threshold=0.95)
    """
    return SELECTORS.create(name, **kwargs)


def _selection(order: np.ndarray, probs: np.ndarray) -> Selection:
    idx = np.unique(np.asarray(order, dtype=np.int64))
    return idx, probs[idx].argmax(axis=1).astype(np.int64)


def _check_threshold(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")


def confidence_count(probs: np.ndarray, threshold: float = 0.95) -> int:
    """How many pool samples the ``confidence`` selector keeps at ``threshold``."""
    return int((probs.max(axis=1) >= threshold).sum())


def _budget(ctx: SelectContext, threshold: float) -> int:
    n = confidence_count(ctx.probs, threshold) if ctx.budget is None else int(ctx.budget)
    if n < 0:
        raise ConfigError(f"the per-round budget must be >= 0, got {n}")
    return min(n, len(ctx.probs))


def lowest(score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` smallest scores; ties broken by index (stable), so results are deterministic."""
    return np.argsort(score, kind="stable")[:n]


def per_class_pick(pred: np.ndarray, score: np.ndarray, quotas: np.ndarray, n: int) -> np.ndarray:
    """Within each predicted class ``c`` the ``quotas[c]`` lowest scores, then (when a class had fewer
    candidates, or the quotas sum below ``n``) the lowest scores of the rest, up to ``n`` in all.

    Example:
        >>> per_class_pick(np.array([0, 0, 1, 1]), np.array([0.3, 0.1, 0.2, 0.4]), np.array([1, 1]), 2)
        array([1, 2])
    """
    taken = [c_idx[lowest(score[c_idx], int(q))] for c, q in enumerate(quotas) for c_idx in [np.flatnonzero(pred == c)]]
    taken = np.concatenate(taken) if taken else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(score)), taken)
    return np.concatenate([taken, rest[lowest(score[rest], max(0, n - len(taken)))]])


def scaled_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """``counts`` scaled to sum to ``n`` by the largest-remainder rule (even quotas when all are 0).

    Example:
        >>> scaled_quotas(np.array([6, 3, 1]), 5)
        array([3, 2, 0])
    """
    counts = np.asarray(counts, np.float64)
    if counts.sum() <= 0:
        counts = np.ones_like(counts)
    exact = counts * n / counts.sum()
    out = np.floor(exact).astype(np.int64)
    out[np.argsort(-(exact - out), kind="stable")[: n - int(out.sum())]] += 1
    return out


@register_selector("confidence")
@dataclass(frozen=True)
class ConfidenceSelector(Selector):
    threshold: float = 0.95

    def __post_init__(self) -> None:
        _check_threshold("threshold", self.threshold)

    def select(self, ctx: SelectContext) -> Selection:
        return _selection(np.flatnonzero(ctx.probs.max(axis=1) >= self.threshold), ctx.probs)


@register_selector("topk")
@dataclass(frozen=True)
class TopKSelector(Selector):
    """Class-balanced: ``budget // K`` most confident per predicted class (the remainder, and any
    class short of candidates, is filled by the most confident of the rest). ``threshold`` only sets
    the default budget (the confidence selector's count)."""

    threshold: float = 0.95

    def __post_init__(self) -> None:
        _check_threshold("threshold", self.threshold)

    def select(self, ctx: SelectContext) -> Selection:
        n = _budget(ctx, self.threshold)
        quotas = np.full(ctx.num_classes, n // ctx.num_classes)
        return _selection(per_class_pick(ctx.probs.argmax(axis=1), -ctx.probs.max(axis=1), quotas, n), ctx.probs)


@register_selector("mc-dropout")
@dataclass(frozen=True)
class MCDropoutSelector(Selector):
    """UPS (Rizve et al. 2021): keep when the MC-mean confidence >= ``threshold`` and the std over
    ``passes`` dropout passes of the predicted class's probability <= ``max_std``. The label is the
    MC-mean argmax."""

    threshold: float = 0.95
    max_std: float = 0.05
    passes: int = 10

    def __post_init__(self) -> None:
        _check_threshold("threshold", self.threshold)
        if self.passes < 2 or self.max_std < 0:
            raise ConfigError(f"mc-dropout needs passes >= 2 and max_std >= 0, got {self.passes}, {self.max_std}")

    def select(self, ctx: SelectContext) -> Selection:
        from metaerr_edge.scores.mc_dropout import mc_dropout_probs

        mc = mc_dropout_probs(ctx.model, ctx.pool_images, ctx.preprocess, passes=self.passes, seed=ctx.seed + ctx.round, device=ctx.fit.device)
        mean = mc.mean(axis=0)
        pred = mean.argmax(axis=1)
        std = mc[:, np.arange(len(pred)), pred].std(axis=0)
        keep = np.flatnonzero((mean.max(axis=1) >= self.threshold) & (std <= self.max_std))
        return _selection(keep, mean)


def labelled_oof_probs(ctx: SelectContext, folds: int, with_pseudo: bool = False) -> np.ndarray:
    """Out-of-fold base probabilities on the labelled set, each fold scored by a model that never saw it.

    :func:`~metaerr_edge.meta.crossfit_probs` on the labelled set with the round's training schedule
    and a round-dependent seed. With ``with_pseudo`` the fold models also train on the current
    pseudo-labels (as the current base did), which tracks the base more closely between rounds at
    ``folds`` times the cost of a base training.
    """
    fit = FitConfig(**{**ctx.fit.__dict__, "seed": ctx.fit.seed + 7 + 101 * ctx.round})
    extra = (ctx.pseudo_images, ctx.pseudo_labels) if with_pseudo and ctx.pseudo_labels is not None else None
    return crossfit_probs(ctx.factory, ctx.labelled_images, ctx.labelled_labels, ctx.preprocess, fit, k=folds,
                          progress=ctx.progress, desc="meta fold", extra=extra)[0]


@dataclass(frozen=True)
class _MetaErrBase(Selector):
    """Shared by ``metaerr`` and ``metaerr-topk``: fit a meta-model on out-of-fold labelled errors.

    The meta-model's training set is the labelled set only, re-fitted every round: accepted
    pseudo-labels are never meta-training *targets* (their labels may be wrong, and the base agrees
    with its own pseudo-labels by construction). ``oof_pseudo=True`` adds them to the fold models'
    training data (see :func:`labelled_oof_probs`).
    """

    mode: str = "probs"
    folds: int = 3
    meta_epochs: int = 30
    max_score: float = 0.5
    threshold: float = 0.95
    oof_pseudo: bool = False
    meta_rows: str = "labelled"
    skip: str = "none"

    def __post_init__(self) -> None:
        HeadConfig(self.mode, skip=self.skip)  # validates the mode and the skip (skip="auto": the cheap preset's head)
        _check_threshold("max_score", self.max_score)
        _check_threshold("threshold", self.threshold)
        if self.meta_rows not in META_ROWS:
            raise ConfigError(f"meta_rows must be one of {list(META_ROWS)}, got {self.meta_rows!r}")
        if self.mode == "mentor-features":
            raise ConfigError("the metaerr selector supports modes probs, image, image+probs, mentor (not mentor-features)")

    def failure_scores(self, ctx: SelectContext) -> np.ndarray:
        if len(ctx.labelled_labels) < 2 * self.folds:
            raise ConfigError(f"metaerr needs at least {2 * self.folds} labelled samples for {self.folds} folds, got {len(ctx.labelled_labels)}")
        data = self.meta_data(ctx)
        ctx.info.update(meta_train=len(data.labels), meta_errors=int(data.is_error.sum()))
        c, h, w = ctx.labelled_images.shape[1:]
        meta = MetaModel(HeadConfig(self.mode, skip=self.skip), c, ctx.num_classes, (h, w))
        mentor = None
        if self.mode == "mentor":  # a second opinion: the base's architecture, trained on the labelled set with another seed
            mentor = MentorData(ctx.labelled_images, ctx.labelled_labels, oof_folds=self.folds, factory=ctx.factory,
                                fit=FitConfig(**{**ctx.fit.__dict__, "seed": ctx.fit.seed + 7919 + 101 * ctx.round}))
        try:
            res = fit_meta(meta, data, ctx.preprocess,
                           MetaFitConfig(epochs=self.meta_epochs, seed=ctx.seed + ctx.round, device=ctx.fit.device),
                           mentor=mentor, progress=ctx.progress)  # fmt: skip
        except DataError as exc:  # too few (or too many) out-of-fold errors to learn from
            log.warning("metaerr round %d: %s; falling back to 1 - max prob", ctx.round, exc)
            ctx.info.update(meta_fallback="msp")
            return 1.0 - ctx.probs.max(axis=1)
        ctx.info.update(meta_val_auroc=res.val_auroc)
        return meta_scores(meta, ctx.pool_images, ctx.probs.astype(np.float32), ctx.preprocess, device=ctx.fit.device)


    def meta_data(self, ctx: SelectContext) -> MetaData:
        """The rows the meta-model learns from: the labelled set with out-of-fold probabilities, and
        with ``meta_rows="labelled+pseudo"`` the round's accepted pseudo-labels too (one cross-fit over
        both; a pseudo-labelled row's "error" is disagreement with its pseudo-label)."""
        if self.meta_rows == "labelled" or ctx.pseudo_labels is None or len(ctx.pseudo_labels) == 0:
            return MetaData(ctx.labelled_images, labelled_oof_probs(ctx, self.folds, self.oof_pseudo), ctx.labelled_labels)
        x = np.concatenate([ctx.labelled_images, ctx.pseudo_images])
        y = np.concatenate([ctx.labelled_labels, ctx.pseudo_labels])
        fit = FitConfig(**{**ctx.fit.__dict__, "seed": ctx.fit.seed + 7 + 101 * ctx.round})
        oof, _ = crossfit_probs(ctx.factory, x, y, ctx.preprocess, fit, k=self.folds, progress=ctx.progress, desc="meta fold")
        ctx.info.update(meta_pseudo_rows=int(len(ctx.pseudo_labels)))
        return MetaData(x, oof, y)


@register_selector("metaerr")
@dataclass(frozen=True)
class MetaErrSelector(_MetaErrBase):
    """Keep pool samples the meta-model predicts correct: failure score < ``max_score`` (0.5 is the
    decision boundary of its class-weighted loss)."""

    def select(self, ctx: SelectContext) -> Selection:
        return _selection(np.flatnonzero(self.failure_scores(ctx) < self.max_score), ctx.probs)


@register_selector("metaerr-topk")
@dataclass(frozen=True)
class MetaErrTopKSelector(_MetaErrBase):
    """Keep the ``budget`` pool samples with the lowest failure score (default budget: the count the
    confidence selector at ``threshold`` keeps from the same model)."""

    def select(self, ctx: SelectContext) -> Selection:
        n = _budget(ctx, self.threshold)
        return _selection(lowest(self.failure_scores(ctx), n), ctx.probs)


@register_selector("metaerr-balanced")
@dataclass(frozen=True)
class MetaErrBalancedSelector(_MetaErrBase):
    """MetaErr with class balance: ``budget // K`` lowest failure scores per predicted class, the
    remainder (and any class short of candidates) filled by the lowest of the rest, as ``topk``."""

    def select(self, ctx: SelectContext) -> Selection:
        n = _budget(ctx, self.threshold)
        quotas = np.full(ctx.num_classes, n // ctx.num_classes)
        return _selection(per_class_pick(ctx.probs.argmax(axis=1), self.failure_scores(ctx), quotas, n), ctx.probs)


@register_selector("metaerr-perclass")
@dataclass(frozen=True)
class MetaErrPerClassSelector(_MetaErrBase):
    """MetaErr's ranking within each predicted class: per class as many as the confidence selector at
    ``threshold`` keeps there (scaled to the budget when one is given), the lowest failure scores of
    that class. Against ``confidence`` at equal count it differs only in which samples of a class it keeps."""

    def select(self, ctx: SelectContext) -> Selection:
        n = _budget(ctx, self.threshold)
        pred = ctx.probs.argmax(axis=1)
        confident = np.bincount(pred[ctx.probs.max(axis=1) >= self.threshold], minlength=ctx.num_classes)
        return _selection(per_class_pick(pred, self.failure_scores(ctx), scaled_quotas(confident, n), n), ctx.probs)
