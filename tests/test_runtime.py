"""Runtime: one Session API (registry, auto fallback, validation, parity, threads, images)."""

from __future__ import annotations

import copy
import importlib.util
import logging
import subprocess
import sys
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError, dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from metaerr_edge.errors import BackendUnavailable, ConfigError, ContractError, InputError
from metaerr_edge.contract.spec import Contract, InputSpec, ThresholdSpec, random_inputs
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.runtime import (
    Prediction,
    auto_order,
    available_backends,
    load_images,
    open_session,
    validate_images,
)

REPO = Path(__file__).resolve().parents[1]
SCORE_ATOL = 1e-5


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")


class TinyBase(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyMeta(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 + classes, 1)

    def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        feats = torch.relu(self.conv(x)).mean(dim=(2, 3))
        top = torch.sort(probs, dim=1, descending=True).values
        return torch.sigmoid(4.0 * self.fc(torch.cat([feats, top], dim=1)))


@dataclass
class Model:
    path: Path
    fused: FusedModel
    contract: Contract
    pool: np.ndarray  # valid inputs


def _export(fused: FusedModel, contract: Contract, path: Path) -> None:
    try:
        from metaerr_edge.fuse.export import export_onnx
    except ImportError:  # the exporter not there yet: a minimal local equivalent
        export_onnx = None
    if export_onnx is not None:
        with warnings.catch_warnings():  # the TorchScript exporter (10x faster here) is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            export_onnx(fused, contract, path, dynamo=False)
        return
    import onnx

    from metaerr_edge.contract.spec import CONTRACT_KEY, OUTPUT_NAMES

    names = [contract.input.name, *OUTPUT_NAMES]
    torch.onnx.export(fused, (torch.from_numpy(random_inputs(contract.input, 2, 0)),), str(path), dynamo=False,
                      opset_version=18, external_data=False, input_names=names[:1], output_names=names[1:],
                      dynamic_axes={n: {0: "batch"} for n in names})
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {CONTRACT_KEY: contract.to_json()})
    onnx.save(model, str(path))


def _build(tmp: Path, name: str, spec: InputSpec, classes: int, seed: int) -> Model:
    torch.manual_seed(seed)
    fused = FusedModel(TinyBase(spec.channels, classes), TinyMeta(spec.channels, classes),
                       Preprocess(spec.mean, spec.std, spec.layout)).eval()
    pool = random_inputs(spec, 64, seed)
    with torch.no_grad():
        scores = np.sort(fused(torch.from_numpy(pool))[2].numpy())
    mid = len(scores) // 2  # threshold halfway between two scores: no decision sits on the edge
    threshold = float((scores[mid - 1] + scores[mid]) / 2)
    fused.defer_threshold.fill_(threshold)
    contract = Contract(input=spec, classes=tuple(f"class{i}" for i in range(classes)),
                        threshold=ThresholdSpec(value=threshold, method="coverage", target_coverage=0.5))
    path = tmp / f"{name}.onnx"
    _export(fused, contract, path)
    return Model(path, fused, contract, pool)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    tmp = tmp_path_factory.mktemp("runtime")
    gray = InputSpec(name="image", layout="NCHW", dtype="float32", channels=1, height=12, width=12)
    rgb = InputSpec(name="image", layout="NHWC", dtype="uint8", channels=3, height=10, width=10,
                    value_range=(0.0, 255.0), channel_order="RGB", mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25))
    return {"gray": _build(tmp, "gray", gray, 4, 0), "rgb_u8": _build(tmp, "rgb_u8", rgb, 3, 1)}


@pytest.fixture(scope="module")
def gray(models: dict[str, Model]) -> Model:
    return models["gray"]


# --------------------------------------------------------------------------- registry, sessions
def test_registry_is_the_single_list_of_backends() -> None:
    assert set(available_backends()) == {"tensorrt", "onnxruntime-cuda", "onnxruntime", "torch"}
    assert auto_order() == ("tensorrt", "onnxruntime-cuda", "onnxruntime")


