"""ONNX Runtime backends: ``"onnxruntime"`` (CPU) and ``"onnxruntime-cuda"`` (CUDA provider).

onnxruntime is imported inside :func:`open_ort_inference_session` only. Providers are always passed
explicitly, and after the session is created the provider actually in use
(``session.get_providers()[0]``) is checked: ONNX Runtime silently falls back to CPU when the
CUDA/cuDNN libraries are missing, so a CUDA request that ends up on CPU raises
:class:`BackendUnavailable` instead of running slowly without a word.

Threads: each session gets its own ``intra_op_num_threads`` (default: the usable CPUs, at most
:data:`MAX_DEFAULT_THREADS`; several sessions on ORT's default thread pools oversubscribe cores)
and ``inter_op_num_threads=1`` with sequential execution. ``InferenceSession.run`` is thread-safe.

IO binding (``io_binding=True``, CUDA only; never run on the machines this was written on):
the input is bound from host memory and the outputs are bound on the device, then copied back
once, which avoids ORT's per-output staging copies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.errors import BackendUnavailable, ConfigError, ContractError, MissingDependency, require
from metaerr_edge.contract.spec import OUTPUT_NAMES, Contract
from metaerr_edge.contract.reader import load_model_file
from metaerr_edge.runtime.session import Backend, Outputs, register_backend

MAX_DEFAULT_THREADS = 8
MAX_THREADS = 1024
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def default_intra_op_threads() -> int:
    """The CPUs this process may use, capped at :data:`MAX_DEFAULT_THREADS`."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_DEFAULT_THREADS))


def _import_ort() -> Any:
    return require("onnxruntime", "metaerr-edge", "running the fused graph with ONNX Runtime")


def thread_option(value: Any, name: str, default: int) -> int:
    """A thread count for ONNX Runtime: None -> ``default``, else an integer from 1 to 1024.

    Raises:
        ConfigError: anything else (``-1``, ``"two"``, ``10**6``: ORT would hang starting a million threads).
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_THREADS:
        raise ConfigError(f"{name} must be an integer from 1 to {MAX_THREADS} (or None for {default}), got {value!r}")
    return int(value)


def emulates_qdq(contract: Contract) -> bool:
    """Whether a graph is checked with ONNX Runtime's graph optimisations off: an INT8 graph quantized for
    TensorRT, whose Q/DQ arithmetic (what TensorRT computes) differs from ONNX Runtime's fused x86 kernels."""
    return contract.precision_name == "int8" and contract.precision.get("target") == "tensorrt"


def open_ort_inference_session(
    model: Path | bytes,
    providers: list[Any],
    *,
    intra_op_num_threads: int | None = None,
    inter_op_num_threads: int = 1,
    optimize: bool = True,
    source: str | None = None,
) -> Any:
    """Create an ``onnxruntime.InferenceSession`` with explicit providers and thread counts.

    ``model`` is a path or the model's bytes (the bytes a caller already checked: see
    :func:`metaerr_edge.contract.reader.load_model_file`).

    Raises:
        ContractError: the file is missing, truncated or not an ONNX model.
        ConfigError: a thread count that is not an integer from 1 to 1024.

    Example:
        >>> sess = open_ort_inference_session(Path("fused.onnx"), ["CPUExecutionProvider"])
    """
    ort = _import_ort()
    source = source or str(model if isinstance(model, Path) else "the model bytes")
    if isinstance(model, Path) and not model.is_file():
        raise ContractError(f"model file {str(model)!r} does not exist (or is not a file)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_option(intra_op_num_threads, "intra_op_num_threads", default_intra_op_threads())
    opts.inter_op_num_threads = thread_option(inter_op_num_threads, "inter_op_num_threads", 1)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3  # errors only; fallbacks are reported by us, not by ORT's log
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                    providers=providers)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ContractError(f"{source}: ONNX Runtime cannot load this file ({type(exc).__name__}: {exc})") from exc


def check_session_interface(session: Any, contract: Contract, source: str) -> None:
    """ONNX Runtime's view of the graph (an ``InferenceSession``) must match the contract.

    Raises:
        ContractError: the session's input names are not ``[contract.input.name]``, or it lacks
            one of :data:`~metaerr_edge.contract.spec.OUTPUT_NAMES`.
    """
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [contract.input.name] or not set(OUTPUT_NAMES) <= set(outputs):
        raise ContractError(
            f"{source}: the graph's inputs {inputs} / outputs {outputs} do not match its contract "
            f"(input {contract.input.name!r}, outputs {list(OUTPUT_NAMES)}). Re-export the model."
        )


