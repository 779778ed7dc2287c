"""Base-classifier registry: the one list of architectures for small grey or RGB images.

Every factory has the signature ``fn(in_channels, num_classes, image_size, **kwargs) -> nn.Module``
and returns a module mapping a *normalised* image batch (N x C x H x W, float32) to logits.
A user's own classifier needs no registration: any module with that contract works everywhere
(white-box scores also need the ``forward_features`` / ``classifier`` seams of
:mod:`metaerr_edge.models.seams`, which every registered model has).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.registry import Registry

ModelFactory = Callable[..., nn.Module]
#: The base architectures; every factory is called as ``fn(in_channels, num_classes, image_size, **options)``.
BASES: Registry[ModelFactory] = Registry("base architecture", positional=3)
register_base = BASES.register


def available_bases() -> list[str]:
    """The registered base architectures, sorted."""
    return sorted(BASES.available())


def create_base(
    name: str, in_channels: int, num_classes: int, image_size: tuple[int, int], seed: int | None = None, **kwargs
) -> nn.Module:
    """Build a registered base model; with ``seed``, its initial weights depend on the seed alone.

    Unknown names and options raise a :class:`~metaerr_edge.errors.ConfigError` listing the choices.

    Example:
        >>> net = create_base("small_cnn", in_channels=1, num_classes=10, image_size=(28, 28), seed=0)
    """
    BASES.entry(name)  # an unknown name fails before the seed is touched
    if seed is not None:
        torch.manual_seed(seed)
    return BASES.create(name, in_channels, num_classes, image_size, **kwargs)


class SmallCNN(nn.Module):
    """Three conv blocks (width w, 2w, 4w), global average pool, dropout, linear head. Works from 8x8 up.

    Seams (:mod:`metaerr_edge.models.seams`): ``forward_features``, ``head_drop``, ``classifier``, ``num_features``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(in_channels, width, True),
            *block(width, 2 * width, True),
            *block(2 * width, 4 * width, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head_drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(self.features(x)))


@register_base("small_cnn")
def small_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 32, dropout: float = 0.2) -> nn.Module:
    return SmallCNN(in_channels, num_classes, width=width, dropout=dropout)


class _Residual(nn.Module):
    """conv -> max-pool -> BN -> GELU, then ``x + conv-BN-GELU(x)``: one stage of :class:`ResNet9`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                  nn.BatchNorm2d(cout), nn.GELU())  # fmt: skip
        self.body = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.body(x)


class ResNet9(nn.Module):
    """The fast-CIFAR residual net (the DAWNBench ResNet-9 layout at airbench's widths): a 3x3 stem,
    three residual stages that each halve the side, global max-pool, dropout, linear head.

    About 0.29 GFLOPs per 32x32 image at the default widths (ResNet-18 with the CIFAR stem: 0.56).
    Seams as :class:`SmallCNN`.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = (64, 256, 256),
                 stem: int = 24, dropout: float = 0.2) -> None:  # fmt: skip
        super().__init__()
        a, b, c = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU(),
            _Residual(stem, a), _Residual(a, b), _Residual(b, c),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head_drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(self.features(x)))


@register_base("resnet9")
def resnet9(in_channels: int, num_classes: int, image_size: tuple[int, int], widths: tuple[int, int, int] = (64, 256, 256),
            dropout: float = 0.2) -> nn.Module:  # fmt: skip
    """The benchmark's CIFAR-10 base (86.3% after 14 epochs, about an hour on one shared CPU core,
    benchmarks/README.md). Needs images of at least 8x8 (three halvings)."""
    if len(tuple(widths)) != 3:
        raise ConfigError(f"resnet9 widths: three stage widths, e.g. [64, 256, 256]; got {widths!r}")
    return ResNet9(in_channels, num_classes, tuple(widths), dropout=dropout)


@register_base("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool. No dropout, and
    no width option (torchvision's widths are fixed): ``create_base("resnet18", ..., width=32)`` is refused."""
    import torchvision

    from metaerr_edge.models.seams import resnet_base

    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return resnet_base(net)


@register_base("mobilenet_v3_small")
def mobilenet_v3_small(in_channels: int, num_classes: int, image_size: tuple[int, int], width_mult: float = 1.0) -> nn.Module:
    """torchvision MobileNetV3-Small with a stride-1 stem for small (8-32 px) inputs.

    BatchNorm momentum is reset to PyTorch's usual 0.1: torchvision's 0.01 (meant for long ImageNet
    schedules) leaves the running statistics far behind the weights after a few epochs, and the
    model then sits at chance in eval mode (measured: 98.2% with batch statistics, 10.8% without).
    """
    import torchvision

    from metaerr_edge.models.seams import mobilenet_v3_base

    net = torchvision.models.mobilenet_v3_small(num_classes=num_classes, width_mult=width_mult)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return mobilenet_v3_base(net)
