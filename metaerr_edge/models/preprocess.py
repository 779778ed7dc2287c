"""How uint8 images become a network's input: the one place preprocessing lives.

Training (base, mentor, meta-model), scoring and the fused graph all use the same module, so the
exported model normalises exactly as training did.
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
