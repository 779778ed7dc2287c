"""What a fused model file says about itself, read without onnx, torch or an inference session.

:func:`model_info` reads the file once, hashes those bytes, and walks them with a small,
read-only reader of the protobuf wire format that knows just the parts of ONNX's ``ModelProto``
a deployment engineer asks about: ``ir_version``, opsets, producer, the graph's inputs and
outputs, its node count, the ``defer_threshold`` initializer and the ``metadata_props`` that hold
the metaerr-edge contract. Every other initializer is skipped by its length, never decoded, so a
45 MB ResNet file is inspected in well under a second. Only the standard library, numpy and the
pure-Python contract are imported: this works on a device install (numpy, onnxruntime, pillow).

The field numbers are those of ``onnx/onnx.proto`` (ONNX 1.23), e.g. ``ModelProto``: 1
ir_version, 2 producer_name, 3 producer_version, 7 graph, 8 opset_import, 14 metadata_props;
``GraphProto``: 1 node, 5 initializer, 11 input, 12 output; ``TensorProto``: 1 dims, 2 data_type,
4 float_data, 5 int32_data, 8 name, 9 raw_data, 10 double_data, 14 data_location.

A truncated or garbage file raises :class:`~metaerr_edge.errors.ContractError` that says what was
expected, what came, and how to fix it; never a bare ``IndexError`` or ``struct.error``.

Example:
    >>> info = model_info("model.onnx")
    >>> info.opsets, [(t.name, t.dtype, t.shape) for t in info.inputs]
    ({'ai.onnx': 18}, [('image', 'float32', ('batch', 1, 28, 28))])
    >>> info.contract.threshold.value == info.defer_threshold, info.problems
    (True, ())
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metaerr_edge.errors import ContractError
from metaerr_edge.contract.spec import CONTRACT_KEY, OUTPUT_NAMES, THRESHOLD_INITIALIZER, Contract

__all__ = ["INFO_KEYS", "ModelInfo", "TensorInfo", "checked_contract", "elem_type_name", "format_shape", "info_from_bytes",
           "load_model_file", "model_info", "read_contract", "read_model_bytes"]

#: The keys of :meth:`ModelInfo.to_dict` (``metaerr-edge inspect --json``), in order.
INFO_KEYS = (
    "path", "size_bytes", "sha256", "ir_version", "opsets", "producer_name", "producer_version",
    "inputs", "outputs", "node_count", "initializer_count", "graph_sha256", "metadata_keys", "defer_threshold",
    "defer_threshold_dtype", "contract", "contract_error", "problems", "status",
)  # fmt: skip

#: ``TensorProto.DataType`` numbers -> readable (numpy-style) names.
ELEM_TYPES = {
    0: "undefined", 1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
    7: "int64", 8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
    19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
    24: "float8e8m0", 25: "uint2", 26: "int2", 27: "float6e2m3", 28: "float6e3m2",
}  # fmt: skip

_BATCH = "batch"  # the symbolic batch dim every export writes (fuse.modelfile.BATCH_DIM)
# What the fused graph's outputs must be (dtype; probs is [batch, K], the others [batch]).
_OUTPUT_DTYPES = {"label": "int64", "probs": "float32", "failure_score": "float32", "defer": "bool"}
_THRESHOLD_TOLERANCE = 1e-6
_FIX = "Copy the file again, or re-export it with `metaerr-edge export RUN -o model.onnx`."

Shape = tuple[int | str | None, ...]


def elem_type_name(elem_type: int) -> str:
    """The readable name of an ONNX ``TensorProto.DataType`` number.

    Example:
        >>> elem_type_name(1), elem_type_name(9), elem_type_name(99)
        ('float32', 'bool', 'elem_type 99')
    """
    return ELEM_TYPES.get(elem_type, f"elem_type {elem_type}")


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output.

    ``shape`` holds ints (fixed dims), strings (symbolic dims such as ``"batch"``) and ``None``
    (a dim of unknown size); ``shape`` itself is ``None`` when the file declares no shape at all.
    ``dtype`` is e.g. ``"float32"``, ``"uint8"``, ``"int64"``, ``"bool"``; non-tensor values are
    ``"sequence"``, ``"map"``, ``"optional"``, ``"opaque"`` or ``"sparse_tensor(float32)"``.

    Example:
        >>> TensorInfo("image", "float32", ("batch", 1, 28, 28)).to_dict()["shape"]
        ['batch', 1, 28, 28]
    """

    name: str
    dtype: str
    shape: Shape | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`model_info` found in a model file.

    ``contract`` is ``None`` both when the file carries no contract and when the one it carries
    is invalid; ``contract_error`` holds the :class:`ContractError` text in the second case.
    ``problems`` lists disagreements between the graph and a valid contract (input/output names,
    dtypes and shapes, the ``defer_threshold`` value). :attr:`status` sums it up.

    Example:
        >>> info = model_info("model.onnx")
        >>> info.status, info.contract.num_classes, info.node_count
        ('ok', 10, 25)
    """

    path: str
    size_bytes: int
    sha256: str
    ir_version: int
    opsets: dict[str, int]
    producer_name: str
    producer_version: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_count: int
    initializer_count: int
    metadata_keys: tuple[str, ...]
    defer_threshold: float | None
    defer_threshold_dtype: str | None
    contract: Contract | None
    contract_error: str | None
    problems: tuple[str, ...]
    threshold_problems: tuple[str, ...] = ()  #: the part of ``problems`` about the threshold value
    #: sha256 of the graph's nodes and initializers, the threshold initializer left out (so that
    #: calibrating does not change it); export records it in ``contract.meta["graph_sha256"]``.
    graph_sha256: str = ""

    @property
    def status(self) -> str:
        """``"ok"`` (a valid metaerr-edge model), ``"no_contract"``, ``"invalid_contract"`` or ``"problems"``."""
        if self.contract_error is not None:
            return "invalid_contract"
        if self.contract is None:
            return "no_contract"
        return "problems" if self.problems else "ok"

    @property
    def ok(self) -> bool:
        """A valid metaerr-edge model whose graph agrees with its contract."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data with the keys :data:`INFO_KEYS` (write it with :func:`metaerr_edge._fileio.dumps_json`).

        Example:
            >>> dumps_json(model_info("model.onnx").to_dict())
        """
        contract = json.loads(self.contract.to_json()) if self.contract is not None else None
        data = {
            "path": self.path, "size_bytes": self.size_bytes, "sha256": self.sha256,
            "ir_version": self.ir_version, "opsets": dict(self.opsets),
            "producer_name": self.producer_name, "producer_version": self.producer_version,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "node_count": self.node_count, "initializer_count": self.initializer_count,
            "graph_sha256": self.graph_sha256, "metadata_keys": list(self.metadata_keys), "defer_threshold": self.defer_threshold,
            "defer_threshold_dtype": self.defer_threshold_dtype, "contract": contract,
            "contract_error": self.contract_error, "problems": list(self.problems), "status": self.status,
        }  # fmt: skip
        return data


def model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Read a model file's ONNX header, interface, threshold and contract (no onnx, no session).

    Args:
        path: an ``.onnx`` file, normally one written by ``metaerr-edge export``.

    Returns:
        A :class:`ModelInfo`. A valid ONNX file without a contract, or with an invalid one, is
        reported in it (see :attr:`ModelInfo.status`), not raised.

    Raises:
        ContractError: the path is missing, a folder, unreadable or empty, or its bytes are not a
            readable ONNX model (truncated, corrupt, another format).

    Example:
        >>> info = model_info("model.onnx")
        >>> info.size_bytes, info.sha256[:12], info.defer_threshold
        (45123, '3f2a9c1b0e4d', 0.27)
    """
    return info_from_bytes(read_model_bytes(path), str(path))


