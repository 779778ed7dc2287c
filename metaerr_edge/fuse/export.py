"""Export a :class:`FusedModel` to ONE ONNX file that carries its own contract.

The exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter) by
default. It is the default and maintained path since torch 2.9, while the TorchScript exporter
(``dynamo=False``) warns on torch 2.14 that it "will be removed". It exported the small CNN,
torchvision ResNet-18 and MobileNetV3-Small with a dynamic batch and parity within 1e-6 here.
``dynamo=False`` stays available (and tested): it is about ten times faster to export.

Every file written here goes through a temporary file in the target's folder, is checked, and
only then replaces the target: the final path never holds a partial file.

Example:
    >>> report = export_onnx(fused, contract, "model.onnx")
    >>> metaerr_edge.read_contract("model.onnx").threshold.value
    0.5
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnx.version_converter
import torch
from onnx import numpy_helper
from torch import nn

from metaerr_edge.errors import ConfigError, ContractError, require
from metaerr_edge.contract.spec import (
    OUTPUT_NAMES,
    THRESHOLD_INITIALIZER,
    Contract,
    ThresholdSpec,
    random_inputs,
    validate_contract,
)
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.fuse.modelfile import BATCH_DIM, atomic_write, load_checked, set_contract, set_threshold
from metaerr_edge.contract.reader import info_from_bytes

__all__ = ["ExportReport", "example_input", "export_onnx", "export_run", "load_checked", "set_threshold"]

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # the oldest opset the dynamo exporter writes itself
MIN_OPSET = 13  # Softmax over one axis, TopK with k as an input, Greater -> bool: all as exported
_PREFIX = "fused."  # the _Exportable wrapper's attribute; stripped from initializer names


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote. ``contract`` is the one embedded (versions filled)."""

    path: Path
    size_bytes: int
    seconds: float
    opset: int
    exporter: str
    simplified: bool
    sha256: str
    contract: Contract | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the contract as its JSON object)."""
        data = {k: getattr(self, k) for k in ("size_bytes", "seconds", "opset", "exporter", "simplified", "sha256")}
        contract = json.loads(self.contract.to_json()) if self.contract is not None else None
        return {"path": str(self.path), **data, "contract": contract}


class _Exportable(nn.Module):
    """Holds the FusedModel one level down: torch.export's unlifted GraphModule has its own
    ``meta`` dict, which clashes with ``FusedModel.meta`` at the root ("references nonexistent
    attribute conv of meta" on torch 2.14)."""

    def __init__(self, fused: FusedModel) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.fused(image)


class RunLike(Protocol):
    """The three methods of a training run that export and verify use (duck-typed)."""

    def fused(self, threshold: float | None = None, layout: str = "NCHW", mode: str | None = None) -> FusedModel: ...
    def contract(self, layout: str = "NCHW", mode: str | None = None) -> Contract: ...
    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...


def example_input(contract: Contract, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input of the contract's layout and dtype (batch >= 2: torch.export specialises 1)."""
    return torch.from_numpy(random_inputs(contract.input, batch, seed))


def export_onnx(fused: FusedModel, contract: Contract, path: str | os.PathLike[str], *,
                opset: int = DEFAULT_OPSET, dynamo: bool = True, simplify: bool = False) -> ExportReport:
    """Export ``fused`` with ``contract`` embedded; check it; write ``path`` atomically.

    Args:
        fused: the model; its preprocessing must match ``contract.input``.
        contract: the deployment contract (its threshold must equal the model's).
        path: the ``.onnx`` file to write (replaced only once the new one passed the checks).
        opset: ONNX opset (18 is read by ONNX Runtime >= 1.14 and TensorRT 10).
        dynamo: torch.export-based exporter (True) or the legacy TorchScript one (False).
        simplify: run onnxslim on the graph (the threshold initializer keeps its name).

    Returns:
        An :class:`ExportReport`.

    Raises:
        ConfigError: the model and the contract disagree (layout, mean/std, classes, threshold).
        ContractError: the exported graph breaks the contract (names, dtypes, static batch).

    Example:
        >>> export_onnx(fused, contract, "model.onnx", simplify=True).size_bytes
        45123
    """
    start = time.perf_counter()
    path = Path(path)
    check_opset(opset)
    validate_contract(contract, "export_onnx")
    _check_model_matches(fused, contract)
    example = example_input(contract)
    was_training = fused.training
    fused.eval()
    try:
        with torch.no_grad():
            _, probs, _, _ = fused(example)
        if probs.shape[1] != contract.num_classes:
            raise ConfigError(f"the model outputs {probs.shape[1]} classes, the contract names "
                              f"{contract.num_classes}; pass the contract of this model")
        versions = {"metaerr_edge": _package_version(), "torch": torch.__version__,
                    "onnx": onnx.__version__, "opset": str(opset),
                    "exporter": "dynamo" if dynamo else "torchscript"}
        slim = require("onnxslim", "metaerr-edge[simplify]", "simplify=True") if simplify else None
        if slim is not None:
            versions["onnxslim"] = str(getattr(slim, "__version__", "unknown"))
        filled = replace(contract, versions={**contract.versions, **versions})
        written_contract: list[Contract] = []

        def build(tmp: Path) -> onnx.ModelProto:
            # The dynamo exporter writes 18 or newer; below that we convert here, and say so if we cannot.
            written = max(opset, DYNAMO_MIN_OPSET) if dynamo else opset
            _torch_export(_Exportable(fused).eval(), example, tmp, contract, written, dynamo)
            model = _convert_opset(onnx.load(str(tmp)), opset, versions["exporter"])
            if slim is not None:
                model = slim.slim(model)
            _tidy(model)
            _pin_threshold(model, float(fused.defer_threshold))
            _name_batch_dim(model)
            # The contract names the graph it belongs to: a contract copied onto other weights is refused.
            graph_sha256 = info_from_bytes(model.SerializeToString(), str(path)).graph_sha256
            written_contract[:] = [replace(filled, meta={**filled.meta, "graph_sha256": graph_sha256})]
            set_contract(model, written_contract[0])
            return model

        digest, size = atomic_write(path, build)
        filled = written_contract[0]
    finally:
        fused.train(was_training)
    return ExportReport(path=path, size_bytes=size, seconds=time.perf_counter() - start, opset=opset,
                        exporter=versions["exporter"], simplified=simplify, sha256=digest,
                        contract=filled)


def export_run(run: RunLike | str | os.PathLike[str], out_path: str | os.PathLike[str], *, layout: str = "NCHW", fmt: str = "onnx",
               simplify: bool = False, threshold: float | None = None, model_name: str = "metaerr_edge",
               opset: int = DEFAULT_OPSET, dynamo: bool = True, mode: str | None = None) -> ExportReport:
    """Export a training run: ``fmt="onnx"`` writes ``out_path``; ``"triton"`` a model repository.

    Uses only ``run.contract(layout=, mode=)`` and ``run.fused(threshold=, layout=, mode=)``:
    ``mode`` picks the meta mode to deploy (default: the run's first), and the threshold and
    metrics in the contract are that mode's. ``threshold`` overrides the run's calibrated one
    (recorded in the contract as ``method="manual"``).

    Example:
        >>> export_run(run, "repo/", fmt="triton").path
        PosixPath('repo/metaerr_edge/1/model.onnx')
    """
    if fmt not in ("onnx", "triton"):
        raise ConfigError(f"fmt must be 'onnx' or 'triton', got {fmt!r}")
    if not isinstance(out_path, (str, os.PathLike)):
        raise ConfigError(f"out_path must be a path (str or os.PathLike), got {type(out_path).__name__} {out_path!r}")
    if isinstance(run, (str, os.PathLike)):  # a run folder's path: open it
        from metaerr_edge.pipeline import load_run

        run = load_run(run)
    check_opset(opset)
    contract = run.contract(layout=layout, mode=mode)
    if threshold is not None:
        contract = contract.with_threshold(ThresholdSpec(value=float(threshold), method="manual"))
    fused = run.fused(threshold=contract.threshold.value, layout=layout, mode=mode)
    if fmt == "onnx":
        return export_onnx(fused, contract, out_path, opset=opset, dynamo=dynamo, simplify=simplify)
    from metaerr_edge.fuse.triton_repo import write_triton_repository

    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(fused, contract, Path(tmp) / "model.onnx", opset=opset, dynamo=dynamo,
                             simplify=simplify)
        model_dir = write_triton_repository(report.path, out_path, model_name)
    return replace(report, path=model_dir / "1" / "model.onnx")


def check_opset(opset: int) -> None:
    """Refuse an opset this export cannot write, before any work."""
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset must be an integer from {MIN_OPSET} to {newest} (what onnx {onnx.__version__} "
                          f"knows), got {opset!r}; the default is {DEFAULT_OPSET}")


def _convert_opset(model: onnx.ModelProto, opset: int, exporter: str) -> onnx.ModelProto:
    """``model`` at ``opset`` (onnx's version converter when the exporter wrote another one)."""
    wrote = default_opset(model)
    if wrote != opset:
        try:
            model = onnx.version_converter.convert_version(model, opset)
            onnx.checker.check_model(model)  # the converter can write attributes the older opset lacks
        except Exception as exc:  # the converter's C++ assertions surface as RuntimeError
            reason = str(exc).strip().splitlines()[-1][-200:]
            raise ConfigError(f"asked for opset {opset}: the {exporter} exporter wrote opset {wrote} and onnx could "
                              f"not convert this graph down ({reason}). Use --legacy-exporter (opsets "
                              f"{MIN_OPSET}-20) or the default opset {DEFAULT_OPSET}.") from None
    if default_opset(model) != opset:
        raise ConfigError(f"asked for opset {opset}, but the exported graph is opset {default_opset(model)}; "
                          f"use --legacy-exporter or the default opset {DEFAULT_OPSET}")
    return model


def default_opset(model: onnx.ModelProto) -> int | None:
    """The opset of the default ("ai.onnx") domain that ``model`` imports."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


# --- helpers -------------------------------------------------------------------------------


def _package_version() -> str:
    from metaerr_edge import __version__

    return __version__


def _check_model_matches(fused: FusedModel, contract: Contract) -> None:
    spec, pre = contract.input, fused.preprocess
    problems = []
    if pre.layout != spec.layout:
        problems.append(f"layout {pre.layout} vs contract {spec.layout}")
    mean, std = pre.mean.flatten().tolist(), pre.std.flatten().tolist()
    if len(mean) != spec.channels or not np.allclose(mean, spec.mean, atol=1e-6) \
            or not np.allclose(std, spec.std, atol=1e-6):
        problems.append(f"mean/std {mean}/{std} vs contract {list(spec.mean)}/{list(spec.std)}")
    if (spec.layout == "NHWC") != (spec.dtype == "uint8"):
        problems.append(f"{spec.layout} with dtype {spec.dtype} (NCHW takes float32, NHWC uint8)")
    if abs(float(fused.defer_threshold) - contract.threshold.value) > 1e-6:
        problems.append(f"threshold {float(fused.defer_threshold)} vs contract {contract.threshold.value}")
    if problems:
        raise ConfigError("the FusedModel does not match the contract: " + "; ".join(problems)
                          + ". Build both from the same run (run.fused / run.contract).")


def _torch_export(module: nn.Module, example: torch.Tensor, path: Path, contract: Contract,
                  opset: int, dynamo: bool) -> None:
    names: dict[str, Any] = {"input_names": [contract.input.name], "output_names": list(OUTPUT_NAMES)}
    if dynamo:
        batch = torch.export.Dim(BATCH_DIM, min=1, max=65536)
        extra: dict[str, Any] = {"dynamic_shapes": ({0: batch},), "optimize": True, "verbose": False}
    else:
        axes = {n: {0: BATCH_DIM} for n in [contract.input.name, *OUTPUT_NAMES]}
        extra = {"dynamic_axes": axes, "do_constant_folding": True}
    torch.onnx.export(module, (example,), str(path), dynamo=dynamo, opset_version=opset,
                      external_data=False, **names, **extra)


def _tidy(model: onnx.ModelProto) -> None:
    """Drop per-node debug metadata (dynamo's stack traces hold local paths) and the wrapper's
    ``fused.`` prefix, so initializer names equal the FusedModel's state_dict keys."""
    for node in model.graph.node:
        del node.metadata_props[:]
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    for init in model.graph.initializer:
        new = init.name[len(_PREFIX):] if init.name.startswith(_PREFIX) else init.name
        if new != init.name and new not in taken:
            for node in _consumers(model, init.name):
                node.input[:] = [new if i == init.name else i for i in node.input]
            taken.add(new)
            init.name = new


def _pin_threshold(model: onnx.ModelProto, value: float) -> None:
    """Make the ``defer`` comparison read a private initializer named ``defer_threshold``.

    Whatever the exporter did (kept a prefixed name, made a Constant, or shared the tensor with an
    equal constant of the user's model, e.g. the 0.5 inside a GELU at threshold 0.5), afterwards
    exactly one tensor named ``defer_threshold`` exists and ``Greater`` is its only consumer, so
    rewriting it (``set_threshold``) moves the threshold and nothing else.
    """
    graph = model.graph
    producer = next((n for n in graph.node if "defer" in n.output), None)
    if producer is None or producer.op_type != "Greater":
        found = producer.op_type if producer is not None else "nothing"
        raise ContractError(f"expected the 'defer' output to come from Greater(score, threshold), "
                            f"found {found}; the exporter changed the graph shape")
    old = producer.input[1]
    inits = {t.name: t for t in graph.initializer}
    if old in inits:
        array = numpy_helper.to_array(inits[old])
    else:
        const = next((n for n in graph.node if old in n.output and n.op_type == "Constant"), None)
        if const is None:
            raise ContractError(f"the threshold input {old!r} of 'defer' is neither an initializer "
                                "nor a Constant; cannot make it rewritable")
        array = numpy_helper.to_array(const.attribute[0].t)
    if array.size != 1 or abs(float(array.reshape(-1)[0]) - value) > 1e-6:
        raise ContractError(f"the threshold tensor {old!r} holds {array.tolist()}, expected {value}")
    if old == THRESHOLD_INITIALIZER and old in inits and _consumers(model, old) == [producer]:
        return  # already private
    _rename_tensor(model, THRESHOLD_INITIALIZER)  # whatever holds the name now keeps its users under another
    old = producer.input[1]
    producer.input[1] = THRESHOLD_INITIALIZER
    graph.initializer.append(numpy_helper.from_array(array.reshape(()).astype(np.float32), THRESHOLD_INITIALIZER))
    if not _consumers(model, old) and old not in {o.name for o in graph.output}:
        inits = {t.name: t for t in graph.initializer}
        if old in inits:
            graph.initializer.remove(inits[old])
        else:
            graph.node.remove(next(n for n in graph.node if old in n.output))


def _rename_tensor(model: onnx.ModelProto, name: str) -> None:
    """Give the tensor called ``name`` (if any) a fresh name everywhere it is produced or read."""
    graph = model.graph
    taken = {o for n in _all_nodes(graph) for o in [*n.output, *n.input]}
    taken |= {t.name for t in graph.initializer} | {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    if name not in taken:
        return
    new = next(f"{name}_{i}" for i in range(1, 10**6) if f"{name}_{i}" not in taken)
    for tensor in graph.initializer:
        if tensor.name == name:
            tensor.name = new
    for value in graph.value_info:
        if value.name == name:
            value.name = new
    for node in _all_nodes(graph):
        node.input[:] = [new if i == name else i for i in node.input]
        node.output[:] = [new if o == name else o for o in node.output]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies read outer names too)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                nodes.extend(_all_nodes(sub))
    return nodes


def _consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in _all_nodes(model.graph) if name in n.input]


def _name_batch_dim(model: onnx.ModelProto) -> None:
    """Give the batch dimension of every graph input and output the symbolic name ``batch``."""
    old_names = set()
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise ContractError(f"'{value.name}' has a fixed batch dimension {dim.dim_value}; "
                                "the export lost the dynamic batch")
        old_names.add(dim.dim_param)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in old_names:
                dim.dim_param = BATCH_DIM

