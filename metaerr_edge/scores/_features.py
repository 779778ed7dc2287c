"""The base model's penultimate features (input of its last ``nn.Linear``), read by a forward hook.

White-box: TrustScore and ConfidNet use these; MetaErr never does. Features of a split are
computed once per :class:`ScoreContext` and shared by every scorer that asks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metaerr_edge.errors import ConfigError


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in module order (the classifier layer of every registry model)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear layer, so its penultimate features cannot be read; "
            "white-box scores (trustscore, confidnet) need a linear classifier layer"
        )
    return linears[-1]


@torch.no_grad()
def penultimate_features(
    model: nn.Module, images: np.ndarray, preprocess: nn.Module, batch_size: int = 512, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(features N x D float32, softmax probs N x K float32)`` of ``model`` on uint8 images, one pass.

    Example:
        >>> feats, probs = penultimate_features(run.base, images, run.preprocess)
    """
    from metaerr_edge.models.training import resolve_device, to_float

    dev = resolve_device(device)
    model.to(dev).eval()
    pre = preprocess.to(dev)
    grabbed: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_hook(lambda _m, inp, _out: grabbed.append(inp[0].detach().flatten(1)))
    feats, probs = [], []
    try:
        for start in range(0, len(images), batch_size):
            logits = model(pre(to_float(images[start : start + batch_size]).to(dev)))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            feats.append(grabbed.pop().float().cpu())
    finally:
        handle.remove()
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def context_features(ctx, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Cached :func:`penultimate_features` of the context's base model on one split."""
    cache = ctx.__dict__.setdefault("_penultimate_cache", {})
    if split not in cache:
        images, _ = ctx.split(split)
        cache[split] = penultimate_features(ctx.base, images, ctx.preprocess, device=ctx.run.config.device)
    return cache[split]
