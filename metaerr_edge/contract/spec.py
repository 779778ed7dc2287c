"""The deployment contract: everything a device needs to feed the fused graph and read its answer.

It travels inside the ONNX file as JSON under the ``metadata_props`` key
:data:`CONTRACT_KEY`. This module is pure Python (no torch, no onnx) so a runtime-only
install can read it, e.g. from ``onnxruntime.InferenceSession(...).get_modelmeta()``;
:func:`random_inputs` (numpy, imported when called) makes a batch that fits an :class:`InputSpec`.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from metaerr_edge.errors import ConfigError, ContractError

if TYPE_CHECKING:
    import numpy as np

CONTRACT_KEY = "metaerr_edge.contract"
CONTRACT_FORMAT = "metaerr-edge/1"
OUTPUT_NAMES = ("label", "probs", "failure_score", "defer")
#: What ``contract.precision["name"]`` may be: the exported graph (fp32), an FP16 conversion, or INT8 QDQ.
PRECISIONS = ("fp32", "fp16", "int8")
THRESHOLD_INITIALIZER = "defer_threshold"
_VALUE_RANGE = {"float32": (0.0, 1.0), "uint8": (0.0, 255.0)}  # what the exported preprocessing takes


@dataclass(frozen=True)
class InputSpec:
    """What the graph's single input expects.

    ``layout`` is "NCHW" (float32 in ``value_range``) or "NHWC" (uint8 camera frames, 0-255).
    Normalisation with ``mean``/``std`` happens inside the graph either way.
    """

    name: str = "image"
    layout: str = "NCHW"
    dtype: str = "float32"
    channels: int = 1
    height: int = 28
    width: int = 28
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "GRAY"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"input.name must be a non-empty string, got {self.name!r}")
        if self.layout not in ("NCHW", "NHWC"):
            problems.append(f"input.layout is {self.layout!r}, expected 'NCHW' or 'NHWC'")
        if self.dtype not in ("float32", "uint8"):
            problems.append(f"input.dtype is {self.dtype!r}, expected 'float32' or 'uint8'")
        if not _is_int(self.channels) or self.channels not in (1, 3):
            problems.append(f"input.channels is {self.channels!r}, expected the integer 1 or 3")
        for key in ("height", "width"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                problems.append(f"input.{key} is {getattr(self, key)!r}, expected an integer >= 1")
        if (self.layout, self.dtype) not in (("NCHW", "float32"), ("NHWC", "uint8")):
            problems.append(f"input is {self.layout} {self.dtype}; the fused graph takes NCHW float32 in [0, 1] "
                            "or NHWC uint8 camera frames")
        value_range = _numbers(self.value_range, "input.value_range", problems, length=2)
        if value_range is not None and not value_range[0] < value_range[1]:
            problems.append(f"input.value_range is {list(value_range)}, expected [low, high] with low < high")
        elif value_range is not None and self.dtype in _VALUE_RANGE and value_range != _VALUE_RANGE[self.dtype]:
            problems.append(f"input.value_range is {list(value_range)} for {self.dtype} input; the graph's "
                            f"preprocessing takes {list(_VALUE_RANGE[self.dtype])} (mean/std are on the [0, 1] scale)")
        if self.channel_order not in ("GRAY", "RGB", "BGR"):
            problems.append(f"input.channel_order is {self.channel_order!r}, expected 'GRAY', 'RGB' or 'BGR'")
        mean = _numbers(self.mean, "input.mean", problems)
        std = _numbers(self.std, "input.std", problems)
        if std is not None and any(v <= 0 for v in std):
            problems.append(f"input.std is {list(std)}, expected every entry > 0")
        if mean is not None and std is not None and _is_int(self.channels) and \
                (len(mean) != self.channels or len(std) != self.channels):
            problems.append(f"input.mean/std have {len(mean)}/{len(std)} entries for {self.channels} channel(s)")
        if problems:
            raise ContractError("; ".join(problems))
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "value_range", value_range)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def shape(self) -> tuple[str | int, ...]:
        """Shape with a symbolic batch dimension, in this spec's layout."""
        if self.layout == "NCHW":
            return ("batch", self.channels, self.height, self.width)
        return ("batch", self.height, self.width, self.channels)


