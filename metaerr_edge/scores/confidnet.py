"""ConfidNet (Corbière et al., 2019): an MLP on the frozen base's penultimate features regressing the
true-class probability (TCP) with MSE. White-box (reads hidden features through the base's
``forward_features`` seam, see :mod:`metaerr_edge.models.seams`), so a baseline, not MetaErr.

Choices, stated:
- Trained on the base's own training split (``ctx.train_split``), as the paper does, although the
  TCP there is near 1 for most samples.
- The epoch is chosen by failure AUROC on the ``calib`` split (neither model trained on it);
  the paper selects on a validation split the same way. Never on test.
- Only the paper's first phase (frozen encoder); the optional fine-tuning of a cloned encoder is not done.
- Features are standardised with the training split's mean and std.

Failure score = ``1 - predicted TCP``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError
from metaerr_edge.scores._features import context_features
from metaerr_edge.scores.base import ScoreContext, Scorer, register_score


def confidnet_mlp(in_features: int, hidden: int = 128, layers: int = 3) -> nn.Module:
    """``layers`` hidden ReLU layers of width ``hidden``, then a sigmoid unit (the predicted TCP)."""
    mods: list[nn.Module] = []
    n = in_features
    for _ in range(layers):
        mods += [nn.Linear(n, hidden), nn.ReLU(inplace=True)]
        n = hidden
    return nn.Sequential(*mods, nn.Linear(n, 1), nn.Sigmoid())


def fit_confidnet(
    features: np.ndarray,
    tcp: np.ndarray,
    val_features: np.ndarray,
    val_is_error: np.ndarray,
    hidden: int = 128,
    layers: int = 3,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[nn.Module, int, float]:
    """Train the TCP regressor; returns ``(net, best_epoch, best_val_auroc)`` (selection on the val split).

    Example:
        >>> net, epoch, auc = fit_confidnet(f_train, tcp_train, f_calib, err_calib)
    """
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(tcp, np.float32))
    xv = torch.from_numpy(np.asarray(val_features, np.float32))
    both = 0 < int(np.sum(val_is_error)) < len(val_is_error)
    net = confidnet_mlp(x.shape[1], hidden, layers)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    best = (-np.inf, -1, copy.deepcopy(net.state_dict()))
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            loss = nn.functional.mse_loss(net(x[idx]).reshape(-1), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = -net(xv).reshape(-1).numpy()
        auc = float(roc_auc_score(val_is_error, val)) if both else -float(np.mean((val + 1) ** 2))
        if auc > best[0]:
            best = (auc, epoch, copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[2])
    return net.eval(), best[1], float(best[0])


@register_score("confidnet")
class ConfidNetScore(Scorer):
    """``1 - predicted TCP``. Params: ``hidden`` (128), ``layers`` (3), ``epochs`` (30), ``lr`` (1e-3)."""

    white_box = True
    PARAMS = {"hidden": 128, "layers": 3, "epochs": 30, "lr": 1e-3}
    net: nn.Module | None = None

    def fit(self, ctx: ScoreContext) -> ConfidNetScore:
        split = ctx.train_split
        feats, probs = context_features(ctx, split)
        labels = ctx.labels(split)
        tcp = probs[np.arange(len(labels)), labels]
        self.mean = feats.mean(axis=0)
        self.std = feats.std(axis=0) + 1e-6
        cal_feats, cal_probs = context_features(ctx, "calib")
        cal_err = error_labels(cal_probs, ctx.labels("calib"))
        self.net, self.best_epoch, self.val_auroc = fit_confidnet(
            (feats - self.mean) / self.std, tcp, (cal_feats - self.mean) / self.std, cal_err,
            hidden=int(self.params["hidden"]), layers=int(self.params["layers"]),
            epochs=int(self.params["epochs"]), lr=float(self.params["lr"]), seed=ctx.seed,
        )  # fmt: skip
        return self

    @torch.no_grad()
    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        if self.net is None:
            raise ConfigError("call fit(ctx) before score(ctx, split)")
        feats, _ = context_features(ctx, split)
        x = torch.from_numpy(((feats - self.mean) / self.std).astype(np.float32))
        return 1.0 - self.net(x).reshape(-1).double().numpy()
