"""The ``"tensorrt"`` backend: build (and cache) an engine from the fused .onnx, then run it.

NOT RUN on the machines this was written on (no TensorRT, no GPU): everything below the
"TensorRT-specific" line follows the documented TensorRT 10.x / 11.x Python API and has only run
against a fake ``tensorrt`` module in the tests. The pure helpers above that line are tested.

Versions: 10.x (Jetson/JetPack 6 ships 10.3) and 11.x, branching on the major version.
``create_network`` gets no flags on >= 10 (EXPLICIT_BATCH is deprecated and ignored in 10, gone in
11). An FP32 graph: ``precision="fp16"`` sets ``BuilderFlag.FP16`` on 10.x; 11.x is strongly typed
only (the flag is gone), so the ONNX must already carry FP16 (``metaerr-edge quantize --fp16``, or
NVIDIA ModelOpt AutoCast, see export/tensorrt/README.md) or the build is refused. A reduced-precision
graph (``contract.precision``: an FP16 graph, or an INT8 QDQ graph, which TensorRT reads as explicit
quantization) is built as a strongly typed network: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
on 10.x, the only kind on 11.x; no precision flag, the graph's types decide (:func:`build_mode`).
TensorRT's quantization is symmetric, so an INT8 graph quantized for ONNX Runtime (asymmetric
activations) is refused with the command that makes a TensorRT one.

Engine cache: ``<cache_dir>/<key>.plan`` + ``<key>.json``, where key = sha256 of (ONNX sha256,
TensorRT version, GPU name, compute capability, precision, batch profile, OS/arch). An engine is
loaded only when its sidecar matches the key and the plan's sha256; otherwise it is rebuilt.
``cache_dir`` defaults to ``metaerr_edge._fileio.cache_dir("tensorrt")``: ``$METAERR_EDGE_CACHE/tensorrt``,
else ``$XDG_CACHE_HOME/metaerr-edge/tensorrt``, else ``~/.cache/metaerr-edge/tensorrt``.

Running: one ``IExecutionContext`` and one CUDA stream per thread (``threading.local``),
``set_input_shape`` + ``set_tensor_address`` for every I/O tensor, ``execute_async_v3``. Device
memory (:mod:`metaerr_edge.runtime.cuda_memory`) comes from cuda-python (``memory="cuda-python"``) or
PyTorch CUDA tensors (``memory="torch"``: caching allocator, ``data_ptr()`` on the thread's stream);
the default ``memory="auto"`` takes cuda-python when importable, so a device needs no torch (cuda-python:
``cuda.bindings.runtime`` or the older ``cuda.cudart``). pycuda is not used (its contexts bind to
the thread that created them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.errors import BackendUnavailable, ConfigError, ContractError
from metaerr_edge._fileio import atomic_write_bytes, file_sha256
from metaerr_edge._fileio import cache_dir as package_cache_dir  # ``cache_dir`` names the parameters below
from metaerr_edge.contract.spec import OUTPUT_NAMES
from metaerr_edge.runtime.cuda_memory import cuda_memory
from metaerr_edge.contract.reader import load_model_file
from metaerr_edge.runtime.session import Backend, Outputs, register_backend

logger = logging.getLogger("metaerr_edge.runtime.tensorrt")
MIN_MAJOR = 10
PRECISIONS = ("fp32", "fp16")  # what may be asked of an FP32 graph; a reduced graph brings its own
INSTALL_HINT = (
    "Install TensorRT 10.x/11.x with: pip install 'metaerr-edge[tensorrt]' (wheels come from NVIDIA's "
    "index, https://pypi.nvidia.com); on Jetson use JetPack's python3-libnvinfer. It needs an NVIDIA GPU and driver"
)
_NUMPY_BY_TRT_NAME = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                      "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}


# ---------------------------------------------------------------- pure helpers (tested here)
def trt_major(version: str) -> int:
    """Major version of a TensorRT version string: ``"10.3.0"`` -> 10."""
    return int(str(version).split(".")[0])


def check_version(version: str) -> int:
    """Return the major version, or raise :class:`BackendUnavailable` below :data:`MIN_MAJOR`."""
    major = trt_major(version)
    if major < MIN_MAJOR:
        raise BackendUnavailable(f"TensorRT {version} is older than {MIN_MAJOR}.0. {INSTALL_HINT}")
    return major


def network_flags(major: int) -> int:
    """``create_network`` flags: explicit batch (bit 0) before 10; none on 10.x/11.x."""
    return 1 << 0 if major < 10 else 0


def fp16_mode(major: int, precision: str, network_has_fp16: bool) -> str:
    """How to get ``precision``: "none" (fp32), "flag" (10.x BuilderFlag.FP16) or "typed" (11.x).

    Raises:
        ConfigError: unknown precision, or fp16 on 11.x from an ONNX without FP16 tensors.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return "none"
    if major < 11:
        return "flag"
    if network_has_fp16:
        return "typed"
    raise ConfigError(
        f"precision='fp16' on TensorRT {major}.x needs an ONNX that is already FP16: 11.x removed "
        "BuilderFlag.FP16 (strongly typed only). Convert it first: metaerr-edge quantize model.onnx --fp16 "
        "--run RUN, or NVIDIA ModelOpt AutoCast "
        "(python -m modelopt.onnx.autocast --onnx_path fused.onnx --output_path fused_fp16.onnx; "
        "see export/tensorrt/README.md), or build with precision='fp32'"
    )