def random_inputs(spec: InputSpec, n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded random inputs that fit ``spec``: its layout, dtype and ``value_range``.

    uint8 input is uniform over the integers of ``value_range`` (0-255), float32 input uniform in
    ``[low, high)``; the same ``seed`` gives the same array. The one generator of test, parity
    and benchmark inputs (returns a numpy array; numpy is imported here, not with the module).

    Raises:
        ConfigError: ``n`` is not an integer >= 1.

    Example:
        >>> random_inputs(InputSpec(channels=1, height=28, width=28), 4, seed=0).shape
        (4, 1, 28, 28)
    """
    import numpy as np

    if not _is_int(n) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    shape = (int(n), *(int(d) for d in spec.shape[1:]))
    rng = np.random.default_rng(seed)
    low, high = spec.value_range
    if spec.dtype == "uint8":
        return rng.integers(int(low), int(high) + 1, size=shape, dtype=np.uint8)
    return (rng.random(shape, dtype=np.float32) * (high - low) + low).astype(np.float32)


def dataset_feed(spec: InputSpec, images: np.ndarray) -> np.ndarray:
    """Dataset images (uint8 N x C x H x W, as runs store them) in the layout ``spec`` takes:
    float32 in [0, 1] for NCHW, uint8 N x H x W x C for NHWC (contiguous either way).

    Example:
        >>> dataset_feed(contract.input, run.split("calib")[0]).dtype
        dtype('float32')
    """
    import numpy as np

    if spec.layout == "NHWC":
        return np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(images.astype(np.float32) / 255.0)


@dataclass(frozen=True)
class ThresholdSpec:
    """The calibrated deferral threshold: defer when ``failure_score > value``."""

    value: float = 0.5
    method: str = "default"  # "default" | "coverage" | "risk"
    target_coverage: float | None = None
    target_risk: float | None = None
    delta: float | None = None
    calibration_n: int | None = None
    achieved_coverage: float | None = None
    achieved_risk: float | None = None
    risk_upper_bound: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _is_number(self.value) or not 0.0 <= float(self.value) <= 1.0:
            problems.append(f"threshold.value is {self.value!r}, expected a number in [0, 1] (failure scores lie there)")
        if not isinstance(self.method, str) or not self.method:
            problems.append(f"threshold.method is {self.method!r}, expected a string such as 'coverage'")
        for key in ("target_coverage", "target_risk", "delta", "achieved_coverage", "achieved_risk", "risk_upper_bound"):
            value = getattr(self, key)
            if value is not None and (not _is_number(value) or not 0.0 <= float(value) <= 1.0):
                problems.append(f"threshold.{key} is {value!r}, expected null or a number in [0, 1]")
        if self.calibration_n is not None and (not _is_int(self.calibration_n) or self.calibration_n < 0):
            problems.append(f"threshold.calibration_n is {self.calibration_n!r}, expected null or an integer >= 0")
        if problems:
            raise ContractError("; ".join(problems))
        object.__setattr__(self, "value", float(self.value))
        for key in ("target_coverage", "target_risk", "delta", "achieved_coverage", "achieved_risk", "risk_upper_bound"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, float(getattr(self, key)))
        if self.calibration_n is not None:
            object.__setattr__(self, "calibration_n", int(self.calibration_n))


@dataclass(frozen=True)
class Contract:
    """The contract stored in a fused model file."""

    input: InputSpec
    classes: tuple[str, ...]
    threshold: ThresholdSpec = field(default_factory=ThresholdSpec)
    outputs: tuple[str, ...] = OUTPUT_NAMES
    score: dict[str, Any] = field(
        default_factory=lambda: {
            "name": "metaerr",
            "orientation": "higher = more likely wrong",
            "range": [0.0, 1.0],
            "defer_rule": "defer = failure_score > threshold",
        }
    )
    base: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = CONTRACT_FORMAT
    #: The graph's numeric precision: ``{"name": "fp32"}`` as exported; ``metaerr-edge quantize``
    #: records "int8" or "fp16" with its settings, what was kept in float and the FP32 source.
    precision: dict[str, Any] = field(default_factory=lambda: {"name": "fp32"})

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.input, InputSpec):
            problems.append(f"input must be an InputSpec, got {type(self.input).__name__}")
        if isinstance(self.classes, str) or not isinstance(self.classes, (tuple, list)):
            problems.append(f"classes must be a list of class names, got {type(self.classes).__name__} {self.classes!r:.60}")
        else:
            bad = [c for c in self.classes if not isinstance(c, str) or not c]
            if bad:
                problems.append(f"classes must be non-empty strings, got {bad[:3]!r}")
            elif len(self.classes) < 2:
                problems.append(f"{len(self.classes)} class name(s), expected at least 2")
            elif len(set(self.classes)) != len(self.classes):
                dupes = sorted({c for c in self.classes if list(self.classes).count(c) > 1})
                problems.append(f"class names must be unique, {dupes[:3]} repeat")
        if not isinstance(self.threshold, ThresholdSpec):
            problems.append(f"threshold must be a ThresholdSpec, got {self.threshold!r}")
        if not isinstance(self.outputs, (tuple, list)) or tuple(self.outputs) != OUTPUT_NAMES:
            problems.append(f"outputs are {self.outputs!r}, expected {list(OUTPUT_NAMES)}")
        for key in ("score", "base", "meta", "metrics", "versions", "precision"):
            if not isinstance(getattr(self, key), dict):
                problems.append(f"{key} must be an object (dict), got {type(getattr(self, key)).__name__}")
        if isinstance(self.precision, dict) and self.precision.get("name") not in PRECISIONS:
            problems.append(f"precision.name is {self.precision.get('name')!r}, expected one of {list(PRECISIONS)}")
        if problems:
            raise ContractError("invalid metaerr-edge contract: " + "; ".join(problems))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def precision_name(self) -> str:
        """``"fp32"``, ``"fp16"`` or ``"int8"``."""
        return str(self.precision["name"])

    def with_threshold(self, threshold: ThresholdSpec) -> "Contract":
        return replace(self, threshold=threshold)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "the model file") -> "Contract":
        """Parse and validate a contract; raise :class:`ContractError` naming what is wrong."""
        try:
            raw = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ContractError(
                f"{source}: the '{CONTRACT_KEY}' metadata is not valid JSON ({exc}). "
                "Re-export the model with `metaerr-edge export`."
            ) from exc
        if not isinstance(raw, dict) or raw.get("format") != CONTRACT_FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ContractError(
                f"{source}: expected a contract of format {CONTRACT_FORMAT!r}, found {found!r}. "
                "Re-export the model with this version of `metaerr-edge export`."
            )
        try:
            contract = cls(
                input=InputSpec(**_object(raw, "input")),
                classes=raw["classes"],
                threshold=ThresholdSpec(**_object(raw, "threshold", required=False)),
                outputs=raw.get("outputs", OUTPUT_NAMES),
                score=raw.get("score", {}),
                base=raw.get("base", {}),
                meta=raw.get("meta", {}),
                metrics=raw.get("metrics", {}),
                versions=raw.get("versions", {}),
                format=raw["format"],
                precision=raw.get("precision", {"name": "fp32"}),  # files from before reduced precision: FP32
            )
        except ContractError as exc:
            raise ContractError(f"{source}: {exc}. Re-export the model with `metaerr-edge export` "
                                "(or fix the field) and calibrate it again.") from None
        except (KeyError, TypeError) as exc:
            raise ContractError(
                f"{source}: the contract is missing or has a malformed field ({exc!r}); "
                "expected keys input, classes, threshold, outputs. Re-export the model."
            ) from exc
        return contract


def validate_contract(contract: Contract, source: str = "contract") -> None:
    """Check a contract (its constructors already do); raise :class:`ContractError` naming the field."""
    if not isinstance(contract, Contract):
        raise ContractError(f"{source}: expected a Contract, got {type(contract).__name__}")
    try:
        Contract(**{f: getattr(contract, f) for f in ("input", "classes", "threshold", "outputs", "score", "base",
                                                      "meta", "metrics", "versions", "format", "precision")})
    except ContractError as exc:
        raise ContractError(f"{source}: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, name: str, problems: list[str], length: int | None = None) -> tuple[float, ...] | None:
    """``value`` as a tuple of finite floats, or None after noting the problem."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value \
            or not all(_is_number(v) for v in value):
        problems.append(f"{name} is {value!r}, expected a list of finite numbers")
        return None
    if length is not None and len(value) != length:
        problems.append(f"{name} has {len(value)} entries, expected {length}")
        return None
    return tuple(float(v) for v in value)


def _object(raw: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = raw[key] if required else raw.get(key, {})
    if not isinstance(value, dict):
        raise ContractError(f"'{key}' must be an object, got {type(value).__name__} {value!r:.60}")
    return value
