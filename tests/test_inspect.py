"""``metaerr-edge inspect``: the torch-free, onnx-free model file reader against ``onnx.load``.

Real fused models (tiny, legacy exporter: fast) are exported once per module; the reader's view of
each must equal what onnx reports. Broken files give one-line ContractErrors (exit 2), never a
traceback; files that are valid ONNX but no (valid) metaerr-edge model exit 1.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from metaerr_edge.errors import ContractError
from metaerr_edge.contract.spec import CONTRACT_KEY, THRESHOLD_INITIALIZER, Contract, InputSpec, ThresholdSpec
from metaerr_edge.fuse.export import export_onnx
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.fuse.modelfile import set_threshold
from metaerr_edge.contract.reader import INFO_KEYS, ModelInfo, model_info, read_contract

pytestmark = [  # the legacy exporter (dynamo=False) is used on purpose: ten times faster
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
]

REPO = Path(__file__).resolve().parents[1]
K = 12  # more classes than the text report lists
THRESHOLD = 0.4


class TinyBase(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyMeta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(K, 1)

    def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(probs))


CASES = {"gray-nchw-float32": (1, "NCHW"), "rgb-nhwc-uint8": (3, "NHWC")}


def export_tiny(path: Path, channels: int, layout: str) -> Path:
    torch.manual_seed(0)
    mean, std = (0.5,) * channels, (0.25,) * channels
    fused = FusedModel(TinyBase(channels), TinyMeta(), Preprocess(mean, std, layout), threshold=THRESHOLD).eval()
    spec = InputSpec(layout=layout, dtype="uint8" if layout == "NHWC" else "float32", channels=channels,
                     height=8, width=8, value_range=(0.0, 255.0) if layout == "NHWC" else (0.0, 1.0),
                     channel_order="RGB" if channels == 3 else "GRAY", mean=mean, std=std)
    contract = Contract(input=spec, classes=tuple(f"class_{i}" for i in range(K)),
                        threshold=ThresholdSpec(THRESHOLD, "coverage", target_coverage=0.9, calibration_n=200),
                        base={"arch": "tiny"}, meta={"mode": "probs"}, metrics={"metaerr.auroc": 0.875})
    return export_onnx(fused, contract, path, dynamo=False).path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inspect")
    return {name: export_tiny(folder / f"{name}.onnx", *case) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def model(models: dict[str, Path]) -> Path:
    return models["gray-nchw-float32"]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def inspect_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``metaerr-edge inspect ARGS`` through the real ``cli.main`` (exit codes, error lines)."""
    from metaerr_edge import cli

    assert cli.COMMANDS["inspect"] == "inspect_model"

    def call(*argv: object) -> CliResult:
        capsys.readouterr()
        rc = cli.main(["inspect", *map(str, argv)])
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)

    return call


# ---------------------------------------------------------------------------------------------
# The reader against onnx.load


def _onnx_dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    which = d.WhichOneof("value")
    return None if which is None else getattr(d, which)


def _onnx_view(v: onnx.ValueInfoProto) -> tuple[str, str, tuple | None]:
    t = v.type.tensor_type
    shape = tuple(_onnx_dim(d) for d in t.shape.dim) if t.HasField("shape") else None
    return v.name, helper.tensor_dtype_to_np_dtype(t.elem_type).name, shape


