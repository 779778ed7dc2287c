"""The ``"torch"`` backend: the FusedModel itself in PyTorch eager mode, on CPU or CUDA.

It is the parity reference for the exported graph (same module, no export in between). An .onnx
file holds no PyTorch module, so this backend opens a ``FusedModel`` with its
:class:`~metaerr_edge.contract.spec.Contract`, or a run folder through the run opener the training
package registers (:func:`register_run_opener`; the runtime never imports ``metaerr_edge.pipeline``).
torch is imported inside :meth:`TorchBackend.open` only.

CUDA graphs (``cuda_graph_batch_sizes=(1, 8)``, CUDA only; never run on the machines this was
written on): each listed batch size is captured once (:func:`~metaerr_edge.runtime.cuda_graphs.capture_cuda_graph`)
into static input/output buffers and replayed for inputs of exactly that size (other sizes run
eagerly). Replays share those buffers, so they are serialized by a lock.

Example:
    >>> s = open_session(fused, backend="torch", contract=contract, device="cpu")
    >>> s = open_session(run.fused(t), backend="torch", contract=run.contract())   # a run, opened by the caller
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.errors import BackendUnavailable, ConfigError, MissingDependency, require
from metaerr_edge.contract.spec import Contract, validate_contract
from metaerr_edge.runtime.cuda_graphs import capture_cuda_graph
from metaerr_edge.runtime.session import Backend, Outputs, register_backend

THRESHOLD_ATOL = 1e-6


def _import_torch() -> Any:
    try:
        return require("torch", "metaerr-edge[train]", "the torch backend")
    except MissingDependency as exc:
        raise BackendUnavailable(f"{exc}. {TorchBackend.install_hint}") from exc


#: ``opener(path) -> run``: how a run folder is opened (``run.contract()``, ``run.fused(threshold)``).
_run_opener: Callable[[Path], Any] | None = None


def register_run_opener(opener: Callable[[Path], Any] | None) -> Callable[[Path], Any] | None:
    """Let the torch backend open run folders with ``opener(path)``; return the opener it replaces.

    The opened run must have ``contract()`` and ``fused(threshold)``. The training package
    registers ``metaerr_edge.pipeline.load_run`` when it is imported, so the runtime stays free of
    it; ``None`` unregisters.

    Example:
        >>> from metaerr_edge.pipeline import load_run
        >>> register_run_opener(load_run)   # what importing metaerr_edge.pipeline does
        >>> s = open_session("runs/fashion-mnist/", backend="torch")
    """
    global _run_opener
    previous, _run_opener = _run_opener, opener
    return previous


def _open_run(path: Path, threshold: float | None) -> tuple[Any, Contract]:
    if _run_opener is None:
        raise BackendUnavailable(
            f"opening the run folder {str(path)!r} needs the training package's run opener, which is not "
            "registered here: import metaerr_edge.pipeline first (pip install 'metaerr-edge[train]'), or "
            "pass run.fused(threshold) with contract=run.contract()"
        )
    run = _run_opener(path)
    contract = run.contract()
    value = contract.threshold.value if threshold is None else float(threshold)
    return run.fused(value), contract


@register_backend("torch")
class TorchBackend(Backend):
    """PyTorch eager execution of a FusedModel (a deep copy, set to eval, moved to ``device``).

    Example:
        >>> s = open_session(fused, backend="torch", contract=contract, device="cuda", cuda_graph_batch_sizes=(1,))
        >>> s = open_session("runs/fashion-mnist/", backend="torch")   # a run folder: register_run_opener
    """

    install_hint = "Install PyTorch with: pip install 'metaerr-edge[train]'"

    def __init__(self, torch: Any, model: Any, contract: Contract, device: Any,
                 cuda_graph_batch_sizes: tuple[int, ...]) -> None:
        self._torch = torch
        self._model = model
        self._dev = device
        self.contract = contract
        self.device = str(device)
        self.providers = (f"torch {torch.__version__}",)
        self.max_batch = None
        self._graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}
        self._graph_lock = threading.Lock()
        for n in cuda_graph_batch_sizes:
            self._graphs[int(n)] = self._capture(int(n))

    @classmethod
    def open(cls, model: Any, *, contract: Contract | None = None, device: str = "cpu",
             threshold: float | None = None, cuda_graph_batch_sizes: tuple[int, ...] = ()) -> "TorchBackend":
        """Open a FusedModel (with ``contract``) or a run folder path.

        Raises:
            ConfigError: an .onnx path, a missing contract, or a model threshold that disagrees
                with the contract's (decisions would differ from the exported graph's);
                ``threshold=`` sets both the module's and the contract's threshold.
            BackendUnavailable: torch is missing, CUDA was asked for and is not available, or a
                run folder was passed where no run opener is registered (:func:`register_run_opener`).
        """
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_dir():
                raise ConfigError(
                    f"the torch backend cannot open {str(path)!r}: an .onnx file holds no PyTorch module. "
                    "Pass the FusedModel with contract=..., or a run folder; run .onnx files with "
                    "backend='onnxruntime' or 'auto'"
                )
            if contract is not None:
                raise ConfigError("a run folder carries its own contract; do not pass contract=")
            torch = _import_torch()
            model, contract = _open_run(path, threshold)
        else:
            torch = _import_torch()
            if not isinstance(model, torch.nn.Module):
                raise ConfigError(f"the torch backend takes a FusedModel or a run folder, got {type(model).__name__}")
            if not isinstance(contract, Contract):
                raise ConfigError(
                    "open_session(fused_model, backend='torch') needs contract=<Contract>, "
                    f"got {type(contract).__name__}"
                )
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r} ({exc})") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"device {device!r} requested but torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device='cpu' or a CUDA build of PyTorch on an NVIDIA GPU"
            )
        if cuda_graph_batch_sizes and dev.type != "cuda":
            raise ConfigError("cuda_graph_batch_sizes needs device='cuda'")
        if threshold is not None:
            contract = contract.with_threshold(replace(contract.threshold, value=float(threshold)))
        validate_contract(contract, "the torch backend's contract")
        model = copy.deepcopy(model).eval().to(dev)
        _check_threshold(model, contract, override=threshold is not None)
        return cls(torch, model, contract, dev, tuple(cuda_graph_batch_sizes))

    def run(self, images: np.ndarray) -> Outputs:
        torch = self._torch
        graph = self._graphs.get(images.shape[0])
        with torch.inference_mode():
            x = torch.from_numpy(images if images.flags.writeable else images.copy())
            if graph is not None:
                with self._graph_lock:
                    g, static_in, static_out = graph
                    static_in.copy_(x)
                    g.replay()
                    outs = [o.cpu() for o in static_out]  # synchronous copy: the buffers are free after
            else:
                outs = [o.cpu() for o in self._model(x.to(self._dev))]
        label, probs, score, defer = (o.numpy() for o in outs)
        return label, probs, score, defer

    def _capture(self, n: int) -> tuple[Any, Any, tuple[Any, ...]]:
        torch = self._torch
        spec = self.contract.input
        static_in = torch.full((n, *spec.shape[1:]), spec.value_range[0], dtype=getattr(torch, spec.dtype),
                               device=self._dev)
        graph, static_out = capture_cuda_graph(self._model, static_in)
        return graph, static_in, tuple(static_out)

    def close(self) -> None:
        self._graphs.clear()
        self._model = None


def _check_threshold(model: Any, contract: Contract, override: bool) -> None:
    """Make the module defer exactly where the contract says (or adopt an explicit override)."""
    buf = getattr(model, "defer_threshold", None)
    if buf is None:
        return
    if override:
        buf.fill_(contract.threshold.value)
    elif abs(float(buf) - contract.threshold.value) > THRESHOLD_ATOL:
        raise ConfigError(
            f"the model defers at threshold {float(buf)} but its contract says {contract.threshold.value}; "
            "decisions would differ from the exported graph. Pass the matching contract, or threshold=... "
            "to set both"
        )
