"""Device memory for the TensorRT backend: PyTorch CUDA tensors (default) or cuda-python.

NOT RUN on the machines this was written on (no GPU). Both providers offer the same small interface:
``gpu() -> (name, compute capability)``, ``activate()``, ``new_stream() -> (stream, handle)``,
``upload``, ``empty``, ``download``, ``synchronize``, ``free``. pycuda is deliberately not offered:
its contexts bind to the thread that created them, and sessions are used from many threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from metaerr_edge.errors import BackendUnavailable, ConfigError


class TorchMemory:
    """Device buffers as PyTorch CUDA tensors (caching allocator) on the calling thread's stream."""

    def __init__(self, device_id: int) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"memory='torch' needs PyTorch ({exc}); or use memory='cuda-python'") from exc
        if not torch.cuda.is_available() or torch.cuda.device_count() <= device_id:
            raise BackendUnavailable(f"needs an NVIDIA GPU with CUDA (cuda:{device_id}); torch.cuda.is_available() "
                                     f"is {torch.cuda.is_available()}, {torch.cuda.device_count()} device(s)")
        self.torch, self.device_id, self.dev = torch, device_id, torch.device("cuda", device_id)

    def gpu(self) -> tuple[str, str]:
        major, minor = self.torch.cuda.get_device_capability(self.dev)
        return self.torch.cuda.get_device_name(self.dev), f"{major}.{minor}"

    def activate(self) -> Any:
        return self.torch.cuda.device(self.dev)

    def new_stream(self) -> tuple[Any, int]:
        stream = self.torch.cuda.Stream(self.dev)
        return stream, int(stream.cuda_stream)

    def upload(self, host: np.ndarray, stream: Any) -> tuple[int, Any]:
        with self.torch.cuda.stream(stream):
            t = self.torch.from_numpy(host if host.flags.writeable else host.copy()).to(self.dev, non_blocking=True)
        return t.data_ptr(), t

    def empty(self, shape: tuple[int, ...], dtype: np.dtype, stream: Any) -> tuple[int, Any]:
        with self.torch.cuda.stream(stream):
            t = self.torch.empty(shape, dtype=self.torch.from_numpy(np.empty(0, dtype)).dtype, device=self.dev)
        return t.data_ptr(), t

    def download(self, buf: Any, stream: Any) -> np.ndarray:
        with self.torch.cuda.stream(stream):
            return np.asarray(buf.cpu().numpy())  # ordered after the engine on this stream, and waits for it

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def free(self, buf: Any) -> None:
        """Nothing to do: the caching allocator takes the tensor back when it is dropped."""


class CudaPythonMemory:
    """Device buffers from cuda-python's runtime API (cudaMalloc, cudaMemcpyAsync, a stream)."""

    def __init__(self, device_id: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as exc:
                raise BackendUnavailable(f"memory='cuda-python' needs: pip install cuda-python ({exc})") from exc
        self.rt, self.device_id = cudart, device_id
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count <= device_id:
            raise BackendUnavailable(
                f"needs an NVIDIA GPU with CUDA (cuda:{device_id}); cudaGetDeviceCount: {err}, {count}"
            )

    def _ok(self, result: tuple[Any, ...]) -> Any:
        if result[0] != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailable(f"CUDA runtime error {result[0]}")
        return result[1] if len(result) == 2 else None

    def gpu(self) -> tuple[str, str]:
        prop = self._ok(self.rt.cudaGetDeviceProperties(self.device_id))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return name.rstrip("\x00"), f"{prop.major}.{prop.minor}"

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._ok(self.rt.cudaSetDevice(self.device_id))
        yield

    def new_stream(self) -> tuple[Any, int]:
        stream = self._ok(self.rt.cudaStreamCreate())
        return stream, int(stream)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype, stream: Any) -> tuple[int, Any]:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self._ok(self.rt.cudaMalloc(max(1, nbytes))))
        return ptr, (ptr, shape, np.dtype(dtype))

    def upload(self, host: np.ndarray, stream: Any) -> tuple[int, Any]:
        ptr, buf = self.empty(host.shape, host.dtype, stream)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream))
        return ptr, buf

    def download(self, buf: Any, stream: Any) -> np.ndarray:
        ptr, shape, dtype = buf
        out = np.empty(shape, dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind, stream))
        return out  # valid after synchronize()

    def synchronize(self, stream: Any) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream))

    def free(self, buf: Any) -> None:
        self._ok(self.rt.cudaFree(buf[0]))


MEMORY_PROVIDERS: dict[str, Any] = {"torch": TorchMemory, "cuda-python": CudaPythonMemory}


def cuda_memory(memory: str, device_id: int) -> Any:
    """The memory provider named ``memory`` on GPU ``device_id`` (raises BackendUnavailable without CUDA).

    ``"auto"`` takes cuda-python when it is importable (no torch needed on the device), else torch.
    """
    if memory == "auto":
        import importlib.util

        has_cuda_python = importlib.util.find_spec("cuda") is not None
        memory = "cuda-python" if has_cuda_python else "torch"
    if memory not in MEMORY_PROVIDERS:
        raise ConfigError(f"memory must be 'auto' or one of {list(MEMORY_PROVIDERS)}, got {memory!r}")
    return MEMORY_PROVIDERS[memory](device_id)
