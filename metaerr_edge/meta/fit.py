"""Training a meta-model on error labels: class-weighted loss, checkpoint chosen on meta-validation AUROC."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metaerr_edge.console import progress_bar, warn
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta.heads import MetaModel
from metaerr_edge.models.training import resolve_device, run_batched, to_float


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
    images: np.ndarray,
    probs: np.ndarray,
    is_error: np.ndarray,
    preprocess: Preprocess,
    config: MetaFitConfig = MetaFitConfig(),
    mentor_out: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "meta",
    *,
    tcp: np.ndarray | None = None,
    train_only: np.ndarray | None = None,
) -> MetaFitResult:
    """Fit ``meta`` to predict ``is_error`` from (image, probs); keep the best meta-validation AUROC.

    ``target="error"`` heads: class-weighted BCE (errors up-weighted by ``n_correct / n_error``
    unless ``config.balanced`` is False). ``target="tcp"`` heads: MSE to ``tcp``, the base's
    true-class probability per row. ``mentor_out``: the frozen mentor's precomputed
    :meth:`MetaModel.mentor_outputs`. ``train_only``: rows used for fitting but never for
    validation (e.g. the base's own training rows of a TCP head); validation is a stratified
    ``config.val_fraction`` of the other rows and always scores ``is_error``.
    """
    from sklearn.metrics import roc_auc_score

    n_err = int(is_error.sum())
    if n_err < 2 or n_err > len(is_error) - 2:
        raise DataError(
            f"the meta-model needs both failures and successes to learn from; got {n_err} errors in "
            f"{len(is_error)} samples. Use more meta-train data (cross-fitting gives the most) or a weaker base."
        )
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    train_only = np.zeros(len(is_error), bool) if train_only is None else np.asarray(train_only, bool)
    eligible = np.flatnonzero(~train_only)
    val = np.zeros(len(is_error), bool)
    val[eligible[stratified_holdout(is_error[eligible], config.val_fraction, config.seed)]] = True
    uses_x = meta.config.uses_image or (meta.mentor is not None and mentor_out is None)
    x_all = to_float(images) if uses_x else None
    p_all = torch.from_numpy(probs.astype(np.float32))
    m_all = None if mentor_out is None else torch.from_numpy(mentor_out.astype(np.float32))
    y_all = torch.from_numpy(is_error.astype(np.float32))
    tr_idx, va_idx = torch.from_numpy(np.flatnonzero(~val)), torch.from_numpy(np.flatnonzero(val))
    if meta.config.target == "tcp":
        if tcp is None or len(tcp) != len(is_error):
            raise ConfigError("a target='tcp' head needs tcp= (the base's true-class probability per row)")
        t_all = torch.from_numpy(np.asarray(tcp, np.float32))
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

    best = (-1.0, -1, copy.deepcopy(meta.state_dict()))
    bar = progress_bar(range(config.epochs), enabled=progress, desc=desc)
    for epoch in bar:
        meta.train()
        order = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            loss = loss_fn(meta.logit(*batch(idx)), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        meta.eval()
        with torch.no_grad():
            scores = torch.cat([meta(*batch(va_idx[s : s + 1024])) for s in range(0, len(va_idx), 1024)])
        if not bool(torch.isfinite(scores).all()):
            raise ConfigError(f"{desc} diverged in epoch {epoch + 1}: its failure scores are NaN. Lower the meta-model's "
                              f"learning rate (now {config.lr:g}), or check the base's probabilities (a diverged base?)")
        y_val = y_all[va_idx].numpy()
        auc = float(roc_auc_score(y_val, scores.cpu().numpy())) if 0 < y_val.sum() < len(y_val) else 0.5
        if auc > best[0]:
            best = (auc, epoch, copy.deepcopy(meta.state_dict()))
        bar.set_postfix(val_auroc=f"{auc:.4f}", best=f"{best[0]:.4f}", refresh=False)
    meta.load_state_dict(best[2])
    meta.eval()
    if config.epochs > 1 and best[1] == config.epochs - 1:
        warn(f"{desc}: the best meta-validation AUROC ({best[0]:.4f}) came in the last of {config.epochs} epochs, "
             "so the meta-model may not have converged; try more meta epochs (--meta-epochs)", name="metaerr_edge.meta")
    return MetaFitResult(best[1], best[0], int(len(tr_idx)), int(len(va_idx)), n_err)


def meta_scores(
    meta: MetaModel, images: np.ndarray, probs: np.ndarray, preprocess: Preprocess, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray:
    """Failure scores (float32, higher = more likely wrong) of ``meta`` on uint8 images and base probs."""
    probs = probs.astype(np.float32, copy=False)
    return run_batched(meta, meta, images, preprocess, (probs,), batch_size, device).astype(np.float32)


def mentor_outputs(meta: MetaModel, images: np.ndarray, preprocess: Preprocess, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """The frozen mentor's :meth:`MetaModel.mentor_outputs` on uint8 images (precomputed once for training)."""
    return run_batched(meta, meta.mentor_outputs, images, preprocess, batch_size=batch_size, device=device)
