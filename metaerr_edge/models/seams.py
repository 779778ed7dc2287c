"""The seams every registered base model has (as in timm), so no caller special-cases an architecture.

A base model ``net`` maps a normalised image batch N x C x H x W to logits N x K and exposes:

- ``net.forward_features(x) -> Tensor[N, D]``: the pooled, flattened penultimate features;
- ``net.head_drop: nn.Module``: the dropout between features and classifier (``nn.Identity`` where
  the architecture has none: ``resnet18``);
- ``net.classifier: nn.Linear`` (D -> K): the last layer;
- ``net.num_features: int``: D;

with ``net(x) == net.classifier(net.head_drop(net.forward_features(x)))``, so in eval mode
``net(x) == net.classifier(net.forward_features(x))``. Readers of hidden features (TrustScore,
ConfidNet, the ``mentor-features`` head) need ``forward_features`` and ``classifier`` only: a user's
own module gets them by adding both (:func:`feature_seams` says which one is missing). MC Dropout
switches on every dropout layer of any model; where ``head_drop`` holds them all it runs
``forward_features`` once per batch and repeats only ``classifier(head_drop(.))``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from metaerr_edge.errors import ConfigError

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def missing_seams(model: nn.Module) -> list[str]:
    """The feature seams ``model`` lacks, in words (empty when it has ``forward_features`` and ``classifier``)."""
    missing = []
    if not callable(getattr(model, "forward_features", None)):
        missing.append("forward_features(x) method (-> N x D features)")
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        missing.append("nn.Linear .classifier (D -> K logits)")
    return missing


def feature_seams(model: nn.Module, reader: str) -> tuple[FeatureFn, nn.Linear]:
    """``(model.forward_features, model.classifier)``, or one ConfigError naming what ``reader`` misses.

    Example:
        >>> forward_features, classifier = feature_seams(create_base("resnet18", 3, 10, (32, 32)), "trustscore")
    """
    missing = missing_seams(model)
    if missing:
        raise ConfigError(
            f"{reader} reads hidden features, but {type(model).__name__} has no {' and no '.join(missing)}; add "
            "them so that model(x) == model.classifier(model.forward_features(x)) (see metaerr_edge.models.seams)"
        )
    return model.forward_features, model.classifier


class TorchvisionBase(nn.Module):
    """A torchvision classifier cut at the seams: ``body`` (image -> pooled, flattened features),
    ``head_drop`` and ``classifier``, holding the original's layers in the original's order.

    Args:
        body: the layers up to the classifier's input, ending in a flatten.
        classifier: the last linear layer.
        head_drop: the dropout before it (``nn.Identity`` when None).
        legacy: key-prefix renames from the plain torchvision layout to this one (applied in order,
            first match wins), so state dicts saved before this adapter existed still load.
    """

    def __init__(
        self, body: nn.Sequential, classifier: nn.Linear, head_drop: nn.Module | None = None,
        legacy: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.body = body
        self.head_drop = head_drop if head_drop is not None else nn.Identity()
        self.classifier = classifier
        self.num_features = classifier.in_features
        self._legacy = dict(legacy or {})
        self.register_load_state_dict_pre_hook(TorchvisionBase._rename_legacy_keys)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(self.body(x)))

    def _rename_legacy_keys(self, state_dict: dict, prefix: str, *_: object) -> None:
        keys = [k for k in state_dict if k.startswith(prefix)]
        if any(k.startswith(prefix + "body.") for k in keys):
            return  # already this layout
        for key in keys:
            rest = key[len(prefix) :]
            old = next((o for o in self._legacy if rest.startswith(o)), None)
            if old is not None:
                state_dict[prefix + self._legacy[old] + rest[len(old) :]] = state_dict.pop(key)


def resnet_base(net: nn.Module) -> TorchvisionBase:
    """Adapter for a torchvision ``ResNet`` (no dropout: ``head_drop`` is ``nn.Identity``)."""
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
    body = nn.Sequential(OrderedDict([(n, getattr(net, n)) for n in names] + [("flatten", nn.Flatten(1))]))
    return TorchvisionBase(body, net.fc, legacy={"fc.": "classifier.", "": "body."})


def mobilenet_v3_base(net: nn.Module) -> TorchvisionBase:
    """Adapter for a torchvision ``MobileNetV3``: its classifier ``Linear, Hardswish, Dropout, Linear``
    becomes the body's ``pre_logits``/``act``, ``head_drop`` and ``classifier``."""
    pre_logits, act, drop, last = net.classifier
    body = nn.Sequential(OrderedDict(features=net.features, avgpool=net.avgpool, flatten=nn.Flatten(1),
                                     pre_logits=pre_logits, act=act))  # fmt: skip
    legacy = {"features.": "body.features.", "classifier.0.": "body.pre_logits.", "classifier.3.": "classifier."}
    return TorchvisionBase(body, last, head_drop=drop, legacy=legacy)


def canonical_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every :class:`TorchvisionBase` inside it under the plain torchvision
    key names (``fc.weight``, not ``classifier.weight``): what a run's identity hashes, so a model
    exported before the adapter existed still matches its run (``Run.identity``)."""
    state = module.state_dict()
    adapters = [(name + "." if name else "", m) for name, m in module.named_modules() if isinstance(m, TorchvisionBase)]
    if not adapters:
        return state
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for prefix, adapter in adapters:
            if key.startswith(prefix):
                rest = key[len(prefix):]
                new = max((n for n in adapter._legacy.values() if rest.startswith(n)), key=len, default=None)
                if new is not None:
                    old = next(o for o, n in adapter._legacy.items() if n == new)
                    key = prefix + old + rest[len(new):]
                break
        out[key] = tensor
    return out
