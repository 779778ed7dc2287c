"""Run the fused graph on a device: one Session API over TensorRT, ONNX Runtime and PyTorch.

Importing this package imports numpy and the contract only: each backend imports its own heavy
library (onnxruntime, tensorrt, torch) when it is opened, and running on the onnxruntime backend
never imports torch, torchvision or onnx.

Example:
    >>> from metaerr_edge.runtime import load_images, open_session
    >>> with open_session("fused.onnx") as session:        # tensorrt -> onnxruntime-cuda -> onnxruntime
    ...     images, files = load_images(["camera/"], session.contract)
    ...     pred = session.predict(images)
    ...     print(session.backend, session.fallback_report, pred.class_names, pred.defer)
"""

from __future__ import annotations

# The backend modules register themselves (the registry is the only list of backends); importing
# them is cheap because their heavy imports live inside ``open``.
from metaerr_edge.runtime import ort_backend, torch_backend, trt_backend  # noqa: F401
from metaerr_edge.runtime.images import IMAGE_EXTENSIONS, find_images, load_images
from metaerr_edge.runtime.session import (
    Backend,
    Prediction,
    Session,
    auto_order,
    available_backends,
    open_session,
    register_backend,
)
from metaerr_edge.runtime.trt_backend import build_engine
from metaerr_edge.runtime.validate import validate_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "Backend",
    "Prediction",
    "Session",
    "auto_order",
    "available_backends",
    "build_engine",
    "find_images",
    "load_images",
    "open_session",
    "register_backend",
    "validate_images",
]
