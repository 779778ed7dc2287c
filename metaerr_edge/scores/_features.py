"""The base model's penultimate features, read through its ``forward_features`` / ``classifier`` seams.

White-box: TrustScore and ConfidNet use these; MetaErr never does. Features of a split are
computed once per :class:`ScoreContext` and shared by every scorer that asks. Every registry model
has the seams (:mod:`metaerr_edge.models.seams`); a user's own model without them is one ConfigError.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.models.seams import feature_seams


@torch.no_grad()
def penultimate_features(
    model: nn.Module, images: np.ndarray, preprocess: nn.Module, batch_size: int = 512, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(features N x D float32, softmax probs N x K float32)`` of ``model`` on uint8 images, one pass.

    The features are ``model.forward_features(x)`` and the probabilities ``softmax(model.classifier(.))``
    of them: the model's own output in eval mode, by the seam contract.

    Raises:
        ConfigError: the model lacks a seam, or its ``forward_features`` is not N x classifier-inputs.

    Example:
        >>> feats, probs = penultimate_features(run.base, images, run.preprocess)
    """
    from metaerr_edge.models.training import resolve_device, to_float

    forward_features, classifier = feature_seams(model, "white-box scores (trustscore, confidnet)")
    dev = resolve_device(device)
    model.to(dev).eval()
    pre = preprocess.to(dev)
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        f = forward_features(pre(to_float(images[start : start + batch_size]).to(dev)))
        if f.ndim != 2 or f.shape[1] != classifier.in_features:
            raise ConfigError(f"{type(model).__name__}.forward_features returned shape {tuple(f.shape)}; the seam "
                              f"contract is N x {classifier.in_features} (pooled, flattened: the classifier's input)")
        probs.append(torch.softmax(classifier(f).float(), dim=1).cpu())
        feats.append(f.float().cpu())
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