def build_mode(major: int, graph: str, requested: str | None, int8_target: str | None = None) -> tuple[str, str]:
    """(engine precision for the cache key, network kind) for a graph of precision ``graph``.

    The network kind is "weak" (an FP32 graph; :func:`fp16_mode` then says how to get ``requested``)
    or "strong" (an FP16 or INT8 QDQ graph: a strongly typed network, no precision flags).
    ``requested`` None means the graph's own precision.

    Raises:
        ConfigError: a precision other than the graph's asked of a reduced graph; an INT8 graph
            quantized for ONNX Runtime (asymmetric activations), which TensorRT cannot read.
    """
    if graph == "fp32":
        return (requested or "fp32"), "weak"
    if graph not in ("fp16", "int8"):
        raise ConfigError(f"the graph's precision is {graph!r}; expected fp32, fp16 or int8 (contract.precision)")
    if requested not in (None, graph):
        raise ConfigError(f"the graph is already {graph} (metaerr-edge quantize): TensorRT builds it as it is, strongly "
                          f"typed; drop precision={requested!r}, or build from the FP32 graph")
    if graph == "int8" and int8_target != "tensorrt":
        raise ConfigError("this INT8 graph has asymmetric activations (quantized for ONNX Runtime); TensorRT reads "
                          "symmetric Q/DQ only. Quantize for it: metaerr-edge quantize model.onnx --int8 --target "
                          "tensorrt --run RUN")
    return f"{graph}-typed", "strong"


