"""The deployment contract: everything a device needs to feed the fused graph and read its answer.

It travels inside the ONNX file as JSON under the ``metadata_props`` key
:data:`CONTRACT_KEY`. This module is pure Python (no torch, no onnx) so a runtime-only
install can read it, e.g. from ``onnxruntime.InferenceSession(...).get_modelmeta()``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from metaerr_edge.errors import ContractError

CONTRACT_KEY = "metaerr_edge.contract"
CONTRACT_FORMAT = "metaerr-edge/1"
OUTPUT_NAMES = ("label", "probs", "failure_score", "defer")
THRESHOLD_INITIALIZER = "defer_threshold"


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

    @property
    def shape(self) -> tuple[str | int, ...]:
        """Shape with a symbolic batch dimension, in this spec's layout."""
        if self.layout == "NCHW":
            return ("batch", self.channels, self.height, self.width)
        return ("batch", self.height, self.width, self.channels)


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

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
            inp = dict(raw["input"])
            inp["value_range"] = tuple(inp["value_range"])
            inp["mean"] = tuple(inp["mean"])
            inp["std"] = tuple(inp["std"])
            contract = cls(
                input=InputSpec(**inp),
                classes=tuple(raw["classes"]),
                threshold=ThresholdSpec(**raw.get("threshold", {})),
                outputs=tuple(raw.get("outputs", OUTPUT_NAMES)),
                score=dict(raw.get("score", {})),
                base=dict(raw.get("base", {})),
                meta=dict(raw.get("meta", {})),
                metrics=dict(raw.get("metrics", {})),
                versions=dict(raw.get("versions", {})),
                format=raw["format"],
            )
        except (KeyError, TypeError) as exc:
            raise ContractError(
                f"{source}: the contract is missing or has a malformed field ({exc!r}); "
                "expected keys input, classes, threshold, outputs. Re-export the model."
            ) from exc
        validate_contract(contract, source)
        return contract


def validate_contract(contract: Contract, source: str = "contract") -> None:
    """Check internal consistency of a contract; raise :class:`ContractError` if broken."""
    spec = contract.input
    problems = []
    if spec.layout not in ("NCHW", "NHWC"):
        problems.append(f"input.layout is {spec.layout!r}, expected 'NCHW' or 'NHWC'")
    if spec.dtype not in ("float32", "uint8"):
        problems.append(f"input.dtype is {spec.dtype!r}, expected 'float32' or 'uint8'")
    if spec.channels not in (1, 3):
        problems.append(f"input.channels is {spec.channels}, expected 1 or 3")
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        problems.append(f"mean/std have {len(spec.mean)}/{len(spec.std)} entries for {spec.channels} channels")
    if len(contract.classes) < 2:
        problems.append(f"{len(contract.classes)} class names, expected at least 2")
    if not 0.0 <= contract.threshold.value <= 1.0:
        problems.append(f"threshold.value is {contract.threshold.value}, expected within [0, 1]")
    if tuple(contract.outputs) != OUTPUT_NAMES:
        problems.append(f"outputs are {list(contract.outputs)}, expected {list(OUTPUT_NAMES)}")
    if problems:
        raise ContractError(f"{source}: invalid metaerr-edge contract: " + "; ".join(problems))