@pytest.mark.parametrize("name", ["gray", "rgb_u8"])
def test_onnxruntime_cpu_matches_torch_cpu(models: dict[str, Model], name: str) -> None:
    m = models[name]
    with open_session(m.path, backend="onnxruntime", intra_op_num_threads=1) as ort_s, \
            open_session(m.fused, backend="torch", contract=m.contract) as torch_s:
        a, b = ort_s.predict(m.pool), torch_s.predict(m.pool)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.defer, b.defer)
    np.testing.assert_allclose(a.failure_score, b.failure_score, atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(a.probs, b.probs, atol=SCORE_ATOL, rtol=0)
    assert 0 < a.defer.sum() < len(a)  # the threshold splits the pool: decisions are really compared


@pytest.mark.parametrize("name", available_backends())
def test_every_registered_backend_matches_the_torch_reference(gray: Model, name: str) -> None:
    model = gray.fused if name == "torch" else gray.path
    options = {"contract": gray.contract} if name == "torch" else {}
    try:
        s = open_session(model, backend=name, **options)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} cannot run here: {str(exc)[:150]}")
    ref = open_session(gray.fused, backend="torch", contract=gray.contract).predict(gray.pool)
    got = s.predict(gray.pool)
    assert s.backend == name
    np.testing.assert_array_equal(got.label, ref.label)
    np.testing.assert_array_equal(got.defer, ref.defer)
    atol = 2e-3 if name == "tensorrt" else SCORE_ATOL  # TensorRT enables TF32 by default
    np.testing.assert_allclose(got.failure_score, ref.failure_score, atol=atol, rtol=0)


def test_session_reports_backend_providers_and_prediction(gray: Model) -> None:
    with open_session(gray.path, backend="onnxruntime") as s:
        assert (s.backend, s.device, s.providers) == ("onnxruntime", "cpu", ("CPUExecutionProvider",))
        assert s.contract.meta["graph_sha256"] and s.fallback_report == () and s.max_batch is None
        assert replace(s.contract, versions={}, meta=gray.contract.meta) == gray.contract
        pred = s.predict(gray.pool[:5])
    assert isinstance(pred, Prediction) and len(pred) == 5
    assert (pred.label.dtype, pred.probs.dtype, pred.failure_score.dtype, pred.defer.dtype) == (
        np.int64, np.float32, np.float32, np.bool_)
    assert pred.probs.shape == (5, 4) and pred.failure_score.shape == (5,)
    assert pred.class_names == [f"class{i}" for i in pred.label]
    assert ((pred.failure_score >= 0) & (pred.failure_score <= 1)).all()
    np.testing.assert_array_equal(pred.defer, pred.failure_score > gray.contract.threshold.value)
    with pytest.raises(ValueError):
        pred.label[0] = 1  # read-only arrays
    with pytest.raises(FrozenInstanceError):
        pred.label = pred.label  # type: ignore[misc]
    assert "onnxruntime" in repr(s) and "closed=True" in repr(s)


def test_warmup_close_and_context_manager(gray: Model) -> None:
    with open_session(gray.path, backend="onnxruntime", warmup=(1, 3)) as s:
        s.warmup([2])
    with pytest.raises(BackendUnavailable, match="closed"):
        s.predict(gray.pool[:1])
    s.close()  # idempotent