class _OrtBackend(Backend):
    """Shared implementation; subclasses choose the provider."""

    provider: str = CPU

    def __init__(self, sess: Any, contract: Contract, source: str, device: str, io_binding: bool,
                 device_id: int) -> None:
        self._sess = sess
        check_session_interface(sess, contract, source)
        self.contract = contract
        self.providers = tuple(sess.get_providers())
        self.device = device
        self.max_batch = None
        self._input = self.contract.input.name
        self._outputs = list(OUTPUT_NAMES)
        self._io_binding = io_binding
        self._device_id = device_id

    @classmethod
    def _open(cls, model: Any, providers: list[Any], threads: tuple[int | None, int], device: str,
              io_binding: bool = False, device_id: int = 0) -> "_OrtBackend":
        if not isinstance(model, (str, Path)) or Path(model).is_dir():
            raise ConfigError(
                f"the {cls.name} backend opens a fused .onnx file path, got {type(model).__name__} "
                f"{str(model)[:80]!r}; for a FusedModel or a run folder use backend='torch'"
            )
        try:
            ort = _import_ort()
        except MissingDependency as exc:
            raise BackendUnavailable(f"{exc}. {cls.install_hint}") from exc
        available = ort.get_available_providers()
        if cls.provider not in available:
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} has no {cls.provider} (available: {available}). {cls.install_hint}"
            )
        data, contract = load_model_file(model)  # one read: these bytes are checked, then run
        sess = open_ort_inference_session(
            data, providers, intra_op_num_threads=threads[0], inter_op_num_threads=threads[1], source=str(model)
        )
        active = sess.get_providers()[0]
        if active != cls.provider:
            raise BackendUnavailable(
                f"{cls.provider} was requested but ONNX Runtime is running on {active} (providers in use: "
                f"{sess.get_providers()}); usually the CUDA/cuDNN libraries matching onnxruntime-gpu "
                f"{ort.__version__} are missing. {cls.install_hint}"
            )
        return cls(sess, contract, str(model), device, io_binding, device_id)

    def run(self, images: np.ndarray) -> Outputs:
        try:
            if self._io_binding:
                return self._run_io_binding(images)
            label, probs, score, defer = self._sess.run(self._outputs, {self._input: images})
        except Exception as exc:  # ORT's own pybind errors (Fail, RuntimeException: out of memory, ...)
            reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"ONNX Runtime ({', '.join(self.providers)}) could not run a batch of "
                                     f"{len(images)}: {reason}. A smaller batch may fit in memory") from None
        return label, probs, score, defer

    def _run_io_binding(self, images: np.ndarray) -> Outputs:
        # CUDA only; never run here. One binding per call keeps it thread-safe.
        binding = self._sess.io_binding()
        binding.bind_cpu_input(self._input, images)
        for name in self._outputs:
            binding.bind_output(name, "cuda", self._device_id)
        self._sess.run_with_iobinding(binding)
        label, probs, score, defer = binding.copy_outputs_to_cpu()
        return label, probs, score, defer

    def close(self) -> None:
        self._sess = None


@register_backend("onnxruntime", auto_priority=20)
class OrtCpuBackend(_OrtBackend):
    """ONNX Runtime on CPU (the portable default and the last automatic fallback).

    Example:
        >>> s = open_session("fused.onnx", backend="onnxruntime", intra_op_num_threads=4)
    """

    provider = CPU
    install_hint = "Install it with: pip install onnxruntime"

    @classmethod
    def open(cls, model: Any, *, intra_op_num_threads: int | None = None,
             inter_op_num_threads: int = 1) -> "OrtCpuBackend":
        backend = cls._open(model, [CPU], (intra_op_num_threads, inter_op_num_threads), "cpu")
        return backend  # type: ignore[return-value]


@register_backend("onnxruntime-cuda", auto_priority=10)
class OrtCudaBackend(_OrtBackend):
    """ONNX Runtime with the CUDA execution provider (CPU kept only for ops CUDA lacks).

    Example:
        >>> s = open_session("fused.onnx", backend="onnxruntime-cuda", device_id=0, io_binding=True)
    """

    provider = CUDA
    install_hint = (
        "Install the GPU build with: pip uninstall onnxruntime && pip install onnxruntime-gpu "
        "(or pip install 'metaerr-edge[gpu]'), with CUDA and cuDNN versions matching it, "
        "on a machine with an NVIDIA GPU"
    )

    @classmethod
    def open(cls, model: Any, *, device_id: int = 0, io_binding: bool = False,
             intra_op_num_threads: int | None = None, inter_op_num_threads: int = 1) -> "OrtCudaBackend":
        providers = [(CUDA, {"device_id": int(device_id)}), CPU]
        backend = cls._open(model, providers, (intra_op_num_threads, inter_op_num_threads),
                            f"cuda:{int(device_id)}", io_binding, int(device_id))
        return backend  # type: ignore[return-value]