def info_from_bytes(data: bytes, source: str) -> ModelInfo:
    """:func:`model_info` of bytes already read (``source`` names them in messages).

    Opening a model reads its bytes once and hands the *same* bytes to this check, to the engine
    cache key and to the runtime, so a file rewritten in between cannot slip past the check.
    """
    try:
        raw = _parse_model(data)
    except _WireError as exc:
        raise ContractError(f"{source}: not a readable ONNX file: {exc}. The file is truncated or corrupt, "
                            f"or not an ONNX model. {_FIX}") from None
    contract, contract_error = _parse_contract(raw.metadata, source)
    threshold = _threshold_of(raw.graph.threshold)
    problems = _problems(contract, raw.graph, threshold) if contract is not None else []
    threshold_problems = _threshold_problems(contract, threshold) if contract is not None else []
    return ModelInfo(
        path=source, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        ir_version=raw.ir_version, opsets=raw.opsets, producer_name=raw.producer_name,
        producer_version=raw.producer_version, inputs=raw.graph.inputs, outputs=raw.graph.outputs,
        node_count=raw.graph.node_count, initializer_count=raw.graph.initializer_count,
        metadata_keys=tuple(raw.metadata), defer_threshold=threshold.value,
        defer_threshold_dtype=threshold.dtype, contract=contract, contract_error=contract_error,
        problems=tuple(problems), threshold_problems=tuple(threshold_problems), graph_sha256=raw.graph.sha256,
    )  # fmt: skip


