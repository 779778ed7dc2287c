"""One ONNX graph: export, contract, parity, threshold rewrite, failure modes, Triton repository.

Each architecture is exported once per module (module-scoped fixture); tiny random-init models.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from metaerr_edge.errors import ConfigError, ContractError
from metaerr_edge.contract.reader import model_info
from metaerr_edge.contract.spec import (
    CONTRACT_KEY,
    OUTPUT_NAMES,
    THRESHOLD_INITIALIZER,
    Contract,
    InputSpec,
    ThresholdSpec,
    random_inputs,
)
from metaerr_edge.fuse.export import (
    ExportReport,
    export_onnx,
    export_run,
    load_checked,
    set_threshold,
)
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.fuse.triton_repo import write_triton_repository
from metaerr_edge.fuse.verify import verify_parity, verify_run
from metaerr_edge.contract import read_contract

pytestmark = [  # the legacy exporter (dynamo=False) is exercised on purpose
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
]
ort = pytest.importorskip("onnxruntime")
torchvision = pytest.importorskip("torchvision")

K = 10


class SmallCNN(nn.Module):
    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.head = nn.Linear(8 * (size // 2) ** 2, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class TinyMeta(nn.Module):
    """sigmoid(linear(sorted probs) + linear(conv-pooled image feature))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.probs_head = nn.Linear(K, 1)
        self.image_head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        image = torch.relu(self.conv(x)).mean(dim=(2, 3))
        ranked = torch.sort(probs, dim=1, descending=True).values
        return torch.sigmoid(self.probs_head(ranked) + self.image_head(image))


CASES = {  # name: (base, channels, size, layout, dynamo)
    "cnn-gray-nchw": ("cnn", 1, 28, "NCHW", True),
    "resnet18-rgb-nchw": ("resnet18", 3, 32, "NCHW", True),
    "mobilenet_v3_small-rgb-nchw": ("mobilenet_v3_small", 3, 32, "NCHW", True),
    "cnn-rgb-nhwc-uint8": ("cnn", 3, 32, "NHWC", True),
    "cnn-gray-nchw-torchscript": ("cnn", 1, 28, "NCHW", False),
}


