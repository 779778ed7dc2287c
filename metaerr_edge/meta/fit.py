"""The MetaErr recipe: fit a meta-model from plain data. The one place a meta-model is trained.

:func:`fit_meta` takes the rows the base did not train on (:class:`MetaData`: images, the base's
probabilities there, true labels; the error labels come from :func:`metaerr_edge.data.error_labels`),
for the mentor modes what the mentor learns from (:class:`MentorData`), and the training settings
(:class:`MetaFitConfig`). The run pipeline, :class:`~metaerr_edge.meta.MetaErr` for a user's model,
the pseudo-labelling selectors and the benchmarks all call it. The loop: class-weighted BCE on the
error labels (or MSE to the true-class probability), checkpoint chosen on meta-validation AUROC.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metaerr_edge.console import progress_bar, warn
from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.meta.heads import SKIP_SCORES, MetaModel, skip_score
from metaerr_edge.meta.labels import crossfit_probs
from metaerr_edge.models import distributed
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models.training import FitConfig, fit_classifier, predict_probs, resolve_device, run_batched, to_float


@dataclass(frozen=True)
class MetaFitConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"
    balanced: bool = True  # up-weight errors by n_correct / n_error in the BCE loss (False: plain BCE)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"meta epochs, batch_size and lr must be positive (finite), got {self.epochs}, "
                              f"{self.batch_size}, {self.lr}")
        resolve_device(self.device)


@dataclass(frozen=True)
class MetaData:
    """Rows a meta-model learns from: uint8 images N x C x H x W, the base's probabilities on them
    (N x K; rows the base did not train on: held-out or out-of-fold) and the true labels (N,).
    A label of -1 marks an image of no class (an outlier): always a failure, its TCP 0."""

    images: np.ndarray
    probs: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ConfigError(f"meta-model images must be uint8 N x C x H x W, got {self.images.dtype} {self.images.shape}")
        if self.probs.ndim != 2 or not len(self.images) == len(self.probs) == len(self.labels):
            raise DataError(f"meta-model data: {len(self.images)} images, probabilities of shape {self.probs.shape} and "
                            f"{len(self.labels)} labels; expected one N x K probability row and one label per image")

    @property
    def is_error(self) -> np.ndarray:
        return error_labels(self.probs, self.labels)

    @property
    def tcp(self) -> np.ndarray:
        """The base's probability of the true label (the target of ``target="tcp"`` heads)."""
        known = self.labels >= 0
        tcp = np.zeros(len(self.labels), np.float32)
        tcp[known] = self.probs[np.flatnonzero(known), self.labels[known]]
        return tcp


def outlier_rows(base: nn.Module, images: np.ndarray, fraction: float, preprocess: Preprocess, seed: int = 0,
                 device: str = "cpu") -> MetaData | None:
    """``fraction`` synthetic outliers per image of ``images`` (:func:`metaerr_edge.data.outlier_views`)
    with the base's probabilities on them, labelled -1 (no class): ``fit_meta(outliers=...)``'s rows;
    None when ``fraction`` is 0."""
    from metaerr_edge.data import outlier_views

    if not fraction:
        return None
    x = outlier_views(images, fraction, seed)
    return MetaData(x, predict_probs(base, x, preprocess, device=device), np.full(len(x), -1, np.int64))


@dataclass(frozen=True)
class MentorData:
    """What the mentor of a ``mentor``/``mentor-features`` meta-model learns from.

    Args:
        images, labels: the mentor's training rows (the base's own training rows may be used).
        fit: the mentor's training schedule.
        oof_folds: ``>= 2`` when the meta rows are the mentor's training rows (cross-fitting): the
            ``mentor`` head then trains on out-of-fold mentor probabilities from this many mentors,
            as the base's labels are out-of-fold. ``mentor-features`` reads features, which differ
            between networks, so its head always sees the final mentor's outputs.
        factory: builds the mentor: a fresh one for each fold, then the final one, which replaces
            ``meta.mentor`` (default: none; the folds' mentors are of the head's ``mentor_arch``
            and ``meta.mentor`` itself is trained).
        trained: ``meta.mentor`` already holds a trained mentor; only its outputs are computed.
        fold_fit: the out-of-fold mentors' schedule (default: ``fit``), for when they should get the
            optimiser steps of their own, smaller, training sets.
    """

    images: np.ndarray
    labels: np.ndarray
    fit: FitConfig = FitConfig()
    oof_folds: int = 0
    factory: Callable[[], nn.Module] | None = None
    trained: bool = False
    fold_fit: FitConfig | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(f"mentor data: {len(self.images)} images but {len(self.labels)} labels")
        if isinstance(self.oof_folds, bool) or not isinstance(self.oof_folds, int) or self.oof_folds == 1 or self.oof_folds < 0:
            raise ConfigError(f"oof_folds must be 0 (no out-of-fold mentors) or >= 2, got {self.oof_folds!r}")
        if self.trained and self.factory is not None:
            raise ConfigError("a trained mentor (trained=True) is not built again: pass factory=None")


