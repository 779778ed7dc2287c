"""FusedModel: one ``nn.Module`` that takes the raw image and returns the whole answer.

    image -> Preprocess -> base -> softmax -> probs, label
                       \\-> meta(image, probs) -> failure_score -> defer = score > threshold

Exported once to ONNX (see :mod:`metaerr_edge.fuse.export`), it is the single file a device loads.
"""

from __future__ import annotations

import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.models.preprocess import Preprocess


class FusedModel(nn.Module):
    """Base classifier + MetaErr meta-model behind one input.

    Args:
        base: any classifier ``normalized image -> logits`` (a registry model or the user's own).
        meta: a meta-model ``(normalized image, probs) -> failure score in [0, 1]``.
        preprocess: the :class:`Preprocess` shared with training.
        threshold: defer when ``failure_score > threshold``.

    Example:
        >>> fused = FusedModel(base, meta, Preprocess([0.5], [0.5]), threshold=0.3)
        >>> label, probs, score, defer = fused(torch.rand(4, 1, 28, 28))
    """

    def __init__(self, base: nn.Module, meta: nn.Module, preprocess: Preprocess, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1] (failure scores do), got {threshold}")
        self.preprocess = preprocess
        self.base = base
        self.meta = meta.for_export() if hasattr(meta, "for_export") else meta
        self.register_buffer("defer_threshold", torch.tensor(float(threshold), dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocess(image)
        probs = torch.softmax(self.base(x).float(), dim=1)
        label = torch.argmax(probs, dim=1)
        failure_score = self.meta(x, probs)
        if failure_score.dim() != 1:  # resolved at trace time: a [N] score adds no Reshape node
            failure_score = failure_score.reshape(-1)
        defer = failure_score > self.defer_threshold
        return label, probs, failure_score, defer
