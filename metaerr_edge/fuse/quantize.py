"""Reduced precision for the fused graph: INT8 (ONNX Runtime static quantization, QDQ) and FP16.

INT8: ``quant_pre_process`` (shape inference and ONNX Runtime's basic graph optimisations), then
``quantize_static`` in QDQ format with signed 8-bit weights (symmetric). ``target`` picks the
activations: "onnxruntime" (default) unsigned 8-bit with a zero point (asymmetric: all 8 bits for the
non-negative outputs of ReLUs; and ONNX Runtime's U8S8 kernels, measured about 2x faster than FP32 on
a ResNet-18 here where signed activations gave 1.2x, and the only INT8 MobileNetV3-Small not 4-5x
slower than FP32); "tensorrt" signed 8-bit, symmetric (zero point 0), the only scheme TensorRT's
explicit quantization reads. (On a digits run symmetric activations changed 1.7% of the labels,
asymmetric ones none.)
Activation ranges come from calibration images fed through a ``CalibrationDataReader`` (the
caller picks them; the CLI takes the run's meta_train split, never test).

FP16: ONNX Runtime's ``convert_float_to_float16`` with float32 inputs and outputs kept
(``keep_io_types``): the precision is baked into the graph, as TensorRT 11's strongly typed
networks and GPU ONNX Runtime need. ONNX Runtime 1.32's CPU provider runs the FP16 graphs of the
registry's bases here; older builds lack FP16 kernels on x86 and refuse to load them.

The score tail (:func:`score_tail`): by default every Softmax and everything after it, and the
meta-model's own head (the nodes reading its weights, mentor excluded) and everything after it,
stay in float32: the failure score, its sigmoid and the defer comparison read exact floats, while
the convolutions of base and mentor, where the time goes, are quantized. ``tail="quantized"``
quantizes it too (ONNX Runtime's default: Softmax and Sigmoid are among the ops it quantizes).

The contract of the written graph records the precision, the quantizer's settings, the nodes kept
in float, the FP32 source's graph sha256 and its threshold; the threshold is still the FP32 one
until ``metaerr-edge calibrate`` (run by ``metaerr-edge quantize`` by default) fits it on the
deployed graph.

Example:
    >>> report = quantize_int8("model.onnx", "model.int8.onnx", calib_images)
    >>> read_contract("model.int8.onnx").precision["name"]
    'int8'
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from metaerr_edge.contract.reader import ModelInfo, info_from_bytes
from metaerr_edge.contract.spec import Contract, dataset_feed
from metaerr_edge.errors import ConfigError, ContractError, InputError, MetaErrError, require
from metaerr_edge.fuse.modelfile import MAKE_ONE, atomic_write, check_threshold_reader, load_with_contract, set_contract

__all__ = ["CALIBRATION_METHODS", "INT8_TARGETS", "QuantizeReport", "calibration_images", "convert_fp16", "quantize_int8",
           "recalibration_target", "score_tail"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TAILS = ("float", "quantized")
#: The INT8 flavours: ONNX Runtime (asymmetric activations) or TensorRT (symmetric, zero point 0).
INT8_TARGETS = ("onnxruntime", "tensorrt")
_MENTOR_PREFIX = "meta.mentor."


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_int8` / :func:`convert_fp16` wrote."""

    path: Path
    precision: str
    size_bytes: int
    source_size_bytes: int
    sha256: str
    kept_float: tuple[str, ...]
    contract: Contract
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "precision": self.precision, "size_bytes": self.size_bytes,
                "source_size_bytes": self.source_size_bytes, "sha256": self.sha256,
                "kept_float_nodes": len(self.kept_float), "settings": dict(self.settings)}


