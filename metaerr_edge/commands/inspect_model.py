"""``metaerr-edge inspect model.onnx``: what a fused model file holds: its contract, interface, opset, size.

Torch-free and onnx-free (it reads the file with :mod:`metaerr_edge.contract.reader`), so it runs
on a device install. Exit code 0 for a valid metaerr-edge model whose graph agrees with its contract;
1 for a valid ONNX file without a contract, with an invalid one, or with problems (all printed);
2 (via the CLI) for a missing, empty, truncated or corrupt file.

Example:
    $ metaerr-edge inspect model.onnx
    file       model.onnx
               68,113 bytes (66.5 KiB), sha256 394f264313f89da7
    onnx       ir_version 8, opsets ai.onnx 18, producer pytorch 2.14.1, 25 nodes, 13 initializers
    ...
    $ metaerr-edge inspect model.onnx --json | jq .contract.threshold.value
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metaerr_edge.contract.spec import CONTRACT_KEY  # pure Python, no torch or onnx
from metaerr_edge._fileio import dumps_json

if TYPE_CHECKING:  # the CLI imports every command module: numpy and the reader load in run()
    from metaerr_edge.contract.spec import Contract, ThresholdSpec
    from metaerr_edge.contract.reader import ModelInfo

_LABEL_WIDTH = 11
_CLASSES_SHOWN = 10


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect",
                       help="show a model file's contract, inputs/outputs, opset and size (no torch, no onnx)")
    p.add_argument("model", help=".onnx file (normally written by `metaerr-edge export`)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.contract.reader import model_info

    info = model_info(args.model)
    if args.json:
        print(dumps_json(info.to_dict(), indent=2))
    else:
        print("\n".join(report_lines(info)))
    return 0 if info.ok else 1


def report_lines(info: ModelInfo) -> list[str]:
    """The text report of a :class:`~metaerr_edge.contract.reader.ModelInfo`, one string per line.

    Example:
        >>> print("\\n".join(report_lines(model_info("model.onnx"))))
    """
    lines = _file_lines(info) + _onnx_lines(info)
    if info.contract is not None:
        lines += _contract_lines(info.contract, info)
    return lines + _status_lines(info)


def _row(label: str, *texts: str) -> list[str]:
    """``label`` then the first text; further texts on their own lines, aligned under it."""
    pad = " " * _LABEL_WIDTH
    return [f"{label:<{_LABEL_WIDTH - 1}} {text}" if i == 0 else f"{pad}{text}" for i, text in enumerate(texts)]


def _file_lines(info: ModelInfo) -> list[str]:
    return _row("file", info.path, f"{_size(info.size_bytes)}, sha256 {info.sha256[:16]}")


def _onnx_lines(info: ModelInfo) -> list[str]:
    from metaerr_edge.contract.reader import format_shape

    opsets = ", ".join(f"{domain} {version}" for domain, version in info.opsets.items()) or "none"
    producer = f"{info.producer_name} {info.producer_version}".strip() or "unknown"
    counts = f"{_count(info.node_count, 'node')}, {_count(info.initializer_count, 'initializer')}"
    lines = _row("onnx", f"ir_version {info.ir_version}, opsets {opsets}, producer {producer}, {counts}")
    width = max((len(t.name) for t in (*info.inputs, *info.outputs)), default=0)
    for label, tensors in (("inputs", info.inputs), ("outputs", info.outputs)):
        texts = [f"{t.name:<{width}}  {t.dtype:<8} {format_shape(t.shape)}" for t in tensors] or ["none"]
        lines += _row(label, *texts)
    return lines


def _contract_lines(contract: Contract, info: ModelInfo) -> list[str]:
    spec = contract.input
    names = ", ".join(contract.classes[:_CLASSES_SHOWN])
    more = f", ... (+{contract.num_classes - _CLASSES_SHOWN} more)" if contract.num_classes > _CLASSES_SHOWN else ""
    lo, hi = spec.value_range
    score = contract.score
    graph_threshold = ("none" if info.defer_threshold is None
                       else f"{info.defer_threshold:.6g} ({info.defer_threshold_dtype})")  # fmt: skip
    return [
        *_row("contract", f"{contract.format} (metadata key {CONTRACT_KEY!r})"),
        *_row("classes", f"{contract.num_classes}: {names}{more}"),
        *_row("input", f"{spec.name}: {spec.layout} {spec.dtype} {spec.channels}x{spec.height}x{spec.width}, "
                       f"values in [{_num(lo)}, {_num(hi)}], {spec.channel_order}, "
                       f"mean {_nums(spec.mean)} std {_nums(spec.std)}"),
        *_row("threshold", _threshold_text(contract.threshold), f"graph defer_threshold {graph_threshold}"),
        *_row("precision", _precision_text(contract.precision)),
        *_row("score", f"{score.get('name', '?')}: {score.get('orientation', '?')}; {score.get('defer_rule', '?')}"),
        *_row("base", _pairs(contract.base)),
        *_row("meta", _pairs(contract.meta)),
        *_row("metrics", _pairs(contract.metrics)),
        *_row("versions", _pairs(contract.versions)),
    ]  # fmt: skip


def _precision_text(precision: dict) -> str:
    """``fp32`` as exported, or what ``metaerr-edge quantize`` recorded (settings, float tail, recalibration)."""
    name = str(precision.get("name"))
    if name == "fp32":
        return "fp32 (as exported)"
    parts = [name] + [f"{k} {precision[k]}" for k in ("format", "target", "activations", "tail") if k in precision]
    if precision.get("per_channel"):
        parts.append("per-channel weights")
    if precision.get("reduce_range"):
        parts.append("7-bit weights")
    cal = precision.get("calibration") or {}
    if cal:
        parts.append(f"ranges from {cal.get('n')} {cal.get('split', '')} images ({cal.get('method')})")
    parts.append(f"{len(precision.get('kept_float', []))} nodes kept in float")
    parts.append("threshold recalibrated on this graph" if precision.get("recalibrated") else
                 "threshold NOT recalibrated on this graph (metaerr-edge calibrate)")
    return ", ".join(parts)


def _threshold_text(threshold: ThresholdSpec) -> str:
    optional = [("target coverage", threshold.target_coverage), ("target risk", threshold.target_risk),
                ("delta", threshold.delta), ("calibration n", threshold.calibration_n),
                ("achieved coverage", threshold.achieved_coverage), ("achieved risk", threshold.achieved_risk),
                ("risk upper bound", threshold.risk_upper_bound)]  # fmt: skip
    parts = [f"{threshold.value:.6g}", f"method {threshold.method}"]
    parts += [f"{name} {_num(value)}" for name, value in optional if value is not None]
    return ", ".join(parts)


def _status_lines(info: ModelInfo) -> list[str]:
    if info.contract_error is not None:
        return _row("status", "INVALID CONTRACT: " + info.contract_error)
    if info.contract is None:
        return _row("status", f"this file carries no metaerr-edge contract (no {CONTRACT_KEY!r} metadata): a "
                              "plain ONNX model, not a fused metaerr-edge model. Make one with "
                              "`metaerr-edge export RUN -o model.onnx`")  # fmt: skip
    if info.problems:
        head = f"{_count(len(info.problems), 'PROBLEM')}: the graph and its contract disagree"
        return _row("status", head, *(f"- {p}" for p in info.problems))
    return _row("status", "OK: a valid metaerr-edge model; the graph agrees with its contract")


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n:,} bytes ({n / (1 << 20):.1f} MiB)"
    if n >= 1 << 10:
        return f"{n:,} bytes ({n / (1 << 10):.1f} KiB)"
    return f"{n:,} bytes"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "S" if noun.isupper() else "s")


def _num(value: Any) -> str:
    """Floats to 4 significant digits, ``None`` as ``-``, the rest as ``str``."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _nums(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(_num(float(v)) for v in values) + "]"


def _pairs(data: Mapping[str, Any]) -> str:
    """``key value, key value``; nested values as compact JSON; ``-`` when empty."""
    if not data:
        return "-"
    return ", ".join(f"{k} {_num(v) if not isinstance(v, (dict, list)) else json.dumps(v)}" for k, v in data.items())