def checked_contract(info: ModelInfo, *, ignore_threshold: bool = False) -> Contract:
    """The contract of a model whose graph agrees with it; :class:`ContractError` naming what does not.

    This is the one check every way of opening a model goes through (``open_session`` on every
    backend, ``read_contract``, ``calibrate``, ``verify``, ``bench``, ``predict``).
    ``ignore_threshold`` lets a graph threshold that differs from the contract's pass: for
    ``set_threshold``, which rewrites both.
    """
    if info.contract_error is not None:
        raise ContractError(info.contract_error)
    if info.contract is None:
        raise ContractError(f"{info.path} carries no metaerr-edge contract (no {CONTRACT_KEY!r} metadata; keys "
                            f"{list(info.metadata_keys)}): a plain ONNX graph is not a metaerr-edge model. Fuse the "
                            "classifier with its MetaErr meta-model first: `metaerr-edge export RUN -o model.onnx`")
    problems = [p for p in info.problems if not (ignore_threshold and p in info.threshold_problems)]
    if problems:
        raise ContractError(f"{info.path}: the graph and its contract disagree: " + "; ".join(problems))
    return info.contract


def read_contract(path: str | os.PathLike[str]) -> Contract:
    """The contract embedded in a fused model file, checked against its graph (no onnx, torch or session).

    The one contract reader (``metaerr_edge.read_contract``). Its check is :func:`checked_contract`,
    the one every way of opening a model goes through.

    Raises:
        ContractError: a missing, unreadable, empty or non-ONNX file; no contract, or an invalid
            one; a graph that disagrees with it (input name, layout, dtype or size; class count;
            threshold initializer; graph sha256), naming the field.

    Example:
        >>> read_contract("model.onnx").classes[:2]
        ('T-shirt/top', 'Trouser')
    """
    return checked_contract(model_info(path))


def load_model_file(path: str | os.PathLike[str]) -> tuple[bytes, Contract]:
    """Read a fused model once: its bytes and its checked contract (see :func:`checked_contract`).

    Example:
        >>> data, contract = load_model_file("model.onnx")
        >>> session = onnxruntime.InferenceSession(data)   # the very bytes that were checked
    """
    data = read_model_bytes(path)
    return data, checked_contract(info_from_bytes(data, str(path)))