@dataclass(frozen=True)
class MetaFitResult:
    best_epoch: int
    val_auroc: float
    n_train: int
    n_val: int
    n_errors: int


def stratified_holdout(is_error: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a validation subset holding ``fraction`` of each class."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(is_error), bool)
    for cls in (0, 1):
        idx = np.flatnonzero(is_error == cls)
        mask[rng.permutation(idx)[: int(round(fraction * len(idx)))]] = True
    return mask


def fit_meta(
    meta: MetaModel,
    data: MetaData,
    preprocess: Preprocess,
    config: MetaFitConfig = MetaFitConfig(),
    *,
    mentor: MentorData | None = None,
    fit_only: MetaData | None = None,
    views: MetaData | None = None,
    outliers: MetaData | None = None,
    progress: bool = True,
    desc: str = "meta",
) -> MetaFitResult:
    """Fit ``meta`` to predict where the base fails on ``data``; keep the best meta-validation AUROC.

    The mentor modes first train ``meta.mentor`` on ``mentor`` (unless ``mentor.trained``), then
    precompute its outputs once (it is frozen). ``fit_only``: rows used for fitting but never for
    validation (a ``target="tcp"`` head with held-out labels also learns from the base's own
    training rows, ConfidNet's recipe). ``views``: corrupted copies of ``data``'s images with the
    base's probabilities on them (:func:`metaerr_edge.data.shift_views`: row ``v * N + i`` is a view
    of row ``i``), fitted and validated on like ``data``, a view always on the same side of the split
    as its source image; the mentor modes read them through the final mentor. ``outliers``: images
    of no class (labels -1, :func:`metaerr_edge.data.outlier_views`) with the base's probabilities,
    fitted on as failures (TCP 0) and never validated on. Validation is a
    stratified ``config.val_fraction`` of ``data`` (and its views) and always scores the error
    labels. ``target="error"`` heads: class-weighted BCE (errors up-weighted by ``n_correct / n_error`` unless ``config.balanced`` is False);
    ``target="tcp"`` heads: MSE to the base's true-class probability.

    Example:
        >>> meta = MetaModel(HeadConfig("probs"), in_channels=1, num_classes=10, image_size=(8, 8))
        >>> fit_meta(meta, MetaData(images, oof_probs, labels), Preprocess([0.5], [0.5])).val_auroc
        0.91
    """
    is_error = data.is_error
    n_err = int(is_error.sum())
    if n_err < 2 or n_err > len(is_error) - 2:
        raise DataError(
            f"the meta-model needs both failures and successes to learn from; got {n_err} errors in "
            f"{len(is_error)} samples. Use more meta-train data (cross-fitting gives the most) or a weaker base."
        )
    device = config.device
    if mentor is not None and meta.mentor is None:
        raise ConfigError(f"meta mode {meta.config.mode!r} has no mentor; pass mentor=None")
    n = len(data.labels)
    if views is not None and (len(views.labels) == 0 or len(views.labels) % n or views.images.shape[1:] != data.images.shape[1:]):
        raise DataError(f"views: {len(views.labels)} rows of {views.images.shape[1:]} images for {n} meta rows of "
                        f"{data.images.shape[1:]}; expected a whole number of views of each meta image "
                        "(metaerr_edge.data.shift_views)")
    mentor_out = _mentor_outputs(meta, data, preprocess, mentor, device, progress) if meta.mentor is not None else None
    val = np.zeros(n, bool)
    val[stratified_holdout(data.is_error, config.val_fraction, config.seed)] = True
    parts = [data]
    groups = np.zeros(n, np.int8)  # validation AUROC: the mean over the clean rows and the views, each on its own
    if views is not None:
        parts.append(views)
        val = np.concatenate([val, np.tile(val, len(views.labels) // n)])
        groups = np.concatenate([groups, np.ones(len(views.labels), np.int8)])
    if outliers is not None and (outliers.images.shape[1:] != data.images.shape[1:] or (outliers.labels != -1).any()):
        raise DataError(f"outliers: {outliers.images.shape[1:]} images labelled {np.unique(outliers.labels)[:5].tolist()} "
                        f"for meta rows of {data.images.shape[1:]}; expected images of the same shape, every label -1 "
                        "(no class: metaerr_edge.data.outlier_views)")
    for extra in (fit_only, outliers):  # fitted on, never validated on
        if extra is not None and len(extra.labels):
            parts.append(extra)
            val = np.concatenate([val, np.zeros(len(extra.labels), bool)])
            groups = np.concatenate([groups, np.full(len(extra.labels), 2, np.int8)])
    rows = data if len(parts) == 1 else MetaData(*(np.concatenate([getattr(p, f) for p in parts])
                                                    for f in ("images", "probs", "labels")))
    if meta.config.skip == "auto":
        meta.config = dataclasses.replace(meta.config, skip=choose_skip(rows.probs[~val], rows.is_error[~val]))
    if mentor_out is not None:
        mentor_out = np.concatenate([mentor_out] + [mentor_outputs(meta, p.images, preprocess, device=device) for p in parts[1:]])
    return _train_head(meta, rows, preprocess, config, mentor_out, val, groups, progress, desc)


def choose_skip(probs: np.ndarray, is_error: np.ndarray) -> str:
    """The free score of :data:`~metaerr_edge.meta.heads.SKIP_SCORES` with the best AUROC on these
    rows (the head's training rows; ties: the first, MSP)."""
    from sklearn.metrics import roc_auc_score

    if not 0 < int(is_error.sum()) < len(is_error):
        return SKIP_SCORES[0]
    p = torch.from_numpy(probs.astype(np.float32))
    aucs = [float(roc_auc_score(is_error, skip_score(p, name).numpy())) for name in SKIP_SCORES]
    return SKIP_SCORES[int(np.argmax(aucs))]


def _mentor_outputs(meta: MetaModel, data: MetaData, pre: Preprocess, mentor: MentorData | None, device: str,
                    progress: bool) -> np.ndarray:
    """Train the mentor (unless already trained) and return what the head reads from it on ``data``."""
    if mentor is None:
        raise ConfigError(f"meta mode {meta.config.mode!r} needs mentor=MentorData(images, labels): what its mentor "
                          "network learns from (e.g. the base's training rows)")
    oof = None
    if not mentor.trained:
        if mentor.oof_folds >= 2 and meta.config.mode == "mentor":
            c, h, w = data.images.shape[1:]
            factory = mentor.factory or (lambda: _new_mentor(meta, c, (h, w)))
            oof, _ = crossfit_probs(factory, data.images, data.labels, pre, mentor.fold_fit or mentor.fit, mentor.oof_folds,
                                    progress, "mentor fold")
        if mentor.factory is not None:  # built after the folds: its initial weights follow theirs, seed-determined
            meta.mentor = mentor.factory()
        fit_classifier(meta.mentor, mentor.images, mentor.labels, pre, mentor.fit, progress, "mentor")
    meta.mentor.requires_grad_(False).eval()
    if meta.feature_dim:
        meta.set_feature_stats(pre(to_float(mentor.images)))
    return oof if oof is not None else mentor_outputs(meta, data.images, pre, device=device)


def _new_mentor(meta: MetaModel, channels: int, size: tuple[int, int]) -> nn.Module:
    from metaerr_edge.models.registry import create_base

    return create_base(meta.config.mentor_arch, channels, meta.num_classes, size, **meta.config.mentor_kwargs)


def _train_head(meta: MetaModel, data: MetaData, preprocess: Preprocess, config: MetaFitConfig,
                mentor_out: np.ndarray | None, val: np.ndarray, groups: np.ndarray, progress: bool,
                desc: str) -> MetaFitResult:
    """The training loop of :func:`fit_meta` (``val``: the rows validated on, never fitted; the
    validation AUROC is the mean of the AUROCs within each of ``groups``: clean rows, views)."""
    from sklearn.metrics import roc_auc_score

    images, probs, is_error = data.images, data.probs, data.is_error
    n_err = int(is_error.sum())
    dist = distributed.current()
    device = resolve_device(distributed.rank_device(config.device))
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_all = to_float(images) if meta.config.uses_image else None  # a mentor's outputs come precomputed
    p_all = torch.from_numpy(probs.astype(np.float32))
    m_all = None if mentor_out is None else torch.from_numpy(mentor_out.astype(np.float32))
    y_all = torch.from_numpy(is_error.astype(np.float32))
    tr_idx, va_idx = torch.from_numpy(np.flatnonzero(~val)), torch.from_numpy(np.flatnonzero(val))
    if meta.config.target == "tcp":
        t_all = torch.from_numpy(data.tcp)
        mse = nn.MSELoss()

        def loss_fn(raw: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return mse(torch.sigmoid(raw), t_all[idx].to(device))
    else:
        n_pos = float(y_all[tr_idx].sum())
        pos_weight = torch.tensor((len(tr_idx) - n_pos) / max(n_pos, 1.0) if config.balanced else 1.0)
        bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(device))

        def loss_fn(raw: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return bce(raw, y_all[idx].to(device))
    meta.to(device)
    if meta.mentor is not None:  # trained beforehand as a classifier; frozen here
        meta.mentor.requires_grad_(False)
    pre = preprocess.to(device)
    params = [p for p in meta.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def batch(idx: torch.Tensor):
        xb = pre(x_all[idx].to(device)) if x_all is not None else None
        mb = m_all[idx].to(device) if m_all is not None else None
        return xb, p_all[idx].to(device), mb

    logits: nn.Module = _Logit(meta)
    if dist.enabled:  # DDP; it must look for unused parameters only where a mode leaves some without a gradient
        logits = distributed.wrap(logits, dist, device, find_unused=_leaves_parameters_unused(logits, batch(tr_idx[:2])))
    best = (-1.0, -1, copy.deepcopy(meta.state_dict()))

    def val_auroc(epoch: int) -> float:
        meta.eval()
        with torch.no_grad():
            scores = torch.cat([meta(*batch(va_idx[s : s + 1024])) for s in range(0, len(va_idx), 1024)])
        if not bool(torch.isfinite(scores).all()):
            raise ConfigError(f"{desc} diverged in epoch {epoch + 1}: its failure scores are NaN. Lower the meta-model's "
                              f"learning rate (now {config.lr:g}), or check the base's probabilities (a diverged base?)")
        y_val, s_val, g_val = y_all[va_idx].numpy(), scores.cpu().numpy(), groups[va_idx.numpy()]
        aucs = [float(roc_auc_score(y_val[g_val == g], s_val[g_val == g])) for g in np.unique(g_val)
                if 0 < y_val[g_val == g].sum() < (g_val == g).sum()]  # fmt: skip
        return float(np.mean(aucs)) if aucs else 0.5

    if meta.config.skip != "none":  # epoch 0 is the free score itself: kept unless training beats it
        best = (val_auroc(-1), -1, copy.deepcopy(meta.state_dict()))
    bar = progress_bar(range(config.epochs), enabled=progress and dist.is_main, desc=desc)
    for epoch in bar:
        meta.train()
        order = tr_idx[torch.randperm(len(tr_idx), generator=gen)]  # the same on every rank
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 * dist.world_size:
                continue
            idx = distributed.local_rows(idx, dist)  # this rank's part of the global batch
            loss = loss_fn(logits(*batch(idx)), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        auc = val_auroc(epoch)
        if auc > best[0]:
            best = (auc, epoch, copy.deepcopy(meta.state_dict()))
        bar.set_postfix(val_auroc=f"{auc:.4f}", best=f"{best[0]:.4f}", refresh=False)
    meta.load_state_dict(best[2])
    meta.eval()
    if dist.is_main and config.epochs > 1 and best[1] == config.epochs - 1:
        warn(f"{desc}: the best meta-validation AUROC ({best[0]:.4f}) came in the last of {config.epochs} epochs, "
             "so the meta-model may not have converged; try more meta epochs (--meta-epochs)", name="metaerr_edge.meta")
    return MetaFitResult(best[1], best[0], int(len(tr_idx)), int(len(va_idx)), n_err)


def _leaves_parameters_unused(module: nn.Module, inputs: tuple) -> bool:
    """Whether one backward pass leaves a trainable parameter of ``module`` without a gradient (eval mode: no statistics move)."""
    was_training = module.training
    module.eval()
    module(*inputs).sum().backward()
    unused = any(p.grad is None for p in module.parameters() if p.requires_grad)
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    return unused


class _Logit(nn.Module):
    """``meta.logit`` as a module's forward, what DistributedDataParallel wraps."""

    def __init__(self, meta: MetaModel) -> None:
        super().__init__()
        self.meta = meta

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        return self.meta.logit(*inputs)


def meta_scores(
    meta: MetaModel, images: np.ndarray, probs: np.ndarray, preprocess: Preprocess, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray:
    """Failure scores (float32, higher = more likely wrong) of ``meta`` on uint8 images and base probs."""
    probs = probs.astype(np.float32, copy=False)
    return run_batched(meta, meta, images, preprocess, (probs,), batch_size, device).astype(np.float32)


def mentor_outputs(meta: MetaModel, images: np.ndarray, preprocess: Preprocess, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """The frozen mentor's :meth:`MetaModel.mentor_outputs` on uint8 images (precomputed once for training)."""
    return run_batched(meta, meta.mentor_outputs, images, preprocess, batch_size=batch_size, device=device)