def strongly_typed_flags(trt: Any, major: int) -> int:
    """``create_network`` flags of a strongly typed network: the STRONGLY_TYPED bit on 10.x; none on 11.x,
    where every network is strongly typed."""
    if major >= 11:
        return 0
    return 1 << int(getattr(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED, "value",
                            trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def trt_dtype_to_numpy(dtype: Any) -> np.dtype:
    """Map a ``tensorrt.DataType`` (by member name) to a numpy dtype; BOOL -> bool (1 byte)."""
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    if name not in _NUMPY_BY_TRT_NAME:
        raise ContractError(
            f"TensorRT I/O dtype {name} has no numpy equivalent here; expected one of {list(_NUMPY_BY_TRT_NAME)}"
        )
    return np.dtype(_NUMPY_BY_TRT_NAME[name])


def profile_shapes(input_shape: tuple[int, ...], min_batch: int, opt_batch: int,
                   max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes for the optimization profile from the network's input shape.

    Raises:
        ConfigError: batches not ordered 1 <= min <= opt <= max, a static batch that the profile
            would change, or a dynamic non-batch dimension.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}/{opt_batch}/{max_batch}")
    batch, *rest = (int(d) for d in input_shape)
    if any(d < 1 for d in rest):
        raise ConfigError(f"the ONNX input shape {tuple(input_shape)} is dynamic beyond the batch axis; re-export it")
    if batch > 0 and (min_batch, max_batch) != (batch, batch):
        raise ConfigError(f"the ONNX input has a fixed batch of {batch}; re-export it with a dynamic batch axis")
    return tuple([min_batch, *rest]), tuple([opt_batch, *rest]), tuple([max_batch, *rest])


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine is tied to; ``digest()`` names its cache files."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str  #: e.g. "fp32", "fp16" (builder flag), "fp16-typed" / "int8-typed" (the graph's own)
    min_batch: int
    opt_batch: int
    max_batch: int
    platform: str = f"{platform.system()}-{platform.machine()}"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def write_sidecar(sidecar: Path, key: EngineKey, plan: Path) -> None:
    """Record the key and the plan's sha256 next to the plan."""
    atomic_write_bytes(sidecar, json.dumps({"key": asdict(key), "plan_sha256": file_sha256(plan)}, sort_keys=True).encode())


def sidecar_matches(sidecar: Path, key: EngineKey, plan: Path) -> bool:
    """True only if the plan exists and its sidecar records this exact key and the plan's sha256."""
    try:
        recorded = json.loads(sidecar.read_text())
        return recorded["key"] == asdict(key) and plan.is_file() and recorded["plan_sha256"] == file_sha256(plan)
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------- TensorRT-specific (never run here)
def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not importable ({exc}). {INSTALL_HINT}") from exc
    check_version(trt.__version__)
    return trt


_LOGGERS: dict[int, Any] = {}


def _trt_logger(trt: Any) -> Any:
    """One logger per process (TensorRT objects keep a reference to it; it must outlive them)."""
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def network_has_fp16(trt: Any, network: Any) -> bool:
    """True if any network input or layer output is HALF (a strongly typed FP16 ONNX)."""
    half = trt.DataType.HALF
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    return any(t.dtype == half for t in tensors)


def _build_plan(trt: Any, onnx_bytes: bytes, onnx_path: Path, key: EngineKey, workspace_bytes: int,
                timing_cache: Path, kind: str = "weak") -> Any:
    log = _trt_logger(trt)
    major = trt_major(trt.__version__)
    builder = trt.Builder(log)
    network = builder.create_network(strongly_typed_flags(trt, major) if kind == "strong" else network_flags(major))
    parser = trt.OnnxParser(network, log)
    # The bytes whose sha256 is the cache key, not the file again: a file rewritten in between
    # would otherwise be built under the old key. (The path only locates external weights.)
    if not parser.parse(onnx_bytes, str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ContractError(f"TensorRT {trt.__version__}'s ONNX parser rejected {onnx_path}: {errors}")
    if network.num_inputs != 1:
        raise ContractError(f"{onnx_path}: expected one input, the network has {network.num_inputs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if kind == "weak" and fp16_mode(major, key.precision,
                                     key.precision == "fp16" and network_has_fp16(trt, network)) == "flag":
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, *profile_shapes(tuple(inp.shape), key.min_batch, key.opt_batch, key.max_batch))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, False):
        logger.warning("timing cache %s does not match this TensorRT/GPU; starting a fresh one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendUnavailable(f"TensorRT could not build an engine from {onnx_path}; see its log above")
    atomic_write_bytes(timing_cache, config.get_timing_cache().serialize())
    return plan


def build_engine(onnx_path: str | os.PathLike[str], *, precision: str | None = None, min_batch: int = 1,
                 opt_batch: int = 1, max_batch: int = 32, workspace_bytes: int = 1 << 30,
                 timing_cache_path: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, device_id: int = 0,
                 memory: str = "auto") -> Path:
    """Build a TensorRT engine for the fused ONNX, or reuse a matching cached one.

    The file is read once: its contract is checked against its graph, and the same bytes are
    hashed into the cache key and handed to TensorRT's parser. ``precision`` (None: the graph's
    own) may be "fp16" for an FP32 graph; a reduced graph is built as it is (:func:`build_mode`).

    Returns:
        The path of the serialized engine (``<cache_dir>/<key>.plan``).

    Example:
        >>> plan = build_engine("fused.onnx", precision="fp16", max_batch=64)
    """
    trt = _import_tensorrt()
    onnx_path = Path(onnx_path)
    data, contract = load_model_file(onnx_path)
    return _engine_for(trt, data, onnx_path, contract.precision, precision=precision, min_batch=min_batch,
                       opt_batch=opt_batch,
                       max_batch=max_batch, workspace_bytes=workspace_bytes, timing_cache_path=timing_cache_path,
                       cache_dir=cache_dir, device_id=device_id, memory=memory)


def _engine_for(trt: Any, data: bytes, onnx_path: Path, graph: dict[str, Any], *, precision: str | None,
                min_batch: int, opt_batch: int,
                max_batch: int, workspace_bytes: int, timing_cache_path: str | os.PathLike[str] | None,
                cache_dir: str | os.PathLike[str] | None, device_id: int, memory: str) -> Path:
    """:func:`build_engine` for model bytes already read and checked."""
    mem = _memory(memory, int(device_id))
    gpu_name, cc = mem.gpu()
    major = trt_major(trt.__version__)
    engine_precision, kind = build_mode(major, str(graph.get("name", "fp32")), precision, graph.get("target"))
    if kind == "weak":
        fp16_mode(major, engine_precision, True)  # reject unknown precision before hashing
    key = EngineKey(hashlib.sha256(data).hexdigest(), trt.__version__, gpu_name, cc, engine_precision, min_batch,
                    opt_batch, max_batch)
    cache = Path(cache_dir) if cache_dir is not None else package_cache_dir("tensorrt")
    plan_path, sidecar = cache / f"{key.digest()}.plan", cache / f"{key.digest()}.json"
    if sidecar_matches(sidecar, key, plan_path):
        return plan_path
    if plan_path.exists():
        logger.warning("engine %s does not match its sidecar (stale or foreign); rebuilding", plan_path)
    gpu_tag = hashlib.sha256(gpu_name.encode()).hexdigest()[:8]
    timing = cache / f"timing-{key.trt_version}-{gpu_tag}-sm{cc}.cache"
    if timing_cache_path:
        timing = Path(timing_cache_path)
    logger.info("building TensorRT engine %s (%s, batch %d/%d/%d)", plan_path.name, engine_precision,
                min_batch, opt_batch, max_batch)
    with mem.activate():
        atomic_write_bytes(plan_path, _build_plan(trt, data, onnx_path, key, workspace_bytes, timing, kind))
    write_sidecar(sidecar, key, plan_path)
    return plan_path


@register_backend("tensorrt", auto_priority=0)
class TensorRTBackend(Backend):
    """A cached TensorRT engine of the fused graph; one execution context and stream per thread.

    Example:
        >>> s = open_session("fused.onnx", backend="tensorrt", precision="fp16", max_batch=64)
    """

    install_hint = INSTALL_HINT

    @classmethod
    def open(cls, model: Any, *, precision: str | None = None, min_batch: int = 1, opt_batch: int = 1,
             max_batch: int = 32, workspace_bytes: int = 1 << 30, cache_dir: str | None = None,
             timing_cache_path: str | None = None, device_id: int = 0, memory: str = "auto") -> "TensorRTBackend":
        if not isinstance(model, (str, Path)) or not Path(model).is_file():
            raise ConfigError(f"the tensorrt backend opens a fused .onnx file path, got {type(model).__name__} "
                              f"{str(model)[:80]!r}; for a FusedModel or a run folder use backend='torch'")
        trt = _import_tensorrt()  # the cheapest failure first, so auto mode moves on at once
        mem = _memory(memory, int(device_id))
        data, contract = load_model_file(model)  # one read: checked, hashed and parsed
        opts: dict[str, Any] = dict(
            precision=precision, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
            workspace_bytes=workspace_bytes, timing_cache_path=timing_cache_path, cache_dir=cache_dir,
            device_id=device_id, memory=memory,
        )
        plan = _engine_for(trt, data, Path(model), contract.precision, **opts)
        with mem.activate():
            runtime = trt.Runtime(_trt_logger(trt))
            engine = runtime.deserialize_cuda_engine(plan.read_bytes())
            if engine is None:  # unreadable despite a matching sidecar: drop it and rebuild once
                logger.warning("TensorRT could not deserialize %s; rebuilding it", plan)
                for p in (plan, plan.with_suffix(".json")):
                    p.unlink(missing_ok=True)
                engine = runtime.deserialize_cuda_engine(
                    _engine_for(trt, data, Path(model), contract.precision, **opts).read_bytes())
        if engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} cannot deserialize the engine it built ({plan})")
        shown = build_mode(trt_major(trt.__version__), contract.precision_name, precision,
                           contract.precision.get("target"))[0]
        return cls(trt, mem, runtime, engine, contract, shown, max_batch)

    def __init__(self, trt: Any, mem: Any, runtime: Any, engine: Any, contract: Any, precision: str,
                 max_batch: int) -> None:
        self._mem, self._runtime, self._engine = mem, runtime, engine
        self.contract, self.max_batch = contract, int(max_batch)
        gpu_name, cc = mem.gpu()
        self.device = f"cuda:{mem.device_id} ({gpu_name}, sm {cc})"
        self.providers = (f"TensorRT {trt.__version__} ({precision}, memory={type(mem).__name__})",)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = {n: trt_dtype_to_numpy(engine.get_tensor_dtype(n)) for n in names if n not in inputs}
        if inputs != [contract.input.name] or not set(OUTPUT_NAMES) <= set(self._outputs):
            raise ContractError(f"engine I/O {names} does not match the contract (input {contract.input.name!r}, "
                                f"outputs {list(OUTPUT_NAMES)}); re-export the model")
        self._local = threading.local()
        self._states: list[tuple[Any, Any, int]] = []  # keeps every thread's context alive until close()
        self._lock = threading.Lock()

    def _thread_state(self) -> tuple[Any, Any, int]:
        state = getattr(self._local, "state", None)
        if state is None:
            with self._mem.activate():
                context = self._engine.create_execution_context()
                if context is None:
                    raise BackendUnavailable("TensorRT could not create an execution context (out of GPU memory?)")
                state = (context, *self._mem.new_stream())
            self._local.state = state
            with self._lock:
                self._states.append(state)
        return state

    def run(self, images: np.ndarray) -> Outputs:
        context, stream, handle = self._thread_state()
        mem, name = self._mem, self.contract.input.name
        allocated: list[Any] = []
        with mem.activate():
            try:
                if not context.set_input_shape(name, tuple(images.shape)):
                    raise ContractError(f"TensorRT rejected input shape {images.shape} for {name!r}")
                ptr, buf = mem.upload(images, stream)
                allocated.append(buf)
                context.set_tensor_address(name, ptr)
                outs = {}
                for out, dtype in self._outputs.items():  # every output needs an address, used or not
                    ptr, outs[out] = mem.empty(tuple(context.get_tensor_shape(out)), dtype, stream)
                    allocated.append(outs[out])
                    context.set_tensor_address(out, ptr)
                if not context.execute_async_v3(handle):
                    raise BackendUnavailable("TensorRT execute_async_v3 failed; see the TensorRT log")
                host = {out: mem.download(buf, stream) for out, buf in outs.items()}
                mem.synchronize(stream)
            finally:
                for buf in allocated:
                    mem.free(buf)
        label, probs, score, defer = (host[n] for n in OUTPUT_NAMES)
        return label, probs, score, defer

    def close(self) -> None:
        with self._lock:
            self._states.clear()  # contexts go before the engine, the engine before the runtime
        self._local = threading.local()
        self._engine = self._runtime = None


def _memory(memory: str, device_id: int) -> Any:
    return cuda_memory(memory, device_id)
