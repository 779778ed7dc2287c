"""TensorRT backend: pure helpers and the build/run plumbing against a FAKE ``tensorrt`` module
(these run everywhere), then real-TensorRT tests (marked tensorrt/gpu; skipped without them).

The fake mimics only the documented TensorRT 10.x/11.x Python calls the backend makes; passing here
proves the orchestration (cache keys, sidecars, flags, profile, per-thread contexts), not that
TensorRT accepts the calls.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.util
import itertools
import json
import logging
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metaerr_edge._fileio import atomic_write_bytes
from metaerr_edge.errors import BackendUnavailable, ConfigError, ContractError, InputError
from metaerr_edge.contract.spec import Contract, InputSpec, ThresholdSpec
from metaerr_edge.runtime import open_session
from metaerr_edge.runtime import trt_backend as tb

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
CONTRACT = Contract(input=InputSpec(channels=1, height=12, width=12, mean=(0.5,), std=(0.5,)),
                    classes=("a", "b", "c", "d"), threshold=ThresholdSpec(value=0.5))


# --------------------------------------------------------------------------- the fake tensorrt
class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes (any deterministic function of the input will do)."""
    feats = np.stack([x.mean(axis=(1, 2, 3)), x.max(axis=(1, 2, 3)), x.min(axis=(1, 2, 3)), x.std(axis=(1, 2, 3))], 1)
    e = np.exp(feats * np.float32(3))
    probs = (e / e.sum(1, keepdims=True)).astype(np.float32)
    score = (1 - probs.max(1)).astype(np.float32)
    return {"label": probs.argmax(1).astype(np.int64), "probs": probs, "failure_score": score, "defer": score > 0.5}


MEMORY: dict[int, np.ndarray] = {}  # fake device memory: pointer -> array
_PTRS = itertools.count(1000)


class FakeMemory:
    device_id = 0

    def __init__(self, device_id: int = 0) -> None:
        pass

    def gpu(self) -> tuple[str, str]:
        return "Fake GPU", "8.7"

    def activate(self) -> Any:
        return contextlib.nullcontext()

    def new_stream(self) -> tuple[Any, int]:
        return object(), 42

    def upload(self, host: np.ndarray, stream: Any) -> tuple[int, int]:
        ptr = next(_PTRS)
        MEMORY[ptr] = host.copy()
        return ptr, ptr

    def empty(self, shape: tuple[int, ...], dtype: np.dtype, stream: Any) -> tuple[int, int]:
        ptr = next(_PTRS)
        MEMORY[ptr] = np.zeros(shape, dtype)
        return ptr, ptr

    def download(self, buf: int, stream: Any) -> np.ndarray:
        return MEMORY[buf].copy()

    def synchronize(self, stream: Any) -> None:
        pass

    def free(self, buf: int) -> None:
        del MEMORY[buf]


class FakeContext:
    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.shape: tuple[int, ...] = ()
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.threads.add(threading.get_ident())
        self.shape = tuple(shape)
        return shape[0] <= 32

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], 4) if name == "probs" else (self.shape[0],)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == 42 and set(self.addresses) == {"image", *reference(np.zeros((1, 1, 1, 1)))}
        for name, value in reference(MEMORY[self.addresses["image"]]).items():
            MEMORY[self.addresses[name]][...] = value
        return True


class FakeEngine:
    io = {"image": DataType.FLOAT, "label": DataType.INT64, "probs": DataType.FLOAT,
          "failure_score": DataType.FLOAT, "defer": DataType.BOOL}

    def __init__(self) -> None:
        self.contexts: list[FakeContext] = []
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.io[name]

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext())
        return self.contexts[-1]


