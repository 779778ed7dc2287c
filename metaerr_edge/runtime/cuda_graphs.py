"""CUDA graphs for a torch module: capture once, replay without Python or launch overhead.

One capture routine for everything that replays a graph: the torch backend's
``cuda_graph_batch_sizes``, ``metaerr-edge bench --cuda-graphs`` and ``benchmarks/latency.py``.
It follows PyTorch's documented recipe (warm up on a side stream, then capture into a
``torch.cuda.CUDAGraph``); a replay reads the static input the graph was captured with and
overwrites the static outputs it returned. torch is imported inside the functions, so this module
imports on a device install without it. CUDA only; never run on the machines this was written on.

Example:
    >>> graph, static_out = capture_cuda_graph(model, static_in)   # static_in: a CUDA tensor
    >>> static_in.copy_(batch); graph.replay(); label = static_out[0].cpu()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Forward passes on the side stream before capture (lazy initialisation, cuDNN autotuning).
WARMUP_RUNS = 3


def capture_cuda_graph(module: Any, static_in: Any, warmup: int = WARMUP_RUNS) -> tuple[Any, Any]:
    """Capture ``module(static_in)`` as a CUDA graph; return ``(graph, static_out)``.

    ``static_in`` is a CUDA tensor on the module's device: copy each new batch into it, call
    ``graph.replay()``, then read ``static_out`` (the module's output, overwritten by every replay).

    Example:
        >>> graph, out = capture_cuda_graph(fused.cuda(), torch.zeros(8, 1, 28, 28, device="cuda"))
    """
    import torch

    dev = static_in.device
    with torch.inference_mode():
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                module(static_in)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_in)
    return graph, static_out


def device_call(module: Any, x: np.ndarray, graphed: bool = False) -> Callable[[], Any]:
    """A zero-argument call that only enqueues GPU work on ``x`` (copied to the module's device once).

    The eager forward under ``inference_mode``, or (``graphed``) the replay of a graph captured on
    that input: what CUDA events time as device compute, with no host<->device copy in it.

    Example:
        >>> stats = measure_device(device_call(gpu_model, images, graphed=True), config, batch_size=8)
    """
    import torch

    x_dev = torch.from_numpy(x).to(next(module.parameters()).device)
    if graphed:
        return capture_cuda_graph(module, x_dev)[0].replay

    def forward() -> Any:
        with torch.inference_mode():
            return module(x_dev)

    return forward
