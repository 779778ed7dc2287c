"""MetaErr meta-model heads. Black-box only: they see the image and the base's probabilities.

Input modes (``metaerr_edge.config.META_MODES`` is the one list):

- ``probs``: sorted probabilities (and their logs) -> MLP. Class-identity free; costs ~nothing.
- ``image``: a small CNN on the image -> MLP (the "mentor-less" image-only design).
- ``image+probs``: both of the above, concatenated.
- ``mentor``: an independent classifier (the mentor, trained on the base's training data) gives a
  second posterior; its probabilities re-ordered by the base's ranking, plus the base's sorted
  probabilities, feed the MLP. As expensive as the mentor network.
- ``mentor-features``: as ``mentor``, plus the mentor's penultimate features (standardised). The
  strongest mode in benchmarks/README.md (with ``target="tcp"``); the mentor is read through its
  ``forward_features`` / ``classifier`` seams (:mod:`metaerr_edge.models.seams`): any registered base.

Skip (``HeadConfig.skip``): the head's logit is ``logit(free score) + MLP(features)`` with the MLP's
last layer starting at zero, so the untrained head *is* that free score (MSP, margin, Gini or
normalised entropy of the base's probabilities, :data:`SKIP_SCORES`; ``"auto"``: the one with the
best AUROC on the rows the head learns from) and training keeps the epoch-0 head unless validation
says otherwise: a stacked head at least as good as its best input, on meta-validation.

Targets: ``"error"`` (default) fits ``P(base wrong)`` with a class-weighted BCE on the error labels;
``"tcp"`` regresses the base's true-class probability (ConfidNet's target, read off the base's
*outputs*, so still black-box) and scores ``1 - predicted TCP``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from metaerr_edge.config import META_MODES, META_SKIPS
from metaerr_edge.errors import ConfigError

TARGETS = ("error", "tcp")
#: Free failure scores a head can stack on (``HeadConfig.skip``); each maps probabilities to [0, 1].
SKIP_SCORES = META_SKIPS[2:]  # ("msp", "margin", "gini", "entropy")
_SKIP_EPS = 1e-6
_LOG_FLOOR = 1e-7
_LOG_SCALE = 1.0 / 8.0


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a meta-model. ``mentor_arch``/``mentor_kwargs`` only matter for the mentor modes."""

    mode: str = "probs"
    hidden: int = 64
    image_width: int = 16
    dropout: float = 0.1
    mentor_arch: str = "small_cnn"
    mentor_kwargs: dict = field(default_factory=dict)
    target: str = "error"
    skip: str = "none"

    def __post_init__(self) -> None:
        if self.mode not in META_MODES:
            raise ConfigError(f"unknown meta-model mode {self.mode!r}; expected one of {list(META_MODES)}")
        if self.target not in TARGETS:
            raise ConfigError(f"unknown meta-model target {self.target!r}; expected one of {list(TARGETS)}")
        if self.skip not in META_SKIPS:
            raise ConfigError(f"unknown head skip {self.skip!r}; expected one of {list(META_SKIPS)}")
        if self.skip != "none" and self.mode == "image":
            raise ConfigError("mode 'image' reads no probabilities, so it has no free score to stack on; use skip='none'")

    @property
    def uses_mentor(self) -> bool:
        return self.mode in ("mentor", "mentor-features")

    @property
    def uses_image(self) -> bool:
        return self.mode in ("image", "image+probs")

    def to_dict(self) -> dict:
        return asdict(self)


def _log_probs(p: torch.Tensor, scale: float = _LOG_SCALE) -> torch.Tensor:
    logp = torch.log(p.clamp_min(_LOG_FLOOR))
    return logp * scale if scale != 1.0 else logp  # scale 1.0: folded into the next layer (no Mul node)


def skip_score(probs: torch.Tensor, name: str, k: int | None = None) -> torch.Tensor:
    """A free failure score in [0, 1] of the base's probabilities (:data:`SKIP_SCORES`); ``k``: the
    number of classes as a Python int (a constant in an exported graph; default: ``probs.shape[1]``)."""
    k = k or probs.shape[1]
    return _skip_from_sorted(torch.topk(probs, k, dim=1).values, name, k)


def _skip_from_sorted(top: torch.Tensor, name: str, k: int) -> torch.Tensor:
    """:func:`skip_score` of probabilities already sorted in descending order (the head's own TopK)."""
    if name == "msp":
        return 1.0 - top[:, 0]
    if name == "margin":
        return 1.0 - (top[:, 0] - top[:, 1])
    if name == "gini":
        return 1.0 - (top * top).sum(dim=1)
    if name == "entropy":
        return -(top * torch.log(top.clamp_min(_LOG_FLOOR))).sum(dim=1) / math.log(k)
    raise ConfigError(f"unknown skip score {name!r}; expected one of {list(SKIP_SCORES)}")


def mentor_features(probs: torch.Tensor, mentor_probs: torch.Tensor, k: int, log_scale: float = _LOG_SCALE) -> torch.Tensor:
    """The mentor's posterior re-ordered by the base's ranking (so index 0 = base's predicted class)."""
    order = torch.topk(probs, k, dim=1).indices
    aligned = torch.gather(mentor_probs, 1, order)
    return torch.cat([aligned, _log_probs(aligned, log_scale)], dim=1)


class ImageEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.out_features = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MetaModel(nn.Module):
    """``(normalised image, base probabilities) -> failure score in [0, 1]`` (higher = more likely wrong).

    Example:
        >>> meta = MetaModel(HeadConfig("probs"), in_channels=1, num_classes=10)
        >>> meta(torch.rand(2, 1, 8, 8), torch.softmax(torch.randn(2, 10), 1)).shape
        torch.Size([2])
    """

    def __init__(
        self, config: HeadConfig, in_channels: int, num_classes: int, image_size: tuple[int, int] = (28, 28)
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.log_scale = _LOG_SCALE  # scale of the log-probability features (1.0 once folded, see for_export)
        n_in = 0
        self.encoder: nn.Module | None = None
        self.mentor: nn.Module | None = None
        if config.uses_image:
            self.encoder = ImageEncoder(in_channels, config.image_width)
            n_in += self.encoder.out_features
        if config.mode != "image":
            n_in += 2 * num_classes
        self.feature_dim = 0
        if config.uses_mentor:
            from metaerr_edge.models.registry import create_base

            self.mentor = create_base(config.mentor_arch, in_channels, num_classes, image_size, **config.mentor_kwargs)
            n_in += 2 * num_classes
        if config.mode == "mentor-features":
            from metaerr_edge.models.seams import feature_seams

            _, classifier = feature_seams(self.mentor, f"mode 'mentor-features' (mentor_arch={config.mentor_arch!r})")
            self.feature_dim = classifier.in_features
            self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
            self.register_buffer("feature_std", torch.ones(self.feature_dim))
            n_in += self.feature_dim
        h = config.hidden
        self.head = nn.Sequential(
            nn.Linear(n_in, h), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, 1),
        )  # fmt: skip
        if config.skip != "none":  # the untrained head is the free score itself
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def mentor_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads from the mentor: its probabilities (``mentor``), or its standardised
        penultimate features followed by its probabilities (``mentor-features``). Precompute it once
        for training (the mentor is frozen) and pass it as ``mentor_out``."""
        if self.feature_dim:
            f = self.mentor.forward_features(x).float()
            probs = torch.softmax(self.mentor.classifier(f), dim=1)
            return torch.cat([(f - self.feature_mean) / self.feature_std, probs], dim=1)
        return torch.softmax(self.mentor(x).float(), dim=1)

    @torch.no_grad()
    def set_feature_stats(self, x: torch.Tensor) -> None:
        """Standardise the mentor's features with their mean/std on ``x`` (normalised images)."""
        self.mentor.eval()  # a mentor loaded into a fresh (training-mode) MetaModel must not update its BatchNorm here
        f = torch.cat([self.mentor.forward_features(x[i : i + 512]).float() for i in range(0, len(x), 512)])
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0) + 1e-6)

    def features(
        self, x: torch.Tensor | None, probs: torch.Tensor, mentor_out: torch.Tensor | None = None,
        top: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The head's input; ``top``: ``probs`` sorted in descending order, when already computed."""
        parts = []
        if self.encoder is not None:
            parts.append(self.encoder(x))
        if self.config.mode != "image":
            if top is None:
                top = torch.topk(probs, self.num_classes, dim=1).values
            parts.append(torch.cat([top, _log_probs(top, self.log_scale)], dim=1))
        if self.mentor is not None:
            if mentor_out is None:
                mentor_out = self.mentor_outputs(x)
            if self.feature_dim:
                parts.append(mentor_out[:, : self.feature_dim])
            parts.append(mentor_features(probs, mentor_out[:, self.feature_dim :], self.num_classes, self.log_scale))
        return torch.cat(parts, dim=1)

    def logit(self, x: torch.Tensor | None, probs: torch.Tensor, mentor_out: torch.Tensor | None = None) -> torch.Tensor:
        """The head's raw output: logit of P(error), or (``target="tcp"``) logit of the predicted TCP."""
        if self.config.skip not in SKIP_SCORES:
            return self.head(self.features(x, probs, mentor_out)).reshape(-1)
        top = torch.topk(probs, self.num_classes, dim=1).values  # one TopK node for the features and the skip
        raw = self.head(self.features(x, probs, mentor_out, top)).reshape(-1)
        s = _skip_from_sorted(top.float(), self.config.skip, self.num_classes).clamp(_SKIP_EPS, 1.0 - _SKIP_EPS)
        free = torch.log(s / (1.0 - s))  # logit of the free failure score
        return raw + (-free if self.config.target == "tcp" else free)

    def forward(self, x: torch.Tensor | None, probs: torch.Tensor, mentor_out: torch.Tensor | None = None) -> torch.Tensor:
        raw = torch.sigmoid(self.logit(x, probs, mentor_out))
        return 1.0 - raw if self.config.target == "tcp" else raw

    def for_export(self) -> "MetaModel":
        """An equivalent copy with the log-feature scale folded into the first head layer.

        Same outputs up to float rounding, one ONNX Mul node fewer per log-feature block: at batch 1
        on a tiny base each node costs a measurable share of the latency (benchmarks/README.md).
        """
        import copy

        folded = copy.deepcopy(self)
        if self.log_scale == 1.0 or self.config.mode == "image":
            return folded
        k = self.num_classes
        offset = self.encoder.out_features if self.encoder is not None else 0
        log_columns = [range(offset + k, offset + 2 * k)]
        if self.mentor is not None:
            mentor_start = offset + 2 * k + self.feature_dim
            log_columns.append(range(mentor_start + k, mentor_start + 2 * k))
        first = folded.head[0]
        with torch.no_grad():
            for cols in log_columns:
                first.weight[:, list(cols)] *= self.log_scale
        folded.log_scale = 1.0
        return folded

    def train(self, mode: bool = True) -> "MetaModel":
        super().train(mode)
        if self.mentor is not None:  # the mentor is trained separately and frozen here
            self.mentor.eval()
        return self
