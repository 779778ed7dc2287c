"""What a benchmark ran on: versions, CPU/board, core and thread settings (recorded in every bench JSON).

Versions come from installed package metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np

_PACKAGES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "torchvision",
    "tensorrt",
    "onnx",
    "cuda-python",
    "pycuda",
    "metaerr-edge",
)
_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "TORCH_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
)



def environment() -> dict[str, Any]:
    """What a reader needs to trust a number: versions, CPU, threads, GPU. No hostname.

    Package versions come from installed metadata (nothing is imported); the GPU is reported
    only when torch is already imported and sees CUDA.

    Example:
        >>> env = environment()
        >>> env["packages"]["numpy"] == np.__version__
        True
    """
    env: dict[str, Any] = {
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: _dist_version(name) for name in _PACKAGES},
        "cpu_model": _cpu_model(),
        "device_model": _device_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "thread_env": {name: os.environ.get(name) for name in _THREAD_ENV},
        "perf_counter_resolution_s": time.get_clock_info("perf_counter").resolution,
        "gpu": None,
    }
    env["packages"]["numpy"] = np.__version__
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            env["torch_num_threads"] = torch.get_num_threads()
            if torch.cuda.is_available():
                idx = torch.cuda.current_device()
                props = torch.cuda.get_device_properties(idx)
                env["gpu"] = {
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "count": torch.cuda.device_count(),
                    "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(),
                }
        except Exception as exc:  # a broken CUDA setup must not lose the benchmark
            env["gpu"] = {"error": f"{type(exc).__name__}: {exc}"}
    return env


# --- helpers -------------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        module = sys.modules.get(name.replace("-", "_"))  # e.g. JetPack's TensorRT, no metadata
        return getattr(module, "__version__", None) if module is not None else None


_CPU_KEYS = ("model name", "Model", "Hardware", "cpu model")  # x86, ARM boards, MIPS


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in _CPU_KEYS and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _device_model() -> str | None:
    """Board name from the device tree (e.g. 'NVIDIA Jetson Orin Nano'); None elsewhere."""
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip("\x00\n ") or None
    except OSError:
        return None