def make_model(base: str, channels: int, size: int, layout: str, seed: int = 0) -> tuple[FusedModel, Contract]:
    torch.manual_seed(seed)
    net = {"cnn": lambda: SmallCNN(channels, size),
           "resnet18": lambda: torchvision.models.resnet18(num_classes=K),
           "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=K)}[base]()
    mean, std = (0.5,) * channels, (0.25,) * channels
    fused = FusedModel(net, TinyMeta(channels), Preprocess(mean, std, layout)).eval()
    spec = InputSpec(layout=layout, dtype="uint8" if layout == "NHWC" else "float32", channels=channels,
                     height=size, width=size, channel_order="RGB" if channels == 3 else "GRAY",
                     value_range=(0.0, 255.0) if layout == "NHWC" else (0.0, 1.0), mean=mean, std=std)
    contract = Contract(input=spec, classes=tuple(f"class_{i}" for i in range(K)), base={"arch": base})
    # Threshold at the median score of a calibration batch, so both decisions occur.
    with torch.no_grad():
        scores = fused(torch.from_numpy(random_inputs(contract.input, 64, seed=123)))[2].numpy()
    value = float(np.float32(np.median(scores)))
    fused.defer_threshold.fill_(value)
    return fused, contract.with_threshold(ThresholdSpec(value=value, method="coverage", target_coverage=0.5))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> object:
    """Batch-1 eager torch with 2 OpenMP threads on a busy 2-core box is ~30x slower than with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Exported:
    name: str
    fused: FusedModel
    contract: Contract
    report: ExportReport


@pytest.fixture(scope="module", params=list(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    base, channels, size, layout, dynamo = CASES[request.param]
    fused, contract = make_model(base, channels, size, layout)
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    return Exported(request.param, fused, contract, export_onnx(fused, contract, path, dynamo=dynamo))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    fused, contract = make_model("cnn", 1, 28, "NCHW")
    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    return Exported("cnn", fused, contract, export_onnx(fused, contract, path, dynamo=False))


def test_graph_passes_checker_and_has_the_contract_interface(exported: Exported) -> None:
    path, spec = exported.report.path, exported.contract.input
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    (inp,) = model.graph.input
    assert inp.name == spec.name and dims(inp) == list(spec.shape)
    want = onnx.TensorProto.UINT8 if spec.layout == "NHWC" else onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.elem_type == want
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [
        onnx.TensorProto.INT64, onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL]
    assert [dims(o) for o in model.graph.output] == [["batch"], ["batch", K], ["batch"], ["batch"]]
    (thr,) = [t for t in model.graph.initializer if t.name == THRESHOLD_INITIALIZER]
    assert onnx.numpy_helper.to_array(thr).shape == ()
    assert float(onnx.numpy_helper.to_array(thr)) == pytest.approx(exported.contract.threshold.value)
    (greater,) = [n for n in model.graph.node if "defer" in n.output]
    assert list(greater.input)[1] == THRESHOLD_INITIALIZER
    assert all(not n.metadata_props for n in model.graph.node)  # no stack traces with local paths


def test_dynamic_batch_parity_with_torch(exported: Exported) -> None:
    images = random_inputs(exported.contract.input, 70, seed=1)
    report = verify_parity(exported.report.path, exported.fused, images, atol=1e-5, batch_sizes=(1, 7, 64))
    assert report.passed, report.to_markdown()
    assert [b.batch_size for b in report.per_batch] == [1, 7, 64] and report.n == 70
    assert report.label_mismatches == 0 and report.decision_mismatches == 0
    assert report.max_abs_score_diff <= 1e-5 and report.max_abs_probs_diff <= 1e-5
    session = ort.InferenceSession(str(exported.report.path), providers=["CPUExecutionProvider"])
    label, probs, score, defer = session.run(None, {exported.contract.input.name: images[:7]})
    assert (label.dtype, probs.dtype, score.dtype, defer.dtype) == (np.int64, np.float32, np.float32, np.bool_)
    assert label.shape == score.shape == defer.shape == (7,) and probs.shape == (7, K)
    with torch.no_grad():
        all_defer = exported.fused(torch.from_numpy(images))[3].numpy()
    assert 0 < all_defer.sum() < len(all_defer)  # both decisions exercised


def test_contract_round_trips_with_versions(exported: Exported) -> None:
    report = exported.report
    read = read_contract(report.path)
    assert read == report.contract
    assert read == replace(exported.contract, versions=read.versions, meta={**exported.contract.meta,
                                                                           "graph_sha256": read.meta["graph_sha256"]})
    assert read.meta["graph_sha256"] == model_info(report.path).graph_sha256  # the graph it was written for
    assert {"metaerr_edge", "torch", "onnx", "opset", "exporter"} <= set(read.versions)
    assert read.versions["opset"] == "18" and read.versions["exporter"] == report.exporter
    assert report.exporter == ("dynamo" if CASES[exported.name][4] else "torchscript")
    data = report.path.read_bytes()
    assert report.size_bytes == len(data) and report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.opset == 18 and report.seconds > 0 and not report.simplified
    assert json.loads(json.dumps(report.to_dict()))["sha256"] == report.sha256
    meta = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert Contract.from_json(meta.custom_metadata_map[CONTRACT_KEY]) == read  # runtime-only read


def test_set_threshold_changes_decisions_and_contract(cnn: Exported, tmp_path: Path) -> None:
    images = random_inputs(cnn.contract.input, 32, seed=2)
    out = tmp_path / "rethresholded.onnx"
    spec = ThresholdSpec(value=0.0, method="risk", target_risk=0.05, delta=0.1, calibration_n=500)
    contract = set_threshold(cnn.report.path, spec, out_path=out)
    assert read_contract(out) == contract and read_contract(out).threshold == spec
    assert read_contract(cnn.report.path) == cnn.report.contract  # source left untouched
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": images})  # noqa: E731
    assert run(out)[3].all()
    set_threshold(out, ThresholdSpec(value=1.0))
    assert not run(out)[3].any()
    np.testing.assert_array_equal(run(out)[2], run(cnn.report.path)[2])
    # A threshold right at one sample's score is a boundary case, reported but not failed.
    with torch.no_grad():
        first = float(cnn.fused(torch.from_numpy(images[:1]))[2][0])
    set_threshold(out, ThresholdSpec(value=first))
    fused, _ = make_model("cnn", 1, 28, "NCHW")
    fused.defer_threshold.fill_(first)
    report = verify_parity(out, fused, images, batch_sizes=(8,))
    assert report.passed and report.boundary_cases >= 1
    with pytest.raises(ContractError, match=r"threshold.value is 1.5, expected a number in \[0, 1\]"):
        ThresholdSpec(value=1.5)  # refused where it is built, before any file is touched


def test_simplify_keeps_the_threshold_initializer(tmp_path: Path) -> None:
    fused, contract = make_model("cnn", 1, 28, "NCHW")
    report = export_onnx(fused, contract, tmp_path / "slim.onnx", dynamo=False, simplify=True)
    assert report.simplified and "onnxslim" in read_contract(report.path).versions
    assert THRESHOLD_INITIALIZER in {t.name for t in load_checked(report.path).graph.initializer}
    assert verify_parity(report.path, fused, random_inputs(contract.input, 16, seed=3), batch_sizes=(16,)).passed


@pytest.mark.parametrize("shape", ["shared-initializer", "constant-node"])
def test_threshold_is_pinned_whatever_the_exporter_did(cnn: Exported, shape: str) -> None:
    from metaerr_edge.fuse.export import _pin_threshold

    model = onnx.load(str(cnn.report.path))
    (thr,) = [t for t in model.graph.initializer if t.name == THRESHOLD_INITIALIZER]
    value = onnx.numpy_helper.to_array(thr)
    model.graph.initializer.remove(thr)
    (greater,) = [n for n in model.graph.node if "defer" in n.output]
    greater.input[1] = "exported_name"
    if shape == "shared-initializer":  # e.g. deduplicated with an equal constant used elsewhere
        model.graph.initializer.append(onnx.numpy_helper.from_array(value, "exported_name"))
        model.graph.node.append(onnx.helper.make_node("Identity", ["exported_name"], ["other_use"]))
    else:
        model.graph.node.insert(0, onnx.helper.make_node(
            "Constant", [], ["exported_name"], value=onnx.numpy_helper.from_array(value)))
    _pin_threshold(model, float(value))
    assert list(greater.input)[1] == THRESHOLD_INITIALIZER
    inits = {t.name for t in model.graph.initializer}
    assert THRESHOLD_INITIALIZER in inits and ("exported_name" in inits) == (shape == "shared-initializer")
    assert not any("exported_name" in n.output for n in model.graph.node if n.op_type == "Constant")
    with pytest.raises(ContractError, match="holds"):
        _pin_threshold(model, float(value) + 0.1)


def _strip_contract(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    del model.metadata_props[:]
    onnx.save(model, str(dst))


def _swap_contract(src: Path, dst: Path, text: str) -> None:
    model = onnx.load(str(src))
    (entry,) = [p for p in model.metadata_props if p.key == CONTRACT_KEY]
    entry.value = text
    onnx.save(model, str(dst))


BROKEN = {
    "missing": (lambda src, dst: None, "no such file"),
    "empty": (lambda src, dst: dst.write_bytes(b""), "empty"),
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:-100]), "truncated or corrupt"),
    "corrupt": (lambda src, dst: dst.write_bytes(b"this is not an onnx model\n" * 20), "truncated or corrupt"),
    "no-contract": (_strip_contract, "not a metaerr-edge model.*metaerr-edge export"),
    "bad-json": (lambda src, dst: _swap_contract(src, dst, "{not json"), "not valid JSON"),
    "wrong-format": (lambda src, dst: _swap_contract(src, dst, json.dumps({"format": "other/9"})), "other/9"),
}


@pytest.mark.parametrize("reader", [read_contract, load_checked, lambda p: set_threshold(p, ThresholdSpec())])
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_raise_contract_error(cnn: Exported, tmp_path: Path, case: str,
                                           reader: Callable[[Path], object]) -> None:
    make, message = BROKEN[case]
    target = tmp_path / "model.onnx"
    make(cnn.report.path, target)
    with pytest.raises(ContractError, match=message):
        reader(target)


def _assert_clean(folder: Path, expected: list[str]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == expected  # no partial target, no temp files


@pytest.mark.parametrize("failure", ["checker", "interrupt-in-exporter", "interrupt-in-inference"])
def test_failed_export_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              failure: str) -> None:
    fused, contract = make_model("cnn", 1, 28, "NCHW")
    (tmp_path / "old.onnx").write_bytes(b"previous model")

    def partial_export(module: nn.Module, args: tuple, f: str, **kwargs: Any) -> NoReturn:
        Path(f).write_bytes(b"\x08\x07partial")
        raise KeyboardInterrupt

    def broken_checker(*args: Any, **kwargs: Any) -> NoReturn:
        raise onnx.checker.ValidationError("simulated checker failure")

    def interrupted(*args: Any, **kwargs: Any) -> NoReturn:
        raise KeyboardInterrupt

    patch = {"checker": (onnx.checker, "check_model", broken_checker, ContractError),  # one typed error
             "interrupt-in-exporter": (torch.onnx, "export", partial_export, KeyboardInterrupt),
             "interrupt-in-inference": (onnx.shape_inference, "infer_shapes", interrupted, KeyboardInterrupt)}
    module, name, fake, error = patch[failure]
    monkeypatch.setattr(module, name, fake)
    for target in ("new.onnx", "old.onnx"):
        with pytest.raises(error):
            export_onnx(fused, contract, tmp_path / target, dynamo=False)
        _assert_clean(tmp_path, ["old.onnx"])
    assert (tmp_path / "old.onnx").read_bytes() == b"previous model"


def test_model_and_contract_must_agree(tmp_path: Path) -> None:
    fused, contract = make_model("cnn", 1, 28, "NCHW")
    nhwc = replace(contract, input=replace(contract.input, layout="NHWC", dtype="uint8", value_range=(0.0, 255.0)))
    for bad, message in [(nhwc, "layout"), (contract.with_threshold(ThresholdSpec(0.99)), "threshold"),
                         (replace(contract, classes=("a", "b")), "2 classes|classes")]:
        with pytest.raises(ConfigError, match=message):
            export_onnx(fused, bad, tmp_path / "x.onnx", dynamo=False)
    _assert_clean(tmp_path, [])


def _config_block(text: str, name: str) -> str:
    start = text.index(f'name: "{name}"')
    return text[start:text.index("\n  }", start)]


@pytest.mark.parametrize("kind", ["KIND_GPU", "KIND_CPU"])
def test_triton_repository_layout_and_config(cnn: Exported, tmp_path: Path, kind: str) -> None:
    model_dir = write_triton_repository(cnn.report.path, tmp_path / "repo", "fmnist_metaerr", kind=kind)
    assert model_dir == tmp_path / "repo" / "fmnist_metaerr"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "contract.json", "labels.txt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == cnn.report.path.read_bytes()
    assert Contract.from_json((model_dir / "contract.json").read_text()) == cnn.report.contract
    assert (model_dir / "labels.txt").read_text().splitlines() == list(cnn.contract.classes)
    text = (model_dir / "config.pbtxt").read_text()
    assert 'name: "fmnist_metaerr"' in text and 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 64" in text and f"kind: {kind}" in text and "count: 1" in text
    assert "data_type: TYPE_FP32\n    dims: [ 1, 28, 28 ]" in _config_block(text, "image")
    for name, dtype in [("label", "TYPE_INT64"), ("failure_score", "TYPE_FP32"), ("defer", "TYPE_BOOL")]:
        assert f"data_type: {dtype}\n    dims: [ 1 ]\n    reshape: {{ shape: [ ] }}" in _config_block(text, name)
    assert f"data_type: TYPE_FP32\n    dims: [ {K} ]" in _config_block(text, "probs")
    assert len(re.findall(r"^\s*name: ", text, re.M)) == 6 and text.count("{") == text.count("}")
    assert "dynamic_batching {\n  preferred_batch_size: [ 8, 32 ]\n  max_queue_delay_microseconds: 100\n}" in text
    # Rewriting replaces the folder whole; a TensorRT plan needs the contract passed in.
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine bytes")
    with pytest.raises(ConfigError, match="contract"):
        write_triton_repository(plan, tmp_path / "repo", "fmnist_metaerr")
    write_triton_repository(plan, tmp_path / "repo", "fmnist_metaerr", max_batch_size=32,
                            contract=cnn.report.contract)
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.plan"]
    text = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "max_batch_size: 32" in text
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["fmnist_metaerr"]  # no staging left
    with pytest.raises(ConfigError, match="preferred"):
        write_triton_repository(cnn.report.path, tmp_path / "repo", "m", max_batch_size=16)


class FakeRun:
    """The duck-typed run the CLI passes: fused(), contract(), split()."""

    def __init__(self) -> None:
        self._fused, self._contract = make_model("cnn", 1, 28, "NCHW")

    def fused(self, threshold: float | None = None, layout: str = "NCHW", mode: str | None = None) -> FusedModel:
        fused, _ = make_model("cnn", 1, 28, layout)
        fused.defer_threshold.fill_(self._contract.threshold.value if threshold is None else threshold)
        return fused

    def contract(self, layout: str = "NCHW", mode: str | None = None) -> Contract:
        return replace(self._contract, input=replace(self._contract.input, layout=layout,
                                                     dtype="uint8" if layout == "NHWC" else "float32",
                                                     value_range=(0.0, 255.0) if layout == "NHWC" else (0.0, 1.0)))

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(4)
        return rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8), rng.integers(0, K, 40)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_export_run_and_verify_run(tmp_path: Path, layout: str) -> None:
    run = FakeRun()
    report = export_run(run, tmp_path / "m.onnx", layout=layout, threshold=0.5, dynamo=False)
    contract = read_contract(report.path)
    assert contract.threshold == ThresholdSpec(value=0.5, method="manual") and contract.input.layout == layout
    parity = verify_run(report.path, run, n=40, batch_sizes=(1, 16))
    assert parity.passed and parity.n == 40 and "PASSED" in parity.to_markdown()
    json.dumps(parity.to_dict())
    triton = export_run(run, tmp_path / "repo", layout=layout, fmt="triton", dynamo=False)
    assert triton.path == tmp_path / "repo" / "metaerr_edge" / "1" / "model.onnx" and triton.path.is_file()


def test_parity_detects_a_different_model(cnn: Exported) -> None:
    other, _ = make_model("cnn", 1, 28, "NCHW", seed=1)
    other.defer_threshold.fill_(cnn.contract.threshold.value)
    report = verify_parity(cnn.report.path, other, random_inputs(cnn.contract.input, 20, seed=5), batch_sizes=(20,))
    assert not report.passed and report.max_abs_score_diff > 1e-3 and "FAILED" in report.to_markdown()


def test_random_inputs_follow_the_spec() -> None:
    gray = InputSpec(channels=1, height=28, width=28)
    x = random_inputs(gray, 500, seed=0)
    assert x.shape == (500, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() < 0.01 and 0.99 < x.max() < 1.0  # uniform over [0, 1): both ends nearly reached
    assert abs(float(x.mean()) - 0.5) < 0.01
    np.testing.assert_array_equal(random_inputs(gray, 5, seed=0), random_inputs(gray, 5, seed=0))  # seeded
    assert not np.array_equal(random_inputs(gray, 5, seed=0), random_inputs(gray, 5, seed=1))
    rgb = InputSpec(layout="NHWC", dtype="uint8", channels=3, height=6, width=4, value_range=(0.0, 255.0),
                    channel_order="RGB", mean=(0.5,) * 3, std=(0.25,) * 3)
    frames = random_inputs(rgb, 300, seed=2)
    assert frames.shape == (300, 6, 4, 3) and frames.dtype == np.uint8
    assert frames.min() == 0 and frames.max() == 255  # every byte value is possible, 255 included
    assert len(np.unique(frames)) == 256
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="n must be an integer >= 1"):
            random_inputs(gray, bad)  # type: ignore[arg-type]
