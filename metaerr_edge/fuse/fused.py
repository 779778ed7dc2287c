"""FusedModel: one ``nn.Module`` that takes the raw image and returns the whole answer.

    image -> Preprocess -> base -> softmax -> probs, label
                       \\-> meta(image, probs) -> failure_score -> defer = score > threshold

Exported once to ONNX (see :mod:`metaerr_edge.fuse.export`), it is the single file a device loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaerr_edge.errors import ConfigError


class Preprocess(nn.Module):
    """The one place preprocessing lives: layout/dtype conversion, then (x - mean) / std.

    ``layout="NCHW"`` takes float32 in [0, 1]; ``layout="NHWC"`` takes uint8 camera frames (0-255).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], layout: str = "NCHW") -> None:
        super().__init__()
        if layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"layout must be 'NCHW' (float [0,1]) or 'NHWC' (uint8), got {layout!r}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"mean {list(mean)} and std {list(std)} must have equal length, std > 0")
        self.layout = layout
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.layout == "NHWC":
            image = image.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)
        return (image - self.mean) / self.std


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