@pytest.mark.skipif(_tensorrt_importable() or _cuda_provider(), reason="this machine has a GPU backend")
def test_auto_falls_back_to_onnxruntime_cpu_and_reports_why(gray: Model, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.runtime"):
        s = open_session(gray.path, intra_op_num_threads=1)
    assert s.backend == "onnxruntime" and s.providers == ("CPUExecutionProvider",)
    tried = dict(s.fallback_report)
    assert list(tried) == ["tensorrt", "onnxruntime-cuda"]
    assert "TensorRT is not importable" in tried["tensorrt"] and "pip install" in tried["tensorrt"]
    assert "CUDAExecutionProvider" in tried["onnxruntime-cuda"] and "onnxruntime-gpu" in tried["onnxruntime-cuda"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # the fallbacks collapse into one line; the reasons in full are DEBUG
    assert warnings[0].startswith("running on backend 'onnxruntime' (CPUExecutionProvider) after 2 fallbacks:")
    assert "tensorrt (TensorRT is not importable" in warnings[0] and "onnxruntime-cuda (onnxruntime" in warnings[0]
    assert "pip install" not in warnings[0]
    plain = open_session(gray.path, backend="onnxruntime")
    np.testing.assert_array_equal(s.predict(gray.pool).label, plain.predict(gray.pool).label)


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here")
def test_explicit_tensorrt_raises_with_install_hint(gray: Model) -> None:
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not importable.*pip install 'metaerr-edge\[tensorrt\]'"):
        open_session(gray.path, backend="tensorrt")


@pytest.mark.skipif(_cuda_provider(), reason="onnxruntime-gpu is installed here")
def test_explicit_onnxruntime_cuda_raises_with_install_hint(gray: Model) -> None:
    with pytest.raises(BackendUnavailable, match="has no CUDAExecutionProvider.*pip install onnxruntime-gpu"):
        open_session(gray.path, backend="onnxruntime-cuda")


@pytest.mark.skipif(_cuda_provider(), reason="onnxruntime-gpu is installed here")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # ORT's own warning: expected
def test_silent_cpu_fallback_of_onnxruntime_is_caught(gray: Model, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    # Pretend the GPU build is installed: ORT then accepts the CUDA request and quietly runs on CPU.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="requested but ONNX Runtime is running on CPUExecutionProvider"):
        open_session(gray.path, backend="onnxruntime-cuda")
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.runtime"):
        s = open_session(gray.path, intra_op_num_threads=1)
    assert s.backend == "onnxruntime"
    assert "running on CPUExecutionProvider" in dict(s.fallback_report)["onnxruntime-cuda"]


def test_bad_names_and_options_are_config_errors(gray: Model) -> None:
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'"):
        open_session(gray.path, backend="tensorflow")
    with pytest.raises(ConfigError, match="takes options"):
        open_session(gray.path, backend="onnxruntime", precision="fp16")
    with pytest.raises(ConfigError, match="no auto backend takes options"):
        open_session(gray.path, colour="blue")
    with pytest.raises(ConfigError, match="holds no PyTorch module"):
        open_session(gray.path, backend="torch")
    with pytest.raises(ConfigError, match="opens a fused .onnx file path"):
        open_session(gray.fused, backend="onnxruntime")


def test_files_without_a_valid_contract_are_contract_errors(gray: Model, tmp_path: Path) -> None:
    import onnx

    bare = onnx.load(str(gray.path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ContractError, match="carries no metaerr-edge contract"):
        open_session(tmp_path / "bare.onnx")  # auto: a contract problem stops, it is not a fallback
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ContractError, match="not a readable ONNX file"):
        open_session(tmp_path / "junk.onnx", backend="onnxruntime")
    for backend in ("auto", "onnxruntime", "tensorrt", "torch"):  # say what is wrong, whichever backend
        with pytest.raises(ContractError, match="missing.onnx: no such file"):
            open_session(tmp_path / "missing.onnx", backend=backend)
        with pytest.raises(ContractError, match="is a folder but not a run folder"):
            open_session(tmp_path, backend=backend)


def test_read_contract_refuses_what_open_session_refuses(gray: Model, tmp_path: Path) -> None:
    from metaerr_edge.contract import read_contract

    read = read_contract(gray.path)
    assert read == read_contract(str(gray.path)) == open_session(gray.path, backend="onnxruntime").contract
    assert (read.input, read.classes, read.threshold) == (gray.contract.input, gray.contract.classes,
                                                          gray.contract.threshold)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name, message in [("junk.onnx", "not a readable ONNX file"), ("empty.onnx", "the file is empty"),
                          ("missing.onnx", "missing.onnx: no such file")]:
        with pytest.raises(ContractError, match=message):
            read_contract(tmp_path / name)
    with pytest.raises(ContractError, match="is a folder, expected an .onnx model file"):
        read_contract(tmp_path)


def test_an_ort_session_whose_interface_disagrees_with_the_contract_is_refused(gray: Model) -> None:
    from metaerr_edge.contract.spec import OUTPUT_NAMES
    from metaerr_edge.runtime.ort_backend import check_session_interface

    def session(inputs: list[str], outputs: list[str]) -> types.SimpleNamespace:
        return types.SimpleNamespace(get_inputs=lambda: [types.SimpleNamespace(name=n) for n in inputs],
                                     get_outputs=lambda: [types.SimpleNamespace(name=n) for n in outputs])

    assert check_session_interface(session(["image"], [*OUTPUT_NAMES, "extra"]), gray.contract, "m.onnx") is None
    with pytest.raises(ContractError, match=r"m.onnx: the graph's inputs \['pixels'\] .* do not match its contract"):
        check_session_interface(session(["pixels"], list(OUTPUT_NAMES)), gray.contract, "m.onnx")
    with pytest.raises(ContractError, match=r"outputs \['label', 'probs'\] do not match"):
        check_session_interface(session(["image"], ["label", "probs"]), gray.contract, "m.onnx")


# --------------------------------------------------------------------------- torch backend
def test_torch_backend_checks_contract_and_threshold(gray: Model) -> None:
    s = open_session(gray.fused, contract=gray.contract)  # auto picks torch for a module
    assert s.backend == "torch" and s.device == "cpu" and s.providers[0].startswith("torch ")
    with pytest.raises(ConfigError, match="needs contract="):
        open_session(gray.fused, backend="torch")
    other = gray.contract.with_threshold(ThresholdSpec(value=0.01))
    with pytest.raises(ConfigError, match="decisions would differ"):
        open_session(gray.fused, backend="torch", contract=other)
    moved = open_session(gray.fused, backend="torch", contract=gray.contract, threshold=0.0)
    assert moved.contract.threshold.value == 0.0 and moved.predict(gray.pool).defer.all()
    assert float(gray.fused.defer_threshold) == gray.contract.threshold.value  # the caller's module is untouched


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_torch_cuda_without_gpu_is_unavailable(gray: Model) -> None:
    with pytest.raises(BackendUnavailable, match="torch.cuda.is_available"):
        open_session(gray.fused, backend="torch", contract=gray.contract, device="cuda")


def test_torch_backend_opens_a_run_folder_through_the_registered_opener(gray: Model, tmp_path: Path) -> None:
    from metaerr_edge.runtime.torch_backend import register_run_opener

    calls = []

    class FakeRun:
        def contract(self) -> Contract:
            return gray.contract

        def fused(self, threshold: float) -> FusedModel:
            calls.append(threshold)
            return gray.fused

    (tmp_path / "config.json").write_text("{}")  # what makes a folder a run folder (the run itself is faked)
    previous = register_run_opener(None)
    try:
        with pytest.raises(BackendUnavailable, match="needs the training package's run opener.*import metaerr_edge.pipeline"):
            open_session(tmp_path, backend="torch")
        assert register_run_opener(lambda path: calls.append(Path(path)) or FakeRun()) is None
        s = open_session(tmp_path)  # a run folder: auto means torch
        assert s.backend == "torch" and calls == [tmp_path, gray.contract.threshold.value]
        np.testing.assert_array_equal(s.predict(gray.pool).label, open_session(gray.path).predict(gray.pool).label)
        moved = open_session(tmp_path, backend="torch", threshold=0.0)
        assert calls[-1] == 0.0 and moved.contract.threshold.value == 0.0 and moved.predict(gray.pool).defer.all()
        with pytest.raises(ConfigError, match="carries its own contract"):
            open_session(tmp_path, backend="torch", contract=gray.contract)
    finally:
        register_run_opener(previous)


def test_the_runtime_never_imports_the_training_pipeline() -> None:
    """runtime/ is downstream of training: a run folder reaches it through register_run_opener only."""
    import ast

    files = sorted((REPO / "metaerr_edge" / "runtime").glob("*.py"))
    assert {"session.py", "torch_backend.py", "cuda_graphs.py"} <= {p.name for p in files}
    for path in files:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):  # importlib by name counts too
                imported |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        found = sorted(m for m in imported if m == "metaerr_edge.pipeline" or m.startswith("metaerr_edge.pipeline."))
        assert not found, f"{path.name} imports {found}"


def test_cuda_graph_helpers_import_without_torch_and_run_eagerly_on_cpu(gray: Model) -> None:
    code = ("import sys; import metaerr_edge.runtime, metaerr_edge.runtime.cuda_graphs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-800:]
    from metaerr_edge.runtime.cuda_graphs import device_call

    call = device_call(gray.fused, gray.pool[:5])  # eager: the forward on the module's device (CPU here)
    label, probs, score, defer = call()
    with torch.inference_mode():
        ref = gray.fused(torch.from_numpy(gray.pool[:5]))
    np.testing.assert_array_equal(label.numpy(), ref[0].numpy())
    np.testing.assert_allclose(score.numpy(), ref[2].numpy(), atol=0, rtol=0)


@needs_cuda
def test_cuda_graph_replay_matches_the_eager_forward(gray: Model) -> None:
    from metaerr_edge.runtime.cuda_graphs import capture_cuda_graph

    model = copy.deepcopy(gray.fused).cuda()
    static_in = torch.from_numpy(gray.pool[:8]).cuda()
    graph, static_out = capture_cuda_graph(model, static_in)
    static_in.copy_(torch.from_numpy(gray.pool[8:16]))
    graph.replay()
    with torch.inference_mode():
        ref = model(static_in)
    np.testing.assert_allclose(static_out[2].cpu().numpy(), ref[2].cpu().numpy(), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- input validation
def _bad_inputs(gray: Model, rgb: Model) -> dict[str, tuple[Model, object, str]]:
    x = gray.pool[:4]
    return {
        "not an array": (gray, x.tolist(), "got builtins.list.*np.stack"),
        "torch tensor": (gray, torch.from_numpy(x), r"detach\(\).cpu\(\).numpy\(\)"),
        "single image (rank 3)": (gray, x[0], r"rank 3.*images\[None\]"),
        "rank 2": (gray, x[0, 0], r"rank 2.*images\[None, None\]"),
        "rank 5": (gray, x[None], "rank 5"),
        "empty batch": (gray, x[:0], "empty batch"),
        "wrong channels": (gray, np.repeat(x, 3, axis=1), r"expected 1 channel\(s\).*got 3.*gray"),
        "HWC given for CHW": (gray, x.transpose(0, 2, 3, 1), r"channels-last.*transpose\(0, 3, 1, 2\)"),
        "CHW given for HWC": (rgb, rgb.pool[:2].transpose(0, 3, 1, 2), r"channels-first.*transpose\(0, 2, 3, 1\)"),
        "wrong size": (gray, np.zeros((2, 1, 16, 16), np.float32), "12 x 12.*got 16 x 16.*resize"),
        "int dtype": (gray, (x * 255).astype(np.uint8), r"got uint8.*astype\(np.float32\) / 255"),
        "int64 dtype": (gray, (x * 255).astype(np.int64), "got int64"),
        "bool dtype": (gray, x > 0.5, "got bool"),
        "complex dtype": (gray, x.astype(np.complex64), "got complex64"),
        "0-255 floats": (gray, x * 255, "look like 0-255 pixels; divide by 255"),
        "normalized floats": (gray, (x - 0.5) / 0.5, "look already normalized"),
        "NaN": (gray, np.where(np.arange(4)[:, None, None, None] == 2, np.nan, x).astype(np.float32),
                "NaN in 1 of 4.*index 2"),
        "Inf": (gray, np.where(np.arange(4)[:, None, None, None] == 1, np.inf, x).astype(np.float32),
                "Inf in 1 of 4.*index 1"),
        "float for uint8 contract": (rgb, rgb.pool[:2].astype(np.float32) / 255, r"expected dtype uint8.*\* 255"),
        "int16 for uint8 contract": (rgb, rgb.pool[:2].astype(np.int16), r"expected dtype uint8.*astype\(np.uint8\)"),
    }


BAD_CASES = ["not an array", "torch tensor", "single image (rank 3)", "rank 2", "rank 5", "empty batch",
             "wrong channels", "HWC given for CHW", "CHW given for HWC", "wrong size", "int dtype", "int64 dtype",
             "bool dtype", "complex dtype", "0-255 floats", "normalized floats", "NaN", "Inf",
             "float for uint8 contract", "int16 for uint8 contract"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_inputs_raise_input_error_before_the_backend(models: dict[str, Model], case: str) -> None:
    model, images, message = _bad_inputs(models["gray"], models["rgb_u8"])[case]
    with open_session(model.path, backend="onnxruntime", intra_op_num_threads=1) as s:
        with pytest.raises(InputError, match=message):
            s.predict(images)
        s.predict(model.pool[:2])  # the session still works afterwards


def test_batch_above_max_batch(gray: Model) -> None:
    with pytest.raises(InputError, match=r"batch of 9 images is above this backend's maximum of 8.*array_split"):
        validate_images(gray.pool[:9], gray.contract, max_batch=8)
    assert validate_images(gray.pool[:8], gray.contract, max_batch=8).shape[0] == 8


def test_accepted_inputs_are_cast_and_made_contiguous(gray: Model) -> None:
    x = gray.pool[:6]
    assert validate_images(x, gray.contract) is x  # nothing to change: no copy
    for variant in (x.astype(np.float64), x.astype(np.float16), np.asfortranarray(x), x[::-1][::-1]):
        out = validate_images(variant, gray.contract)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out, x, atol=1e-3)
    edge = x.copy()
    edge[0, 0, 0, 0] = 1.0005  # resampling overshoot: within the range tolerance
    assert validate_images(edge, gray.contract)[0, 0, 0, 0] == np.float32(1.0005)
    edge[0, 0, 0, 0] = 1.01
    with pytest.raises(InputError, match=r"expected values in \[0.0, 1.0\], got values in"):
        validate_images(edge, gray.contract)


# --------------------------------------------------------------------------- threads
@pytest.mark.parametrize("backend,threads,calls", [("onnxruntime", 8, 500), ("torch", 4, 50)])
def test_concurrent_predict_equals_sequential(gray: Model, backend: str, threads: int, calls: int) -> None:
    kwargs = {"intra_op_num_threads": 1} if backend == "onnxruntime" else {"contract": gray.contract}
    model = gray.path if backend == "onnxruntime" else gray.fused
    s = open_session(model, backend=backend, **kwargs)
    rng = np.random.default_rng(123)
    jobs = [(int(rng.integers(0, 56)), int(rng.integers(1, 9))) for _ in range(threads * calls)]
    expected = [s.predict(gray.pool[a:a + n]) for a, n in jobs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        got = list(pool.map(lambda job: s.predict(gray.pool[job[0]:job[0] + job[1]]), jobs))
    for e, g in zip(expected, got):
        for field in ("label", "probs", "failure_score", "defer"):
            np.testing.assert_array_equal(getattr(e, field), getattr(g, field))


# --------------------------------------------------------------------------- import hygiene
def test_onnxruntime_path_imports_no_torch_torchvision_or_onnx(gray: Model, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", gray.pool[:3])
    code = (
        "import sys, numpy as np; import metaerr_edge.runtime as r; "
        f"s = r.open_session({str(gray.path)!r}, backend='onnxruntime'); "
        f"p = s.predict(np.load({str(tmp_path / 'x.npy')!r})); "
        "bad = [m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules]; "
        "assert not bad, bad; print(p.label.tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(open_session(gray.path).predict(gray.pool[:3]).label.tolist())


# --------------------------------------------------------------------------- images
def test_load_images_from_a_folder(models: dict[str, Model], tmp_path: Path) -> None:
    gray, rgb = models["gray"], models["rgb_u8"]
    rng = np.random.default_rng(5)
    exact = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    (tmp_path / "sub").mkdir()
    Image.fromarray(exact, "L").save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8), "RGB").save(tmp_path / "sub" / "b.PNG")
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), "RGB").save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")

    with pytest.raises(InputError, match=r"2 of 3 images are not 12x12 .*c.bmp' is 10x10 \(and 1 more\).*--resize"):
        load_images([tmp_path], gray.contract)  # never silently resized
    x, files = load_images([tmp_path], gray.contract, resize=True)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.png", "c.bmp", "sub/b.PNG"]
    assert x.shape == (3, 1, 12, 12) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[0, 0], exact.astype(np.float32) / 255)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(open_session(gray.path).predict(x)) == 3

    frames, _ = load_images([tmp_path / "c.bmp", tmp_path / "a.png"], rgb.contract, resize=True)
    assert frames.shape == (2, 10, 10, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], np.asarray(Image.open(tmp_path / "c.bmp")))
    assert len(open_session(rgb.path).predict(frames)) == 2


def test_load_images_errors_name_the_file(gray: Model, tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="cannot read image file .*broken.png"):
        load_images([tmp_path], gray.contract)
    with pytest.raises(InputError, match="does not exist"):
        load_images([tmp_path / "nope.png"], gray.contract)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image file"):
        load_images([tmp_path / "empty"], gray.contract)


# --------------------------------------------------------------------------- GPU (skipped here)
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_provider(), reason="needs an NVIDIA GPU with CUDA (and onnxruntime-gpu)")
def test_onnxruntime_cuda_matches_cpu(gray: Model) -> None:
    cuda = open_session(gray.path, backend="onnxruntime-cuda")
    assert cuda.providers[0] == "CUDAExecutionProvider" and cuda.device == "cuda:0"
    a, b = cuda.predict(gray.pool), open_session(gray.path, backend="onnxruntime").predict(gray.pool)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_allclose(a.failure_score, b.failure_score, atol=SCORE_ATOL, rtol=0)
    bound = open_session(gray.path, backend="onnxruntime-cuda", io_binding=True).predict(gray.pool)
    np.testing.assert_allclose(bound.failure_score, a.failure_score, atol=SCORE_ATOL, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_torch_cuda_and_cuda_graphs_match_cpu(gray: Model) -> None:
    cpu = open_session(gray.fused, backend="torch", contract=gray.contract).predict(gray.pool[:8])
    s = open_session(gray.fused, backend="torch", contract=gray.contract, device="cuda", cuda_graph_batch_sizes=(8,))
    for _ in range(2):  # replayed graph, then again with the same static buffers
        g = s.predict(gray.pool[:8])
        np.testing.assert_array_equal(g.label, cpu.label)
        np.testing.assert_allclose(g.failure_score, cpu.failure_score, atol=SCORE_ATOL, rtol=0)
    assert len(s.predict(gray.pool[:3])) == 3  # a size without a graph runs eagerly