def make_trt(version: str = "10.3.0", half: bool = False, parse_ok: bool = True) -> types.SimpleNamespace:
    log: dict[str, Any] = {"flags": [], "set_flag": [], "profiles": [], "pool": [], "builds": 0,
                           "timing_in": [], "engines": [], "parsed": []}
    tensor = lambda name, shape, dtype: types.SimpleNamespace(name=name, shape=shape, dtype=dtype)  # noqa: E731
    hidden = tensor("h", (-1, 4), DataType.HALF if half else DataType.FLOAT)
    layer = types.SimpleNamespace(num_outputs=1, get_output=lambda j: hidden)
    network = types.SimpleNamespace(num_inputs=1, num_layers=1, get_layer=lambda i: layer,
                                    get_input=lambda i: tensor("image", (-1, 1, 12, 12), DataType.FLOAT))

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, net: Any, logger: Any) -> None:
            pass

        def parse(self, model: bytes, path: str | None = None) -> bool:
            log["parsed"].append(bytes(model))  # what TensorRT would build from
            return parse_ok

        def get_error(self, i: int) -> str:
            return "In node 3 (importFoo): UNSUPPORTED_NODE: Foo"

    class Config:
        cache = None

        def set_memory_pool_limit(self, pool: Any, n: int) -> None:
            log["pool"].append((pool, n))

        def set_flag(self, flag: Any) -> None:
            log["set_flag"].append(flag)

        def add_optimization_profile(self, profile: Any) -> None:
            pass

        def create_timing_cache(self, data: bytes) -> Any:
            log["timing_in"].append(bytes(data))
            return types.SimpleNamespace(serialize=lambda: b"timing-cache")

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self.cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            log["flags"].append(flags)
            return network

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Any:
            return types.SimpleNamespace(set_shape=lambda *args: log["profiles"].append(args))

        def build_serialized_network(self, net: Any, config: Any) -> bytes:
            log["builds"] += 1
            return b"PLAN-" + version.encode()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            log["engines"].append(FakeEngine() if data.startswith(b"PLAN") else None)
            return log["engines"][-1]

    major = int(version.split(".")[0])
    flags = types.SimpleNamespace(FP16="FP16") if major < 11 else types.SimpleNamespace()  # 11 removed it
    creation = enum.Enum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})  # as in 10.x
    return types.SimpleNamespace(
        __version__=version, log=log, DataType=DataType, TensorIOMode=TensorIOMode, BuilderFlag=flags,
        NetworkDefinitionCreationFlag=creation,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"), Builder=Builder, OnnxParser=Parser,
        Runtime=Runtime, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None}),
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Install a fake TensorRT 10.3; returns a setter to swap in another fake."""
    state: dict[str, Any] = {"trt": make_trt()}

    def import_fake() -> Any:
        tb.check_version(state["trt"].__version__)
        return state["trt"]

    monkeypatch.setattr(tb, "_import_tensorrt", import_fake)
    monkeypatch.setattr(tb, "_memory", lambda memory, device_id: FakeMemory(device_id))
    # The fake file is not ONNX: stand in for the one read that checks it (the bytes are real).
    monkeypatch.setattr(tb, "load_model_file", lambda path: (Path(path).read_bytes(), CONTRACT))
    onnx_path = tmp_path / "fused.onnx"
    onnx_path.write_bytes(b"pretend this is an ONNX file")
    return types.SimpleNamespace(state=state, onnx=onnx_path, cache=tmp_path / "engines")


# --------------------------------------------------------------------------- pure helpers
def test_versions_and_network_flags() -> None:
    assert [tb.trt_major(v) for v in ("10.3.0", "11.0.1.5", "8.6.1")] == [10, 11, 8]
    assert tb.check_version("10.0.1") == 10 and tb.check_version("11.2.0") == 11
    with pytest.raises(BackendUnavailable, match="older than 10.0"):
        tb.check_version("8.6.1")
    assert [tb.network_flags(m) for m in (8, 9, 10, 11)] == [1, 1, 0, 0]


def test_fp16_policy_differs_between_10_and_11() -> None:
    assert tb.fp16_mode(10, "fp32", False) == tb.fp16_mode(11, "fp32", False) == "none"
    assert tb.fp16_mode(10, "fp16", False) == "flag"
    assert tb.fp16_mode(11, "fp16", True) == "typed"
    with pytest.raises(ConfigError, match=r"ModelOpt AutoCast.*export/tensorrt/README.md"):
        tb.fp16_mode(11, "fp16", False)
    with pytest.raises(ConfigError, match="precision must be one of"):
        tb.fp16_mode(10, "int8", False)


def test_trt_dtypes_map_to_numpy() -> None:
    expected = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}
    for name, dtype in expected.items():
        assert tb.trt_dtype_to_numpy(DataType[name]) == np.dtype(dtype)
    assert tb.trt_dtype_to_numpy(DataType.BOOL).itemsize == 1
    with pytest.raises(ContractError, match="BF16"):
        tb.trt_dtype_to_numpy(DataType.BF16)


def test_profile_shapes_follow_the_input_layout() -> None:
    assert tb.profile_shapes((-1, 1, 12, 12), 1, 4, 32) == ((1, 1, 12, 12), (4, 1, 12, 12), (32, 1, 12, 12))
    assert tb.profile_shapes((-1, 10, 10, 3), 2, 2, 8) == ((2, 10, 10, 3), (2, 10, 10, 3), (8, 10, 10, 3))
    assert tb.profile_shapes((1, 1, 12, 12), 1, 1, 1)[2] == (1, 1, 12, 12)
    for shape, batches, message in [((-1, 1, 12, 12), (4, 2, 8), "min_batch <= opt_batch"),
                                    ((-1, 1, -1, 12), (1, 1, 8), "dynamic beyond the batch"),
                                    ((1, 1, 12, 12), (1, 1, 8), "fixed batch of 1")]:
        with pytest.raises(ConfigError, match=message):
            tb.profile_shapes(shape, *batches)


def test_engine_key_changes_with_every_field() -> None:
    key = tb.EngineKey("ab" * 32, "10.3.0", "Orin", "8.7", "fp16", 1, 1, 32)
    assert key.digest() == tb.EngineKey("ab" * 32, "10.3.0", "Orin", "8.7", "fp16", 1, 1, 32).digest()
    changed = {"onnx_sha256": "cd" * 32, "trt_version": "10.3.1", "gpu_name": "A100", "compute_capability": "8.0",
               "precision": "fp32", "min_batch": 2, "opt_batch": 4, "max_batch": 64, "platform": "Windows-AMD64"}
    assert {f.name for f in fields(key)} == set(changed)
    digests = {replace(key, **{name: value}).digest() for name, value in changed.items()}
    assert len(digests) == len(changed) and key.digest() not in digests


def test_sidecar_must_match_key_and_plan(tmp_path: Path) -> None:
    key = tb.EngineKey("ab" * 32, "10.3.0", "Orin", "8.7", "fp32", 1, 1, 32)
    plan, sidecar = tmp_path / "k.plan", tmp_path / "k.json"
    assert not tb.sidecar_matches(sidecar, key, plan)  # nothing there
    atomic_write_bytes(plan, b"engine bytes")
    tb.write_sidecar(sidecar, key, plan)
    assert tb.sidecar_matches(sidecar, key, plan)
    assert not tb.sidecar_matches(sidecar, replace(key, gpu_name="Xavier"), plan)
    plan.write_bytes(b"engine bytes, truncated or replaced")
    assert not tb.sidecar_matches(sidecar, key, plan)
    sidecar.write_text("{not json")
    assert not tb.sidecar_matches(sidecar, key, plan)


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.plan"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]  # not bytes-like
    assert target.read_bytes() == b"abc" and sorted(p.name for p in target.parent.iterdir()) == ["x.plan"]


# --------------------------------------------------------------------------- build_engine on the fake
def test_build_engine_caches_by_key(fake: Any) -> None:
    trt = fake.state["trt"]
    plan = tb.build_engine(fake.onnx, cache_dir=fake.cache, max_batch=16, workspace_bytes=1 << 20)
    assert plan.read_bytes() == b"PLAN-10.3.0" and plan.with_suffix(".json").is_file()
    sidecar = json.loads(plan.with_suffix(".json").read_text())
    assert sidecar["key"]["gpu_name"] == "Fake GPU" and sidecar["key"]["max_batch"] == 16
    assert trt.log["flags"] == [0] and trt.log["pool"] == [("WORKSPACE", 1 << 20)] and trt.log["set_flag"] == []
    assert trt.log["profiles"] == [("image", (1, 1, 12, 12), (1, 1, 12, 12), (16, 1, 12, 12))]
    timing = next(fake.cache.glob("timing-*.cache"))
    assert timing.read_bytes() == b"timing-cache" and trt.log["timing_in"] == [b""]
    assert tb.build_engine(fake.onnx, cache_dir=fake.cache, max_batch=16) == plan and trt.log["builds"] == 1
    fp16 = tb.build_engine(fake.onnx, cache_dir=fake.cache, max_batch=16, precision="fp16")
    assert fp16 != plan and trt.log["builds"] == 2 and trt.log["set_flag"] == ["FP16"]
    assert trt.log["timing_in"][-1] == b"timing-cache"  # the second build starts from the saved timing cache
    fake.onnx.write_bytes(b"a re-exported model")
    assert tb.build_engine(fake.onnx, cache_dir=fake.cache, max_batch=16) != plan and trt.log["builds"] == 3


def test_the_default_engine_cache_is_the_package_cache_dir(fake: Any, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("METAERR_EDGE_CACHE", str(tmp_path / "shared-cache"))
    plan = tb.build_engine(fake.onnx, max_batch=16)
    assert plan.parent == tmp_path / "shared-cache" / "tensorrt" and plan.read_bytes() == b"PLAN-10.3.0"
    assert sorted(p.suffix for p in plan.parent.iterdir()) == [".cache", ".json", ".plan"]


def test_the_engine_is_built_from_the_bytes_its_key_hashes(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file rewritten between the check and the build must not get an engine of other bytes under the
    old key: the file is read once, and those bytes are hashed, checked and parsed."""
    original = fake.onnx.read_bytes()

    def read_then_rewrite(path: Any) -> tuple[bytes, Any]:
        data = Path(path).read_bytes()
        fake.onnx.write_bytes(b"rewritten by another process right after the read")
        return data, CONTRACT

    monkeypatch.setattr(tb, "load_model_file", read_then_rewrite)
    plan = tb.build_engine(fake.onnx, cache_dir=fake.cache)
    sidecar = json.loads(plan.with_suffix(".json").read_text())
    assert fake.state["trt"].log["parsed"] == [original]
    assert sidecar["key"]["onnx_sha256"] == hashlib.sha256(original).hexdigest()