# ---------------------------------------------------------------------------------------------
# The file


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a model file; :class:`ContractError` for a missing path, a folder, an empty file."""
    return _read_bytes(Path(path))


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ContractError(f"{path}: no such file; expected an .onnx model file (check the path, or "
                            "write one with `metaerr-edge export RUN -o model.onnx`)")
    if path.is_dir():
        raise ContractError(f"{path} is a folder, expected an .onnx model file such as {path / 'model.onnx'}")
    if not path.is_file():  # reading a FIFO or a device would block, or never end
        raise ContractError(f"{path} is not a regular file (a FIFO, socket or device); expected an .onnx model file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the file ({exc.strerror or exc}); "
                            "check its permissions, or copy it again") from None
    if not data:
        raise ContractError(f"{path}: the file is empty (0 bytes), expected an ONNX model; an interrupted "
                            f"copy or export? {_FIX}")
    return data


def _parse_contract(metadata: dict[str, str], source: str) -> tuple[Contract | None, str | None]:
    if CONTRACT_KEY not in metadata:
        return None, None
    try:
        return Contract.from_json(metadata[CONTRACT_KEY], source), None
    except ContractError as exc:
        return None, str(exc)
    except (TypeError, ValueError) as exc:  # a malformed field that from_json did not name; report, never crash
        return None, (f"{source}: invalid metaerr-edge contract ({type(exc).__name__}: {exc}). "
                      "Re-export the model with `metaerr-edge export`.")


# ---------------------------------------------------------------------------------------------
# The protobuf wire format (https://protobuf.dev/programming-guides/encoding/), read-only


class _WireError(Exception):
    """The bytes break the wire format or ONNX's schema; the message names the field and the byte."""


class _Field(NamedTuple):
    """One field: ``value`` is the integer of a varint; ``start:end`` the payload of the others."""

    number: int
    wire: int
    value: int
    start: int
    end: int


_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}

# onnx/onnx.proto's field numbers, per message (only used to name fields in error messages).
_FIELD_NAMES: dict[str, dict[int, str]] = {
    "ModelProto": {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain", 5: "model_version",
                   6: "doc_string", 7: "graph", 8: "opset_import", 14: "metadata_props", 20: "training_info",
                   25: "functions", 26: "configuration"},
    "GraphProto": {1: "node", 2: "name", 5: "initializer", 10: "doc_string", 11: "input", 12: "output",
                   13: "value_info", 14: "quantization_annotation", 15: "sparse_initializer", 16: "metadata_props"},
    "TensorProto": {1: "dims", 2: "data_type", 3: "segment", 4: "float_data", 5: "int32_data", 6: "string_data",
                    7: "int64_data", 8: "name", 9: "raw_data", 10: "double_data", 11: "uint64_data",
                    12: "doc_string", 13: "external_data", 14: "data_location", 16: "metadata_props"},
    "ValueInfoProto": {1: "name", 2: "type", 3: "doc_string", 4: "metadata_props"},
    "TypeProto": {1: "tensor_type", 4: "sequence_type", 5: "map_type", 6: "denotation", 7: "opaque_type",
                  8: "sparse_tensor_type", 9: "optional_type"},
    "TypeProto.Tensor": {1: "elem_type", 2: "shape"},
    "TensorShapeProto": {1: "dim"},
    "TensorShapeProto.Dimension": {1: "dim_value", 2: "dim_param", 3: "denotation"},
    "OperatorSetIdProto": {1: "domain", 2: "version"},
    "StringStringEntryProto": {1: "key", 2: "value"},
}  # fmt: skip


@dataclass(frozen=True)
class _Msg:
    """A message of type ``kind`` at ``data[start:end]`` (absolute offsets, so errors name the byte).

    ``what`` is its path from the top, e.g. ``ModelProto.graph.initializer[3]``.
    """

    data: bytes
    start: int
    end: int
    kind: str
    what: str

    def sub(self, field: _Field, kind: str, index: int | None = None) -> "_Msg":
        """The message held by the length-delimited ``field``."""
        _expect(self, field, _LENGTH)
        name = self.field_name(field.number) + ("" if index is None else f"[{index}]")
        return _Msg(self.data, field.start, field.end, kind, f"{self.what}.{name}")

    def field_name(self, number: int) -> str:
        return _FIELD_NAMES[self.kind].get(number, f"<unknown field {number}>")

    def place(self, number: int, at: int) -> str:
        """``ModelProto.graph (field 7) at byte 19``."""
        return f"{self.what}.{self.field_name(number)} (field {number}) at byte {at}"