def score_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute the failure score from the base's and mentor's outputs.

    The tail is every node downstream of (and including) a Softmax, and of a node that reads a
    meta-model initializer (``meta.*``) other than the mentor's backbone (``meta.mentor.*``):
    the probabilities, the head, its stacked free score, the sigmoid and the defer comparison.
    Export names initializers after the FusedModel's state_dict keys, which is what this reads.

    Raises:
        ContractError: a graph with no Softmax (not a fused metaerr-edge graph).
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seeds = [n for n in graph.node if n.op_type == "Softmax"]
    if not seeds:
        raise ContractError("the graph has no Softmax node: not a fused metaerr-edge graph. " + MAKE_ONE)
    seeds += [n for n in graph.node if any(i in inits and i.startswith("meta.") and not i.startswith(_MENTOR_PREFIX)
                                           for i in n.input)]
    tail: dict[str, onnx.NodeProto] = {}
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if node.name in tail:
            continue
        tail[node.name] = node
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return [n.name for n in graph.node if n.name in tail]


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration_images: np.ndarray, *,
                  target: str = "onnxruntime", per_channel: bool = False, tail: str = "float", method: str = "minmax",
                  reduce_range: bool | None = None, calibration_source: dict[str, Any] | None = None,
                  batch_size: int = 32) -> QuantizeReport:
    """Statically quantize the fused graph ``src`` to INT8 (QDQ) and write it, with its contract, to ``dst``.

    Args:
        src: an FP32 fused ``.onnx`` (``metaerr-edge export``).
        dst: where to write (atomically; never ``src`` itself).
        calibration_images: inputs in the contract's layout and dtype (NCHW float32 in [0, 1] or
            NHWC uint8) for the activation ranges; at least one image. Never the test split.
        target: "onnxruntime" (uint8 asymmetric activations) or "tensorrt" (int8 symmetric, as TensorRT requires).
        per_channel: per-output-channel weight scales (more accurate; validate per model).
        tail: "float" (default: the score tail stays float32) or "quantized" (ONNX Runtime's default).
        method: activation range calibration: "minmax", "entropy" or "percentile".
        reduce_range: 7-bit weights, which keeps x86 CPUs without AVX-512 VNNI (ONNX Runtime's U8S8
            kernels sum pairs of products in int16) from saturating. ``None`` (default): on for the
            onnxruntime target (chosen on the benchmark's calibration split: Fashion-MNIST kept 98.2%
            of the labels with it, 96.3% without, on this AVX2 CPU), off for tensorrt (no such kernels).
        calibration_source: recorded in the contract (e.g. ``{"split": "meta_train", "n": 512}``).
        batch_size: images per calibration batch.

    Raises:
        ConfigError: bad settings, ``dst`` equal to ``src``, or a source that is not FP32.
        InputError: calibration images of the wrong dtype or shape, or none.
    """
    quantization = require("onnxruntime.quantization", "metaerr-edge[train]", "INT8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if tail not in TAILS:
        raise ConfigError(f"tail must be one of {list(TAILS)}, got {tail!r}")
    if target not in INT8_TARGETS:
        raise ConfigError(f"INT8 target must be one of {list(INT8_TARGETS)}, got {target!r}")
    if reduce_range is None:
        reduce_range = target == "onnxruntime"
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    src, dst = Path(src), Path(dst)
    model, contract, info = _source(src, dst)
    images = _calibration_images(contract, calibration_images)
    methods = {"minmax": quantization.CalibrationMethod.MinMax, "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="metaerr-quantize-") as tmp:
        plain, pre, out = Path(tmp) / "plain.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        del model.metadata_props[:]  # the contract goes back on at the end, rewritten
        onnx.save(model, str(plain))
        with _stage("quant_pre_process (shape inference, graph optimisation)", src):
            quant_pre_process(str(plain), str(pre), skip_symbolic_shape=False)
        prepared = onnx.load(str(pre))
        _name_nodes(prepared)
        onnx.save(prepared, str(pre))
        kept = score_tail(prepared) if tail == "float" else []
        with _stage("quantize_static", src):
            quantization.quantize_static(
                str(pre), str(out), _reader(quantization.CalibrationDataReader, contract.input.name, images, batch_size),
                quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel,
                activation_type=quantization.QuantType.QInt8 if target == "tensorrt" else quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=methods[method], nodes_to_exclude=kept, reduce_range=reduce_range,
                extra_options={"ActivationSymmetric": target == "tensorrt", "WeightSymmetric": True},
            )  # fmt: skip
        quantized = onnx.load(str(out))
    import onnxruntime

    settings = {"name": "int8", "format": "QDQ", "target": target,
                "weights": "int8 symmetric" + (", 7-bit range" if reduce_range else ""),
                "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
                "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
                "calibration": {"method": method, "n": int(len(images)), **(calibration_source or {})}, "tail": tail,
                "quantizer": f"onnxruntime.quantization {onnxruntime.__version__} (quant_pre_process, quantize_static)"}
    return _finish(quantized, contract, info, dst, settings, kept)


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, tail: str = "float") -> QuantizeReport:
    """Convert the fused graph ``src`` to FP16 (float32 input and outputs kept) and write it to ``dst``.

    ``tail="float"`` keeps the score tail (:func:`score_tail`) in float32, ``"quantized"`` converts it too.
    """
    require("onnxruntime.transformers.float16", "metaerr-edge", "FP16 conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if tail not in TAILS:
        raise ConfigError(f"tail must be one of {list(TAILS)}, got {tail!r}")
    src, dst = Path(src), Path(dst)
    model, contract, info = _source(src, dst)
    _name_nodes(model)
    kept = score_tail(model) if tail == "float" else []
    with _stage("convert_float_to_float16", src):
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=kept or None)
    _topological_sort(converted)  # the converter appends its input casts after their readers
    del converted.graph.value_info[:]  # stale float32 annotations of converted tensors; the checker re-infers them
    import onnxruntime

    settings = {"name": "fp16", "weights": "fp16", "activations": "fp16", "tail": tail,
                "quantizer": f"onnxruntime.transformers.float16 {onnxruntime.__version__} "
                             "(convert_float_to_float16, keep_io_types=True)"}  # fmt: skip
    return _finish(converted, contract, info, dst, settings, kept)


def calibration_images(run: Any, contract: Contract, split: str = "meta_train", n: int = 512,
                       seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """A seeded sample of ``n`` images of ``split`` in the graph's layout, and what it was.

    Raises:
        ConfigError: the test split (never used to build a model) or calib (it fits the threshold).
    """
    if split in ("test", "calib"):
        raise ConfigError(f"INT8 calibration images come from meta_train or base_train, not {split!r}: test is only "
                          "reported, and calib fits the threshold of the quantized graph")
    images, _ = run.split(split)
    if len(images) == 0:
        raise ConfigError(f"the run's {split} split is empty; pick --calibration-split "
                          f"{'base_train' if split == 'meta_train' else 'meta_train'}")
    take = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return dataset_feed(contract.input, images[take]), {"split": split, "n": int(len(take)), "seed": int(seed)}


def recalibration_target(threshold: Any) -> dict[str, float | None]:
    """The FP32 contract's threshold target, for fitting the reduced graph's own (coverage 0.9 when it had none)."""
    if threshold.method == "risk" and threshold.target_risk is not None:
        return {"risk": threshold.target_risk, "delta": threshold.delta}
    if threshold.target_coverage is not None:
        return {"coverage": threshold.target_coverage}
    return {"coverage": 0.9}


# --- helpers -------------------------------------------------------------------------------


@contextmanager
def _stage(what: str, src: Path) -> Iterator[None]:
    """Name the converter stage that failed: its own exceptions become one :class:`ContractError`. What
    the converters print (ONNX Runtime's calibrators print histogram settings) goes to the debug log,
    not to stdout, where the CLI writes its JSON."""
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            yield
    except MetaErrError:
        raise
    except Exception as exc:  # onnxruntime's and onnx's own error types, and their assertions
        raise ContractError(f"{src}: {what} failed ({type(exc).__name__}: {str(exc).strip()[:300]}); nothing was "
                            "written. Try the default settings (--calibration-method minmax), export the model again with the default "
                            "exporter and opset, or keep it FP32") from exc
    finally:
        if printed.getvalue().strip():
            logging.getLogger("metaerr_edge.quantize").debug("%s printed: %s", what, printed.getvalue().strip())


def _source(src: Path, dst: Path) -> tuple[onnx.ModelProto, Contract, ModelInfo]:
    """The checked FP32 source model, its contract and its info (one read); refuse writing over it."""
    if dst.resolve() == src.resolve():
        raise ConfigError(f"-o {dst} is the source model itself; write the reduced-precision graph to another "
                          f"file, e.g. {src.with_suffix('')}.int8.onnx")
    model, contract, info = load_with_contract(src)
    if contract.precision_name != "fp32":
        raise ConfigError(f"{src} is already {contract.precision_name} (contract.precision); quantize the FP32 graph "
                          "that `metaerr-edge export` wrote, not a reduced-precision one")
    return model, contract, info


def _calibration_images(contract: Contract, images: Any) -> np.ndarray:
    spec = contract.input
    want = np.uint8 if spec.dtype == "uint8" else np.float32
    shape = tuple(int(d) for d in spec.shape[1:])
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != want or tuple(images.shape[1:]) != shape:
        got = f"{images.dtype}{list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InputError(f"calibration images are {got}; the graph takes {spec.dtype}[N, {', '.join(map(str, shape))}] "
                         f"({spec.layout}). Pass images in the contract's layout, e.g. a run's meta_train split")
    if len(images) == 0:
        raise InputError("no calibration images: INT8 needs a few hundred representative inputs for its "
                         "activation ranges (e.g. --run RUN, which uses its meta_train split)")
    return np.ascontiguousarray(images)


def _reader(base: type, name: str, images: np.ndarray, batch_size: int) -> Any:
    """A ``CalibrationDataReader`` (``base``) that yields ``images`` in batches of ``batch_size``."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.start, self.step = 0, max(1, int(batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(images):
                return None
            chunk = images[self.start:self.start + self.step]
            self.start += self.step
            return {name: chunk}

        def rewind(self) -> None:
            self.start = 0

    return Reader()


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (the quantizer excludes nodes by name)."""
    taken: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in taken:
            node.name = next(f"{node.op_type}_{i}_{k}" for k in range(10**6) if f"{node.op_type}_{i}_{k}" not in taken)
        taken.add(node.name)


def _topological_sort(model: onnx.ModelProto) -> None:
    """Reorder the graph's nodes so that every node comes after the producers of its inputs."""
    graph = model.graph
    ready = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        done, rest = [], []
        for node in pending:
            (done if all(i in ready for i in node.input) else rest).append(node)
        if not done:
            raise ContractError(f"the converted graph has a cycle or a dangling input near {rest[0].name!r}")
        ordered += done
        ready.update(o for n in done for o in n.output)
        pending = rest
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep the default domain and the domains some node uses (ONNX Runtime's optimiser imports a dozen)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _finish(model: onnx.ModelProto, contract: Contract, source: ModelInfo, dst: Path, settings: dict[str, Any],
            kept: Iterable[str]) -> QuantizeReport:
    """Write ``model`` with ``contract`` updated (precision, graph sha256, versions) to ``dst``, atomically.

    The FP32 contract's test metrics describe the FP32 graph: they move to ``precision["source"]``
    (``metaerr-edge verify`` measures the reduced graph), and the threshold is the FP32 one until
    ``calibrate`` fits it on this graph (``precision["recalibrated"]``).
    """
    import onnxruntime

    check_threshold_reader(model, f"{dst} (after the {settings['name']} conversion; keep the tail in float)")
    _drop_unused_opsets(model)
    kept = tuple(kept)
    precision = {**settings, "kept_float": list(kept), "recalibrated": False, "source": {
        "graph_sha256": source.graph_sha256, "sha256": source.sha256, "threshold": contract.threshold.value,
        "threshold_method": contract.threshold.method, "metrics": dict(contract.metrics)}}
    graph_sha256 = info_from_bytes(model.SerializeToString(), str(dst)).graph_sha256
    new = replace(contract, precision=precision, metrics={}, meta={**contract.meta, "graph_sha256": graph_sha256},
                  versions={**contract.versions, "onnxruntime": onnxruntime.__version__})
    set_contract(model, new)
    digest, size = atomic_write(dst, lambda tmp: model)
    return QuantizeReport(path=dst, precision=settings["name"], size_bytes=size, source_size_bytes=source.size_bytes,
                          sha256=digest, kept_float=kept, contract=new, settings=settings)