def test_build_engine_rebuilds_a_stale_engine(fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    plan = tb.build_engine(fake.onnx, cache_dir=fake.cache)
    plan.write_bytes(b"PLAN from somewhere else")
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.runtime.tensorrt"):
        assert tb.build_engine(fake.onnx, cache_dir=fake.cache) == plan
    assert fake.state["trt"].log["builds"] == 2 and plan.read_bytes() == b"PLAN-10.3.0"
    assert "does not match its sidecar" in caplog.text


def test_tensorrt_11_is_strongly_typed(fake: Any) -> None:
    fake.state["trt"] = make_trt("11.0.1", half=False)
    with pytest.raises(ConfigError, match="ModelOpt AutoCast"):
        tb.build_engine(fake.onnx, cache_dir=fake.cache, precision="fp16")
    assert not list(fake.cache.glob("*.plan"))
    fake.state["trt"] = trt = make_trt("11.0.1", half=True)
    assert tb.build_engine(fake.onnx, cache_dir=fake.cache, precision="fp16").read_bytes() == b"PLAN-11.0.1"
    assert trt.log["flags"] == [0] and trt.log["set_flag"] == []


def test_build_mode_of_reduced_precision_graphs() -> None:
    assert tb.build_mode(10, "fp32", None) == ("fp32", "weak") and tb.build_mode(10, "fp32", "fp16") == ("fp16", "weak")
    assert tb.build_mode(10, "int8", None, "tensorrt") == tb.build_mode(11, "int8", "int8", "tensorrt") == ("int8-typed", "strong")
    assert tb.build_mode(10, "fp16", None) == tb.build_mode(11, "fp16", None) == ("fp16-typed", "strong")
    with pytest.raises(ConfigError, match="asymmetric activations .*--target tensorrt"):
        tb.build_mode(10, "int8", None, "onnxruntime")
    with pytest.raises(ConfigError, match="already int8"):
        tb.build_mode(10, "int8", "fp16", "tensorrt")
    with pytest.raises(ConfigError, match="expected fp32, fp16 or int8"):
        tb.build_mode(10, "int4", None)


@pytest.mark.parametrize("version, flags", [("10.3.0", 1 << 1), ("11.0.1", 0)])
@pytest.mark.parametrize("graph", [{"name": "int8", "target": "tensorrt"}, {"name": "fp16"}])
def test_reduced_precision_graphs_build_strongly_typed(fake: Any, monkeypatch: pytest.MonkeyPatch, version: str,
                                                       flags: int, graph: dict) -> None:
    """A QDQ graph is explicit quantization and an FP16 graph carries its types: both build as strongly
    typed networks (the STRONGLY_TYPED bit on 10.x, the only kind on 11.x), with no precision flag."""
    fake.state["trt"] = trt = make_trt(version)
    monkeypatch.setattr(tb, "load_model_file", lambda path: (Path(path).read_bytes(), replace(CONTRACT, precision=graph)))
    plan = tb.build_engine(fake.onnx, cache_dir=fake.cache)
    assert trt.log["flags"] == [flags] and trt.log["set_flag"] == []
    assert json.loads(plan.with_suffix(".json").read_text())["key"]["precision"] == f"{graph['name']}-typed"
    s = open_session(fake.onnx, backend="tensorrt", cache_dir=str(fake.cache))
    assert f"({graph['name']}-typed" in s.providers[0] and trt.log["builds"] == 1  # the cached engine
    with pytest.raises(ConfigError, match=f"already {graph['name']}"):
        tb.build_engine(fake.onnx, cache_dir=fake.cache, precision="fp16" if graph["name"] == "int8" else "fp32")


def test_an_onnxruntime_int8_graph_is_refused_before_building(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    int8 = replace(CONTRACT, precision={"name": "int8", "target": "onnxruntime"})
    monkeypatch.setattr(tb, "load_model_file", lambda path: (Path(path).read_bytes(), int8))
    with pytest.raises(ConfigError, match="quantize model.onnx --int8 --target tensorrt"):
        tb.build_engine(fake.onnx, cache_dir=fake.cache)
    assert fake.state["trt"].log["builds"] == 0 and not list(fake.cache.glob("*.plan"))


def test_parser_errors_are_reported(fake: Any) -> None:
    fake.state["trt"] = make_trt(parse_ok=False)
    with pytest.raises(ContractError, match="parser rejected .*UNSUPPORTED_NODE: Foo"):
        tb.build_engine(fake.onnx, cache_dir=fake.cache)


# --------------------------------------------------------------------------- the runner on the fake
def test_session_on_fake_tensorrt_runs_with_one_context_per_thread(fake: Any) -> None:
    s = open_session(fake.onnx, cache_dir=str(fake.cache))  # auto: the (fake) TensorRT comes first
    assert s.backend == "tensorrt" and s.fallback_report == () and s.max_batch == 32
    assert s.providers[0].startswith("TensorRT 10.3.0 (fp32") and s.device.startswith("cuda:0 (Fake GPU")
    pool = np.random.default_rng(0).random((40, 1, 12, 12), dtype=np.float32)
    pred = s.predict(pool[:7])
    for name, value in reference(pool[:7]).items():
        np.testing.assert_array_equal(getattr(pred, name), value)
    with pytest.raises(InputError, match="maximum of 32"):
        s.predict(pool[:33])
    jobs = [(i % 30, 1 + i % 8) for i in range(400)]
    with ThreadPoolExecutor(max_workers=8) as ex:
        got = list(ex.map(lambda j: s.predict(pool[j[0]:j[0] + j[1]]), jobs))
    for (a, n), p in zip(jobs, got):
        np.testing.assert_array_equal(p.failure_score, reference(pool[a:a + n])["failure_score"])
    contexts = fake.state["trt"].log["engines"][-1].contexts
    assert 2 <= len(contexts) <= 9 and all(len(c.threads) == 1 for c in contexts)
    assert not MEMORY  # every device buffer was freed
    s.close()


def test_failed_execution_raises_and_frees_every_buffer(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_session(fake.onnx, backend="tensorrt", cache_dir=str(fake.cache))
    monkeypatch.setattr(FakeContext, "execute_async_v3", lambda self, handle: False)
    with pytest.raises(BackendUnavailable, match="execute_async_v3 failed"):
        s.predict(np.zeros((3, 1, 12, 12), np.float32))
    assert not MEMORY


def test_unreadable_engine_is_rebuilt_once(fake: Any) -> None:
    plan = tb.build_engine(fake.onnx, cache_dir=fake.cache)
    plan.write_bytes(b"garbage")
    tb.write_sidecar(plan.with_suffix(".json"), json_key(plan), plan)  # sidecar matches, bytes do not load
    s = open_session(fake.onnx, backend="tensorrt", cache_dir=str(fake.cache))
    assert fake.state["trt"].log["engines"][0] is None and len(s.predict(np.zeros((2, 1, 12, 12), np.float32))) == 2


def json_key(plan: Path) -> tb.EngineKey:
    return tb.EngineKey(**json.loads(plan.with_suffix(".json").read_text())["key"])


# --------------------------------------------------------------------------- real TensorRT (skipped here)
def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


requires_tensorrt = pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed on this machine")
requires_gpu = pytest.mark.skipif(HAS_TRT and not _has_gpu(), reason="needs an NVIDIA GPU with CUDA")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from metaerr_edge.fuse.export import export_onnx
    from metaerr_edge.models.fused import FusedModel
    from metaerr_edge.models.preprocess import Preprocess

    class Base(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    class Meta(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(torch.sort(probs, dim=1, descending=True).values))

    torch.manual_seed(0)
    fused = FusedModel(Base(), Meta(), Preprocess([0.5], [0.5]), threshold=0.5).eval()
    path = tmp_path_factory.mktemp("trt") / "fused.onnx"
    export_onnx(fused, CONTRACT, path)
    return path


@pytest.mark.tensorrt
@pytest.mark.gpu
@requires_gpu
@requires_tensorrt  # listed last, checked first: on a machine without TensorRT this is the reason
@pytest.mark.parametrize("memory", ["torch", "cuda-python"])
def test_real_tensorrt_matches_onnxruntime(exported: Path, tmp_path: Path, memory: str) -> None:
    pool = np.random.default_rng(1).random((16, 1, 12, 12), dtype=np.float32)
    ref = open_session(exported, backend="onnxruntime").predict(pool)
    s = open_session(exported, backend="tensorrt", cache_dir=str(tmp_path), max_batch=16, memory=memory)
    got = s.predict(pool)
    np.testing.assert_array_equal(got.label, ref.label)
    np.testing.assert_allclose(got.failure_score, ref.failure_score, atol=2e-3, rtol=0)  # TF32 is on by default
    plan = next(tmp_path.glob("*.plan"))
    mtime = plan.stat().st_mtime_ns
    again = open_session(exported, backend="tensorrt", cache_dir=str(tmp_path), max_batch=16, memory=memory)
    assert plan.stat().st_mtime_ns == mtime  # reused, not rebuilt
    with ThreadPoolExecutor(max_workers=4) as ex:
        outs = list(ex.map(lambda i: again.predict(pool[i:i + 4]).label, range(12)))
    for i, labels in enumerate(outs):
        np.testing.assert_array_equal(labels, again.predict(pool[i:i + 4]).label)