def assert_matches_onnx(info: ModelInfo, path: Path) -> onnx.ModelProto:
    proto = onnx.load(str(path))
    data = path.read_bytes()
    assert (info.path, info.size_bytes, info.sha256) == (str(path), len(data), hashlib.sha256(data).hexdigest())
    assert info.ir_version == proto.ir_version
    assert info.opsets == {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    assert (info.producer_name, info.producer_version) == (proto.producer_name, proto.producer_version)
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [_onnx_view(v) for v in proto.graph.input]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [_onnx_view(v) for v in proto.graph.output]
    assert info.node_count == len(proto.graph.node)
    assert info.initializer_count == len(proto.graph.initializer)
    assert info.metadata_keys == tuple(p.key for p in proto.metadata_props)
    thr = [t for t in proto.graph.initializer if t.name == THRESHOLD_INITIALIZER]
    assert info.defer_threshold == (float(numpy_helper.to_array(thr[0])) if thr else None)
    return proto


@pytest.mark.parametrize("case", list(CASES))
def test_reader_matches_onnx_load(models: dict[str, Path], case: str) -> None:
    path = models[case]
    info = model_info(path)
    assert_matches_onnx(info, path)
    channels, layout = CASES[case]
    want = ("batch", channels, 8, 8) if layout == "NCHW" else ("batch", 8, 8, channels)
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [
        ("image", "float32" if layout == "NCHW" else "uint8", want)]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [
        ("label", "int64", ("batch",)), ("probs", "float32", ("batch", K)),
        ("failure_score", "float32", ("batch",)), ("defer", "bool", ("batch",))]
    assert info.opsets == {"ai.onnx": 18} and info.producer_name == "pytorch" and info.node_count > 5
    assert info.contract == read_contract(path) and info.contract_error is None
    assert info.defer_threshold == pytest.approx(THRESHOLD) and info.defer_threshold_dtype == "float32"
    assert info.problems == () and info.status == "ok" and info.ok


def test_text_report_of_a_valid_model(model: Path, inspect_cli: Callable[..., CliResult]) -> None:
    res = inspect_cli(model)
    assert res.rc == 0 and res.err == ""
    out = res.out
    size = model.stat().st_size
    assert f"{size:,} bytes ({size / 1024:.1f} KiB)" in out
    assert hashlib.sha256(model.read_bytes()).hexdigest()[:16] in out
    assert "ir_version 8, opsets ai.onnx 18, producer pytorch" in out
    assert "image  " in out and "float32  [batch, 1, 8, 8]" in out and "[batch, 12]" in out
    assert "12: class_0, class_1" in out and "class_9, ... (+2 more)" in out and "class_10" not in out
    assert "NCHW float32 1x8x8, values in [0, 1], GRAY, mean [0.5] std [0.25]" in out
    assert "0.4, method coverage, target coverage 0.9, calibration n 200" in out
    assert "graph defer_threshold 0.4 (float32)" in out
    assert "higher = more likely wrong; defer = failure_score > threshold" in out
    assert "arch tiny" in out and "mode probs" in out and "metaerr.auroc 0.875" in out
    assert "exporter torchscript" in out and "OK: a valid metaerr-edge model" in out
    assert len(out.splitlines()) < 30  # a summary, not a dump


def test_json_report(models: dict[str, Path], inspect_cli: Callable[..., CliResult]) -> None:
    res = inspect_cli(models["rgb-nhwc-uint8"], "--json")
    assert res.rc == 0
    data = json.loads(res.out)
    assert tuple(data) == INFO_KEYS
    assert data["status"] == "ok" and data["problems"] == [] and data["contract_error"] is None
    assert data["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["batch", 8, 8, 3]}]
    assert data["outputs"][1] == {"name": "probs", "dtype": "float32", "shape": ["batch", K]}
    assert data["opsets"] == {"ai.onnx": 18} and data["defer_threshold"] == pytest.approx(THRESHOLD)
    assert Contract.from_json(json.dumps(data["contract"])) == read_contract(models["rgb-nhwc-uint8"])
    assert data == model_info(models["rgb-nhwc-uint8"]).to_dict()


def test_rewritten_threshold_is_read_back(model: Path, tmp_path: Path,
                                          inspect_cli: Callable[..., CliResult]) -> None:
    out = tmp_path / "calibrated.onnx"
    spec = ThresholdSpec(0.27, "risk", target_risk=0.05, delta=0.1, calibration_n=500, achieved_coverage=0.81,
                         achieved_risk=0.04, risk_upper_bound=0.049)
    set_threshold(model, spec, out_path=out)
    info = model_info(out)
    assert_matches_onnx(info, out)
    assert info.defer_threshold == pytest.approx(0.27) and info.contract.threshold == spec and info.ok
    res = inspect_cli(out)
    assert res.rc == 0
    assert ("0.27, method risk, target risk 0.05, delta 0.1, calibration n 500, achieved coverage 0.81, "
            "achieved risk 0.04, risk upper bound 0.049") in res.out
    assert "graph defer_threshold 0.27 (float32)" in res.out


# ---------------------------------------------------------------------------------------------
# Valid ONNX, but not a (valid, consistent) metaerr-edge model: exit 1


def _edit(src: Path, dst: Path, change: Callable[[onnx.ModelProto], None]) -> Path:
    proto = onnx.load(str(src))
    change(proto)
    onnx.save(proto, str(dst))
    return dst


def _set_graph_threshold(value: float) -> Callable[[onnx.ModelProto], None]:
    def change(proto: onnx.ModelProto) -> None:
        (thr,) = [t for t in proto.graph.initializer if t.name == THRESHOLD_INITIALIZER]
        thr.CopyFrom(numpy_helper.from_array(np.array(value, dtype=np.float32), THRESHOLD_INITIALIZER))
    return change


def _rename_defer(proto: onnx.ModelProto) -> None:
    for node in proto.graph.node:
        node.output[:] = ["decision" if o == "defer" else o for o in node.output]
    proto.graph.output[3].name = "decision"


def _set_contract_text(text: str) -> Callable[[onnx.ModelProto], None]:
    def change(proto: onnx.ModelProto) -> None:
        (entry,) = [p for p in proto.metadata_props if p.key == CONTRACT_KEY]
        entry.value = text
    return change


def test_tampered_graph_threshold_is_a_problem(model: Path, tmp_path: Path,
                                               inspect_cli: Callable[..., CliResult]) -> None:
    path = _edit(model, tmp_path / "tampered.onnx", _set_graph_threshold(0.9))
    info = model_info(path)
    assert info.defer_threshold == pytest.approx(0.9) and info.contract.threshold.value == THRESHOLD
    (problem,) = info.problems
    assert "defer_threshold is 0.9" in problem and "threshold.value is 0.4" in problem and "calibrate" in problem
    assert info.status == "problems" and not info.ok
    res = inspect_cli(path)
    assert res.rc == 1 and "1 PROBLEM: the graph and its contract disagree" in res.out
    assert "- the graph's defer_threshold is 0.9" in res.out
    res = inspect_cli(path, "--json")
    assert res.rc == 1 and json.loads(res.out)["status"] == "problems"


def test_float16_threshold_is_compared_in_float16(model: Path, tmp_path: Path) -> None:
    """After an FP16 cast the graph holds float16(contract value): equal, though 1e-4 away in float64."""
    def to_float16(value: float) -> Callable[[onnx.ModelProto], None]:
        def change(proto: onnx.ModelProto) -> None:
            (thr,) = [t for t in proto.graph.initializer if t.name == THRESHOLD_INITIALIZER]
            thr.CopyFrom(numpy_helper.from_array(np.array(value, dtype=np.float16), THRESHOLD_INITIALIZER))
        return change

    info = model_info(_edit(model, tmp_path / "fp16.onnx", to_float16(THRESHOLD)))
    assert info.defer_threshold_dtype == "float16" and abs(info.defer_threshold - THRESHOLD) > 1e-6
    assert info.defer_threshold == float(np.float16(THRESHOLD)) and info.problems == ()
    info = model_info(_edit(model, tmp_path / "fp16-off.onnx", to_float16(0.41)))
    assert len(info.problems) == 1 and "defer_threshold is 0.4099" in info.problems[0]


def test_renamed_output_is_a_problem(model: Path, tmp_path: Path) -> None:
    info = model_info(_edit(model, tmp_path / "renamed.onnx", _rename_defer))
    names, edited = info.problems  # renaming an output also edits a node: the graph is not the exported one
    assert "output names are ['label', 'probs', 'failure_score', 'decision']" in names and "'defer'" in names
    assert "not the ones this contract was exported with" in edited


def test_invalid_contract_is_reported(model: Path, tmp_path: Path, inspect_cli: Callable[..., CliResult]) -> None:
    path = _edit(model, tmp_path / "bad-json.onnx", _set_contract_text("{not json"))
    info = model_info(path)
    assert info.contract is None and "not valid JSON" in info.contract_error and info.status == "invalid_contract"
    res = inspect_cli(path)
    assert res.rc == 1 and "INVALID CONTRACT" in res.out and "not valid JSON" in res.out
    assert "ir_version 8" in res.out  # the ONNX part is still shown


def plain_model(path: Path) -> Path:
    """An ONNX model with no contract: symbolic, fixed and unknown dims, a second opset domain."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, None])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, None])
    mask = helper.make_tensor_value_info("mask", onnx.TensorProto.BOOL, ["N", 3, None])
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]),
                               helper.make_node("Greater", ["x", "zero"], ["mask"])],
                              "plain", [x], [y, mask], [zero])
    proto = helper.make_model(graph, producer_name="handmade", producer_version="1.0",
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def test_plain_onnx_without_contract(tmp_path: Path, inspect_cli: Callable[..., CliResult]) -> None:
    path = plain_model(tmp_path / "plain.onnx")
    info = model_info(path)
    assert_matches_onnx(info, path)
    assert info.inputs[0].shape == ("N", 3, None) and info.outputs[1].dtype == "bool"
    assert info.opsets == {"ai.onnx": 17, "ai.onnx.ml": 3} and info.producer_name == "handmade"
    assert info.contract is None and info.contract_error is None and info.problems == ()
    assert info.status == "no_contract" and not info.ok
    res = inspect_cli(path)
    assert res.rc == 1 and res.err == ""
    assert "opsets ai.onnx 17, ai.onnx.ml 3, producer handmade 1.0, 2 nodes" in res.out
    assert "[N, 3, ?]" in res.out and "bool" in res.out
    assert "carries no metaerr-edge contract" in res.out and "metaerr-edge export" in res.out
    assert "classes" not in res.out


@pytest.mark.parametrize("storage", ["float32-raw", "float32-float_data", "float16-raw", "float16-int32_data",
                                     "float64-double_data"])
def test_threshold_dtypes_and_storage(tmp_path: Path, storage: str) -> None:
    dtype, _, field = storage.partition("-")
    elem = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
            "float64": onnx.TensorProto.DOUBLE}[dtype]
    value = np.array(0.3141, dtype=dtype)
    raw = field == "raw"
    tensor = helper.make_tensor(THRESHOLD_INITIALIZER, elem, [], value.tobytes() if raw else [value], raw=raw)
    assert tensor.HasField("raw_data") == raw
    graph = helper.make_graph([helper.make_node("Greater", ["s", THRESHOLD_INITIALIZER], ["d"])], "g",
                              [helper.make_tensor_value_info("s", elem, ["batch"])],
                              [helper.make_tensor_value_info("d", onnx.TensorProto.BOOL, None)], [tensor])
    path = tmp_path / "thr.onnx"
    onnx.save(helper.make_model(graph), str(path))
    info = model_info(path)
    assert info.defer_threshold == float(numpy_helper.to_array(tensor)) == float(value)
    assert info.defer_threshold_dtype == dtype and info.outputs[0].shape is None  # no shape declared
    assert_matches_onnx(info, path)


def test_threshold_in_the_wrong_field_has_no_value(tmp_path: Path) -> None:
    tensor = onnx.TensorProto(name=THRESHOLD_INITIALIZER, data_type=onnx.TensorProto.FLOAT16, float_data=[0.5])
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(THRESHOLD_INITIALIZER,
                                                                          onnx.TensorProto.FLOAT16, [])], [tensor])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph), str(path))
    info = model_info(path)
    assert info.defer_threshold is None and info.defer_threshold_dtype == "float16" and info.initializer_count == 1


# ---------------------------------------------------------------------------------------------
# Unreadable files: ContractError, exit 2, one line on stderr


def _write(data: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    return lambda src, dst: dst.write_bytes(data(src.read_bytes()))


BROKEN = {
    "missing": (lambda src, dst: None, "no such file"),
    "folder": (lambda src, dst: dst.mkdir(), "is a folder"),
    "empty": (_write(lambda b: b""), "the file is empty"),
    "random-bytes": (_write(lambda b: np.random.default_rng(0).bytes(4096)), "not a readable ONNX file"),
    "text": (_write(lambda b: b"this is not an onnx model\n" * 20), "wire type 4"),
    "truncated-half": (_write(lambda b: b[: len(b) // 2]), r"declares \d+ bytes but only \d+ remain \(truncated\)"),
    "protobuf-not-onnx": (_write(lambda b: b"\x08\x07"), r"no graph \(field 7\)"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_unreadable_files_are_one_line_errors(model: Path, tmp_path: Path, case: str,
                                              inspect_cli: Callable[..., CliResult]) -> None:
    make, message = BROKEN[case]
    target = tmp_path / "model.onnx"
    make(model, target)
    with pytest.raises(ContractError, match=message) as caught:
        model_info(target)
    assert str(target) in str(caught.value)
    if case not in ("missing", "folder"):
        assert "metaerr-edge export" in str(caught.value) and "\n" not in str(caught.value)
    for argv in ([target], [target, "--json"]):
        res = inspect_cli(*argv)
        assert res.rc == 2 and res.out == ""
        (line,) = res.err.splitlines()
        assert line.startswith("metaerr-edge inspect: error: ") and str(target) in line and "Traceback" not in line


def test_every_truncation_and_corruption_is_a_report_or_a_contract_error(model: Path, tmp_path: Path) -> None:
    data = model.read_bytes()
    rng = np.random.default_rng(1)
    cuts = sorted({*rng.integers(1, len(data), 150).tolist(), 1, 2, len(data) - 1})
    variants = [data[:n] for n in cuts]
    for pos in rng.integers(0, len(data), 150).tolist():
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(flipped))
    target = tmp_path / "damaged.onnx"
    outcomes = {"report": 0, "error": 0}
    for variant in variants:
        target.write_bytes(variant)
        try:
            json.dumps(model_info(target).to_dict(), allow_nan=False)
            outcomes["report"] += 1
        except ContractError as exc:
            assert str(target) in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] >= 100 and outcomes["report"] >= 1


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = number << 3 | wire
    assert key < 128 and (wire != 2 or len(payload) < 128)
    return bytes([key]) + (bytes([len(payload)]) if wire == 2 else b"") + payload


def test_unknown_fields_are_skipped_and_groups_are_corrupt(model: Path, tmp_path: Path) -> None:
    data = model.read_bytes()
    extra = (_field(10, 0, b"\x96\x01") + _field(11, 1, b"\x00" * 8) + _field(12, 2, b"hello")
             + _field(13, 5, b"\x00" * 4))  # ModelProto fields 10-13 are unused: unknown to every reader
    path = tmp_path / "extra.onnx"
    path.write_bytes(data + extra)
    onnx.load(str(path))  # valid protobuf for onnx too
    info, base = model_info(path), model_info(model)
    assert_matches_onnx(info, path)
    assert {k: v for k, v in vars(info).items() if k not in ("path", "size_bytes", "sha256")} == {
        k: v for k, v in vars(base).items() if k not in ("path", "size_bytes", "sha256")}
    path.write_bytes(data + _field(13, 3, b""))
    with pytest.raises(ContractError, match=r"wire type 3 \(start-group\)"):
        model_info(path)


# ---------------------------------------------------------------------------------------------
# The device install: no torch, torchvision, onnx or scikit-learn


HEAVY = ("torch", "torchvision", "onnx", "sklearn")
NO_HEAVY_IMPORTS = """
import argparse, importlib.abc, json, sys
HEAVY = {heavy!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{{name}} is not installed on the device")
        return None

sys.meta_path.insert(0, Block())
import metaerr_edge.contract.reader, metaerr_edge.commands.inspect_model
info = metaerr_edge.contract.reader.model_info(sys.argv[1])
assert info.ok, info
rc = [metaerr_edge.commands.inspect_model.run(argparse.Namespace(model=sys.argv[1], json=j)) for j in (False, True)]
print(json.dumps({{"rc": rc, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}}))
"""


def test_no_torch_onnx_or_sklearn_needed(model: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS.format(heavy=HEAVY), str(model)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": [0, 0], "loaded": []}
