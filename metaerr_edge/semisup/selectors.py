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
- ``mc-dropout-topk``: the same MC-Dropout passes, keeping the ``budget`` samples whose predicted
  class's probability varies least over the passes (UPS's uncertainty as a ranking, count-matched).
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
in the same round, so it is count-matched by default. Selectors that share work in one round (the
MetaErr selectors' out-of-fold rows and heads, the MC-Dropout passes) keep it in ``ctx.cache``, so
several of them compared on the same context (``run_pseudo_labelling(shadows=...)``) pay for it once.
"""

from __future__ import annotations

import abc

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta import HeadConfig, MentorData, MetaData, MetaFitConfig, MetaModel, crossfit_probs, fit_meta, meta_scores
from metaerr_edge.data import shift_views
from metaerr_edge.models import FitConfig, predict_probs
from metaerr_edge.models.training import steps_at_least
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
    fresh, untrained base of the same architecture. ``schedule`` and ``min_steps`` are the base's
    schedule before its epochs were raised for the round's training-set size (``schedule`` None:
    ``fit``): a model a selector trains on ``n`` rows gets :meth:`fit_on` ``(n)``, the same rule, so a
    fold model on 67 labelled images is not trained for the 3 epochs the round's 55,000-image base got.
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
    schedule: FitConfig | None = None
    min_steps: int = 0
    cache: dict = field(default_factory=dict)  # work shared by selectors on this context (see the module doc)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def fit_on(self, n: int, seed: int) -> FitConfig:
        """The schedule for a model trained on ``n`` rows: the base's, with at least ``min_steps`` steps."""
        return steps_at_least(self.schedule or self.fit, n, self.min_steps, seed)


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


def _cached(ctx: SelectContext, key: tuple, compute: Callable[[], object]) -> object:
    """``compute()`` once per ``key`` and context inputs: a context made by ``dataclasses.replace``
    shares the cache, and finds an entry only where it reads the same model, arrays and round."""
    inputs = (ctx.model, ctx.probs, ctx.pool_images, ctx.labelled_images, ctx.labelled_labels, ctx.pseudo_images,
              ctx.pseudo_labels, ctx.preprocess, ctx.fit, ctx.schedule, ctx.factory)
    full = (*key, ctx.round, ctx.seed, ctx.min_steps, *map(id, inputs))
    if full not in ctx.cache:  # the entry holds its inputs, so no id in its key is reused while it lives
        ctx.cache[full] = (inputs, compute())
    return ctx.cache[full][1]


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
        mean, std = self.mc_stats(ctx)
        keep = np.flatnonzero((mean.max(axis=1) >= self.threshold) & (std <= self.max_std))
        return _selection(keep, mean)

    def mc_stats(self, ctx: SelectContext) -> tuple[np.ndarray, np.ndarray]:
        """The MC-mean probabilities on the pool and the std of the predicted class's probability."""

        def compute() -> tuple[np.ndarray, np.ndarray]:
            from metaerr_edge.scores.mc_dropout import mc_dropout_probs

            mc = mc_dropout_probs(ctx.model, ctx.pool_images, ctx.preprocess, passes=self.passes, seed=ctx.seed + ctx.round,
                                  device=ctx.fit.device)  # fmt: skip
            mean = mc.mean(axis=0)
            pred = mean.argmax(axis=1)
            return mean, mc[:, np.arange(len(pred)), pred].std(axis=0)

        return _cached(ctx, ("mc-dropout", self.passes), compute)


@register_selector("mc-dropout-topk")
@dataclass(frozen=True)
class MCDropoutTopKSelector(MCDropoutSelector):
    """UPS's uncertainty as a ranking: the ``budget`` pool samples with the lowest std of the predicted
    class's probability over the dropout passes (ties: the more confident MC mean first), labelled by
    the MC-mean argmax. ``threshold`` only sets the default budget (the confidence selector's count);
    ``max_std`` is not used."""

    def select(self, ctx: SelectContext) -> Selection:
        n = _budget(ctx, self.threshold)
        mean, std = self.mc_stats(ctx)
        order = np.lexsort((-mean.max(axis=1), std))[:n]  # by std, then by confidence
        return _selection(order, mean)


@dataclass(frozen=True)
class _MetaErrBase(Selector):
    """Shared by the MetaErr selectors: fit a meta-model on out-of-fold errors, every round.

    Its rows (:meth:`meta_data`) are the labelled set, scored out of fold by ``folds`` models of the
    round's schedule (``oof_pseudo=True``: those models also train on the current pseudo-labels, as
    the current base did); ``meta_rows="labelled+pseudo"`` cross-fits over the labelled set and the
    accepted pseudo-labels together, which gives many more (pseudo-)errors whose targets are guesses.
    ``mode="mentor-features"`` with ``shift_views=2`` is the robust preset of ``metaerr-edge train``
    (its small_cnn mentor trained on the labelled set; the views scored out of fold).
    """

    mode: str = "probs"
    folds: int = 3
    meta_epochs: int = 30
    max_score: float = 0.5
    threshold: float = 0.95
    oof_pseudo: bool = False
    meta_rows: str = "labelled"
    skip: str = "none"
    shift_views: int = 0

    def __post_init__(self) -> None:
        self.head()  # validates the mode and the skip (skip="auto": the cheap preset's head)
        _check_threshold("max_score", self.max_score)
        _check_threshold("threshold", self.threshold)
        if self.meta_rows not in META_ROWS:
            raise ConfigError(f"meta_rows must be one of {list(META_ROWS)}, got {self.meta_rows!r}")
        if isinstance(self.shift_views, bool) or not isinstance(self.shift_views, int) or not 0 <= self.shift_views <= 16:
            raise ConfigError(f"shift_views must be an integer from 0 to 16, got {self.shift_views!r}")

    def head(self) -> HeadConfig:
        """The meta-model's shape: mentor-features regresses the true-class probability, as in ``train``."""
        return HeadConfig(self.mode, skip=self.skip, target="tcp" if self.mode == "mentor-features" else "error")

    def rows_key(self) -> tuple:
        """What the meta-model's rows depend on beyond the context (selectors sharing it share the rows)."""
        return ("metaerr-rows", self.folds, self.meta_rows, self.oof_pseudo, self.shift_views)

    def failure_scores(self, ctx: SelectContext) -> np.ndarray:
        """The meta-model's failure score of every pool sample (fitted once per context and head)."""
        key = (*self.rows_key(), self.mode, self.skip, self.meta_epochs)
        scores, info = _cached(ctx, ("metaerr-scores", *key), lambda: self._fit_and_score(ctx))
        ctx.info.update(info)  # replayed on a cache hit
        return scores

    def _fit_and_score(self, ctx: SelectContext) -> tuple[np.ndarray, dict]:
        """Fit the meta-model on this round's rows; its pool scores and what the fit reports."""
        if len(ctx.labelled_labels) < 2 * self.folds:
            raise ConfigError(f"metaerr needs at least {2 * self.folds} labelled samples for {self.folds} folds, got {len(ctx.labelled_labels)}")
        data, views = self.meta_data(ctx)
        info: dict = {"meta_train": len(data.labels), "meta_errors": int(data.is_error.sum())}
        if len(data.labels) > len(ctx.labelled_labels):  # meta_rows="labelled+pseudo" after round 1
            info.update(meta_pseudo_rows=len(data.labels) - len(ctx.labelled_labels))
        c, h, w = ctx.labelled_images.shape[1:]
        # the head's (and its mentor's) initial weights depend on the seed and round only, not on what
        # ran before on this context (another selector's fit, or none when the rows came from the cache)
        torch.manual_seed(ctx.fit.seed + 13 + 101 * ctx.round)
        meta = MetaModel(self.head(), c, ctx.num_classes, (h, w))
        mentor = None
        if meta.mentor is not None:  # a second opinion trained on the labelled set with another seed: for mode "mentor"
            # the base's architecture (out of fold, like the base's labels), for "mentor-features" the head's own small_cnn
            n, seed = len(ctx.labelled_labels), ctx.fit.seed + 7919 + 101 * ctx.round
            mentor = MentorData(ctx.labelled_images, ctx.labelled_labels, oof_folds=self.folds,
                                factory=ctx.factory if self.mode == "mentor" else None, fit=ctx.fit_on(n, seed),
                                fold_fit=ctx.fit_on(n - n // self.folds, seed))  # fmt: skip
        try:
            res = fit_meta(meta, data, ctx.preprocess,
                           MetaFitConfig(epochs=self.meta_epochs, seed=ctx.seed + ctx.round, device=ctx.fit.device),
                           mentor=mentor, views=views, progress=ctx.progress)  # fmt: skip
        except DataError as exc:  # too few (or too many) out-of-fold errors to learn from
            log.warning("metaerr round %d: %s; falling back to 1 - max prob", ctx.round, exc)
            return 1.0 - ctx.probs.max(axis=1), {**info, "meta_fallback": "msp"}
        scores = meta_scores(meta, ctx.pool_images, ctx.probs.astype(np.float32), ctx.preprocess, device=ctx.fit.device)
        return scores, {**info, "meta_val_auroc": res.val_auroc}

    def meta_data(self, ctx: SelectContext) -> tuple[MetaData, MetaData | None]:
        """The rows the meta-model learns from, with out-of-fold probabilities, and their corrupted
        views (``shift_views``; each scored by the fold model that did not see its source row)."""
        return _cached(ctx, self.rows_key(), lambda: self._meta_data(ctx))

    def _meta_data(self, ctx: SelectContext) -> tuple[MetaData, MetaData | None]:
        more = self.meta_rows == "labelled+pseudo" and ctx.pseudo_labels is not None and len(ctx.pseudo_labels) > 0
        x, y = ctx.labelled_images, ctx.labelled_labels
        if more:
            x, y = np.concatenate([x, ctx.pseudo_images]), np.concatenate([y, ctx.pseudo_labels])
        extra = (ctx.pseudo_images, ctx.pseudo_labels) if self.oof_pseudo and not more and ctx.pseudo_labels is not None else None
        views_x = shift_views(x, self.shift_views, ctx.seed + ctx.round) if self.shift_views else None
        views_p = None if views_x is None else np.zeros((len(views_x), ctx.num_classes), np.float32)

        def score_views(model: nn.Module, held: np.ndarray) -> None:
            rows = (np.arange(self.shift_views)[:, None] * len(x) + held[None, :]).reshape(-1)  # copy-major views
            views_p[rows] = predict_probs(model, views_x[rows], ctx.preprocess, device=ctx.fit.device)

        n_fold = len(x) - len(x) // self.folds + (0 if extra is None else len(extra[1]))  # rows a fold model trains on
        fit = ctx.fit_on(n_fold, ctx.fit.seed + 7 + 101 * ctx.round)
        oof, _ = crossfit_probs(ctx.factory, x, y, ctx.preprocess, fit, k=self.folds, progress=ctx.progress, desc="meta fold",
                                extra=extra, on_fold=score_views if views_x is not None else None)
        views = None if views_x is None else MetaData(views_x, views_p, np.tile(y, self.shift_views))
        return MetaData(x, oof, y), views


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