def _varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, position after it)."""
    result, shift, start = 0, 0, pos
    while True:
        if pos >= end:
            raise _WireError(f"{what}: the varint at byte {start} runs past the end of its data (truncated)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError(f"{what}: the varint at byte {start} is longer than 10 bytes")


def _signed(value: int) -> int:
    """A varint read as two's-complement int64 (how int32/int64 fields store negative numbers)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(msg: _Msg) -> Iterator[_Field]:
    """Every field of ``msg`` in file order; unknown fields too (callers skip what they ignore)."""
    data, pos, end = msg.data, msg.start, msg.end
    while pos < end:
        at = pos
        key, pos = _varint(data, pos, end, msg.what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError(f"{msg.what}: field number 0 at byte {at} (no valid protobuf field has it)")
        if wire == _VARINT:
            value, after = _varint(data, pos, end, msg.place(number, at))
            yield _Field(number, wire, value, pos, after)
            pos = after
            continue
        if wire == _LENGTH:
            size, pos = _varint(data, pos, end, msg.place(number, at))
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
        else:
            raise _WireError(f"{msg.place(number, at)} has wire type {wire} "
                             f"({_WIRE_NAMES.get(wire, 'undefined')}), which ONNX files never contain")
        if size > end - pos:
            raise _WireError(f"{msg.place(number, at)} declares {size} bytes but only {end - pos} remain (truncated)")
        yield _Field(number, wire, 0, pos, pos + size)
        pos += size


def _expect(msg: _Msg, field: _Field, *wires: int) -> None:
    if field.wire not in wires:
        want = " or ".join(_WIRE_NAMES[w] for w in wires)
        raise _WireError(f"{msg.place(field.number, field.start)} is {_WIRE_NAMES[field.wire]}, expected {want}")


def _int(msg: _Msg, field: _Field) -> int:
    _expect(msg, field, _VARINT)
    return _signed(field.value)


def _text(msg: _Msg, field: _Field) -> str:
    _expect(msg, field, _LENGTH)
    try:
        return msg.data[field.start : field.end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _WireError(f"{msg.place(field.number, field.start)} is not UTF-8 text ({exc.reason})") from None


def _packed_varints(msg: _Msg, field: _Field) -> list[int]:
    """A repeated int field, packed (length-delimited) or not (one varint per field)."""
    if field.wire == _VARINT:
        return [_signed(field.value)]
    _expect(msg, field, _VARINT, _LENGTH)
    values, pos = [], field.start
    while pos < field.end:
        value, pos = _varint(msg.data, pos, field.end, msg.place(field.number, field.start))
        values.append(_signed(value))
    return values


def _packed_floats(msg: _Msg, field: _Field, dtype: str) -> np.ndarray:
    """A repeated float/double field, packed or one value per field; little-endian IEEE."""
    itemsize = np.dtype(dtype).itemsize
    _expect(msg, field, _LENGTH, _FIXED32 if itemsize == 4 else _FIXED64)
    payload = msg.data[field.start : field.end]
    if len(payload) % itemsize:
        raise _WireError(f"{msg.place(field.number, field.start)} holds {len(payload)} bytes, "
                         f"not a whole number of {itemsize}-byte values")
    return np.frombuffer(payload, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# ONNX messages: ModelProto -> GraphProto -> ValueInfoProto / TensorProto


@dataclass(frozen=True)
class _Tensor:
    """A TensorProto's header; its data is kept (as bytes or an array) only for the threshold."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    external: bool
    raw: bytes | None
    typed: dict[int, np.ndarray]  # decoded float_data (4), int32_data (5), double_data (10) that came


@dataclass(frozen=True)
class _Graph:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_count: int
    initializer_count: int
    threshold: _Tensor | None
    sha256: str  # of the nodes and initializers as stored, the threshold initializer left out


@dataclass(frozen=True)
class _Model:
    ir_version: int
    opsets: dict[str, int]
    producer_name: str
    producer_version: str
    graph: _Graph
    metadata: dict[str, str]


def _parse_model(data: bytes) -> _Model:
    msg = _Msg(data, 0, len(data), "ModelProto", "ModelProto")
    ir_version, graph = None, None
    opsets: dict[str, int] = {}
    producer = {2: "", 3: ""}
    metadata: dict[str, str] = {}
    for field in _fields(msg):
        if field.number == 1:
            ir_version = _int(msg, field)
        elif field.number in producer:
            producer[field.number] = _text(msg, field)
        elif field.number == 7:
            graph = _parse_graph(msg.sub(field, "GraphProto"))
        elif field.number == 8:
            domain, version = _parse_opset(msg.sub(field, "OperatorSetIdProto", len(opsets)))
            opsets[domain or "ai.onnx"] = version
        elif field.number == 14:
            key, value = _parse_entry(msg.sub(field, "StringStringEntryProto", len(metadata)))
            metadata[key] = value
    if ir_version is None or graph is None:
        missing = " and ".join(n for n, v in (("ir_version (field 1)", ir_version), ("graph (field 7)", graph))
                               if v is None)  # fmt: skip
        raise _WireError(f"the bytes decode as protobuf but hold no {missing}, which every ONNX model has")
    return _Model(ir_version, opsets, producer[2], producer[3], graph, metadata)


def _parse_opset(msg: _Msg) -> tuple[str, int]:
    domain, version = "", 0
    for field in _fields(msg):
        if field.number == 1:
            domain = _text(msg, field)
        elif field.number == 2:
            version = _int(msg, field)
    return domain, version


def _parse_entry(msg: _Msg) -> tuple[str, str]:
    key, value = "", ""
    for field in _fields(msg):
        if field.number == 1:
            key = _text(msg, field)
        elif field.number == 2:
            value = _text(msg, field)
    return key, value


def _parse_graph(msg: _Msg) -> _Graph:
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    nodes = initializers = 0
    threshold = None
    digest = hashlib.sha256()
    for field in _fields(msg):
        if field.number == 1:
            _expect(msg, field, _LENGTH)  # counted and hashed, not decoded
            nodes += 1
            digest.update(b"node:" + msg.data[field.start : field.end])
        elif field.number == 5:
            tensor = _parse_tensor(msg.sub(field, "TensorProto", initializers))
            initializers += 1
            if tensor.name == THRESHOLD_INITIALIZER:
                threshold = tensor
            else:
                digest.update(b"initializer:" + msg.data[field.start : field.end])
        elif field.number in (11, 12):
            found = inputs if field.number == 11 else outputs
            found.append(_parse_value_info(msg.sub(field, "ValueInfoProto", len(found))))
    return _Graph(tuple(inputs), tuple(outputs), nodes, initializers, threshold, digest.hexdigest())


def _parse_value_info(msg: _Msg) -> TensorInfo:
    name, dtype, shape = "", "undefined", None
    for field in _fields(msg):
        if field.number == 1:
            name = _text(msg, field)
        elif field.number == 2:
            dtype, shape = _parse_type(msg.sub(field, "TypeProto"))
    return TensorInfo(name, dtype, shape)


_OTHER_TYPES = {4: "sequence", 5: "map", 7: "opaque", 9: "optional"}  # TypeProto's oneof, besides tensors


def _parse_type(msg: _Msg) -> tuple[str, Shape | None]:
    dtype, shape = "undefined", None
    for field in _fields(msg):
        if field.number in (1, 8):  # tensor_type, sparse_tensor_type: both {1 elem_type, 2 shape}
            dtype, shape = _parse_tensor_type(msg.sub(field, "TypeProto.Tensor"))
            if field.number == 8:
                dtype = f"sparse_tensor({dtype})"
        elif field.number in _OTHER_TYPES:
            dtype, shape = _OTHER_TYPES[field.number], None
    return dtype, shape


def _parse_tensor_type(msg: _Msg) -> tuple[str, Shape | None]:
    dtype, shape = "undefined", None
    for field in _fields(msg):
        if field.number == 1:
            dtype = elem_type_name(_int(msg, field))
        elif field.number == 2:
            shape = _parse_shape(msg.sub(field, "TensorShapeProto"))
    return dtype, shape


def _parse_shape(msg: _Msg) -> Shape:
    dims: list[int | str | None] = []
    for field in _fields(msg):
        if field.number == 1:
            dims.append(_parse_dim(msg.sub(field, "TensorShapeProto.Dimension", len(dims))))
    return tuple(dims)


def _parse_dim(msg: _Msg) -> int | str | None:
    dim: int | str | None = None  # neither dim_value nor dim_param: a dim of unknown size
    for field in _fields(msg):
        if field.number == 1:
            dim = _int(msg, field)
        elif field.number == 2:
            dim = _text(msg, field)
    return dim


def _parse_tensor(msg: _Msg) -> _Tensor:
    """A TensorProto's name, dims, type and data location; its data is kept only for the threshold."""
    name, data_type, external = "", 0, False
    dims: list[int] = []
    spans: dict[int, _Field] = {}  # field number -> data field, decoded below if this is the threshold
    for field in _fields(msg):
        if field.number == 1:
            dims += _packed_varints(msg, field)
        elif field.number == 2:
            data_type = _int(msg, field)
        elif field.number == 8:
            name = _text(msg, field)
        elif field.number == 14:
            external = _int(msg, field) == 1  # DataLocation.EXTERNAL
        elif field.number == 9:
            _expect(msg, field, _LENGTH)
            spans[9] = field
        elif field.number in (4, 5, 10):
            spans.setdefault(field.number, field)  # the threshold is a scalar: one value field at most
    if name != THRESHOLD_INITIALIZER:
        return _Tensor(name, tuple(dims), data_type, external, None, {})
    raw = msg.data[spans[9].start : spans[9].end] if 9 in spans else None
    return _Tensor(name, tuple(dims), data_type, external, raw, _typed_data(msg, spans))


def _typed_data(msg: _Msg, spans: dict[int, _Field]) -> dict[int, np.ndarray]:
    typed = {n: _packed_floats(msg, spans[n], dtype) for n, dtype in ((4, "<f4"), (10, "<f8")) if n in spans}
    if 5 in spans:  # int32_data: float16 values as their 16-bit patterns
        typed[5] = np.asarray(_packed_varints(msg, spans[5]), dtype=np.int64)
    return typed


# ---------------------------------------------------------------------------------------------
# The threshold and the graph-vs-contract checks


class _Threshold(NamedTuple):
    value: float | None
    dtype: str | None
    problem: str | None


_THRESHOLD_DTYPES = {1: "<f4", 10: "<f2", 11: "<f8"}  # FLOAT, FLOAT16, DOUBLE
_TYPED_FIELD = {1: 4, 10: 5, 11: 10}  # where each keeps its values without raw_data: float/int32/double_data


def _threshold_of(tensor: _Tensor | None) -> _Threshold:
    """Decode the scalar ``defer_threshold`` (float32/float16/float64; raw_data or typed fields)."""
    if tensor is None:
        return _Threshold(None, None, f"the graph has no initializer named {THRESHOLD_INITIALIZER!r}")
    dtype = elem_type_name(tensor.data_type)
    if tensor.data_type not in _THRESHOLD_DTYPES:
        return _Threshold(None, dtype, f"{THRESHOLD_INITIALIZER} is {dtype}, expected float32 or float16 (or float64)")
    if tensor.external:
        return _Threshold(None, dtype, f"{THRESHOLD_INITIALIZER} is stored outside the file (external data)")
    if math.prod(tensor.dims) != 1:
        return _Threshold(None, dtype, f"{THRESHOLD_INITIALIZER} has shape {list(tensor.dims)}, expected a scalar")
    values = _threshold_values(tensor, np.dtype(_THRESHOLD_DTYPES[tensor.data_type]))
    if values is None or values.size != 1:
        count = "no" if values is None else values.size
        return _Threshold(None, dtype, f"{THRESHOLD_INITIALIZER} holds {count} values, expected 1")
    return _Threshold(float(values[0]), dtype, None)


def _threshold_values(tensor: _Tensor, dtype: np.dtype) -> np.ndarray | None:
    """The values, from raw_data or else from the typed field of this data_type (None: not there)."""
    if tensor.raw is not None:
        if len(tensor.raw) % dtype.itemsize:
            return None
        return np.frombuffer(tensor.raw, dtype=dtype)
    values = tensor.typed.get(_TYPED_FIELD[tensor.data_type])
    if values is not None and tensor.data_type == 10:  # float16 bit patterns in int32_data
        return (values & 0xFFFF).astype(np.uint16).view(np.float16)
    return values


def _problems(contract: Contract, graph: _Graph, threshold: _Threshold) -> list[str]:
    """Where the graph and its (valid) contract disagree."""
    spec = contract.input
    want_inputs = [TensorInfo(spec.name, spec.dtype, spec.shape)]
    want_outputs = [TensorInfo(n, _OUTPUT_DTYPES[n], (_BATCH, contract.num_classes) if n == "probs" else (_BATCH,))
                    for n in OUTPUT_NAMES]  # fmt: skip
    problems = _interface_problems("input", graph.inputs, want_inputs)
    problems += _interface_problems("output", graph.outputs, want_outputs)
    problems += _threshold_problems(contract, threshold)
    recorded = contract.meta.get("graph_sha256")
    if recorded is not None and recorded != graph.sha256:
        problems.append(f"the graph's nodes and weights (sha256 {graph.sha256[:12]}) are not the ones this "
                        f"contract was exported with ({str(recorded)[:12]}): the contract was copied onto another "
                        "model, or the graph was edited. Re-export the model and calibrate it with its own run")
    return problems


def _interface_problems(kind: str, got: tuple[TensorInfo, ...], want: list[TensorInfo]) -> list[str]:
    fix = "; re-export the model with `metaerr-edge export`"
    names, want_names = [t.name for t in got], [t.name for t in want]
    if names != want_names:
        source = "contract.input.name" if kind == "input" else "metaerr_edge.contract.spec.OUTPUT_NAMES"
        return [f"graph {kind} names are {names}, the contract expects {want_names} ({source}){fix}"]
    problems = []
    for g, w in zip(got, want):
        if g.dtype != w.dtype:
            problems.append(f"graph {kind} {g.name!r} is {g.dtype}, the contract expects {w.dtype}{fix}")
        if g.shape is not None and not _shape_matches(g.shape, w.shape or ()):
            problems.append(f"graph {kind} {g.name!r} has shape {format_shape(g.shape)}, "
                            f"the contract expects {format_shape(w.shape)}{fix}")
    return problems


def _shape_matches(got: Shape, want: Shape) -> bool:
    """Same rank and dims; a dim of unknown size (None) in the file matches anything."""
    return len(got) == len(want) and all(g is None or g == w for g, w in zip(got, want))


def _threshold_problems(contract: Contract, threshold: _Threshold) -> list[str]:
    if threshold.problem is not None:
        return [f"{threshold.problem}; the contract says {contract.threshold.value:.6g}. Re-export the "
                "model with `metaerr-edge export`"]
    if threshold.value is None or threshold.dtype is None:  # not reached: no problem means a value
        return []
    # set_threshold stores the contract value in the initializer's own dtype (float16 after an FP16 cast).
    expected = float(np.asarray(contract.threshold.value, dtype=threshold.dtype))
    if not abs(threshold.value - expected) <= _THRESHOLD_TOLERANCE:  # also catches NaN
        return [f"the graph's {THRESHOLD_INITIALIZER} is {threshold.value:.6g} but the contract's "
                f"threshold.value is {contract.threshold.value:.6g}: the graph was edited outside metaerr-edge "
                "(`metaerr-edge calibrate` rewrites both together). Re-export the model and calibrate it again"]
    return []


def format_shape(shape: Shape | None) -> str:
    """A shape for people: ``?`` for a dim of unknown size, ``unknown`` when none is declared.

    Example:
        >>> format_shape(("batch", 1, 28, None)), format_shape(None)
        ('[batch, 1, 28, ?]', 'unknown')
    """
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
