"""One Session API over every runtime: a backend registry, ``open_session`` and ``Prediction``.

A backend is a small class (one module each: :mod:`.ort_backend`, :mod:`.trt_backend`,
:mod:`.torch_backend`) registered with :func:`register_backend`; the registry is the only list of
backends. Backend modules import their heavy library (onnxruntime, tensorrt, torch) inside
``open`` only, so importing this package stays cheap.

``backend="auto"`` tries the registered backends that take part in auto selection, in priority
order (tensorrt -> onnxruntime-cuda -> onnxruntime), logs every failure at WARNING and keeps it in
:attr:`Session.fallback_report`: a fallback is never silent.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from metaerr_edge.errors import BackendUnavailable, ConfigError, ContractError, UnknownName
from metaerr_edge.contract.spec import Contract
from metaerr_edge.registry import Registry
from metaerr_edge.runtime.validate import validate_images

logger = logging.getLogger("metaerr_edge.runtime")

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Prediction:
    """The fused graph's answer for a batch of N images (arrays are read-only).

    Attributes:
        label: int64 [N], the base classifier's predicted class index.
        probs: float32 [N, K], the base classifier's softmax probabilities.
        failure_score: float32 [N] in [0, 1]; higher = more likely wrong.
        defer: bool [N], ``failure_score > threshold`` at the contract's calibrated threshold.
        classes: the contract's class names (for :attr:`class_names`).

    Example:
        >>> pred = session.predict(images)
        >>> [(n, bool(d)) for n, d in zip(pred.class_names, pred.defer)]
    """

    label: np.ndarray
    probs: np.ndarray
    failure_score: np.ndarray
    defer: np.ndarray
    classes: tuple[str, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def class_names(self) -> list[str]:
        """The predicted class name of every image (needs ``classes``)."""
        if not self.classes:
            raise ConfigError("this Prediction carries no class names; index your own list with .label")
        return [self.classes[int(i)] for i in self.label]


class Backend(abc.ABC):
    """What every runtime implements: open once (expensive), run many times (cheap, thread-safe).

    Subclasses set ``contract``, ``providers``, ``device`` and ``max_batch`` in ``open`` and raise
    :class:`BackendUnavailable` (with the reason and the install hint) when they cannot run here.
    """

    name: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""
    contract: Contract
    providers: tuple[str, ...] = ()
    device: str = "cpu"
    max_batch: int | None = None
    #: ``open(model, *, <keyword-only options>) -> Backend``, a classmethod in every subclass: load
    #: ``model`` (a path, or a FusedModel for torch). Its keyword-only parameters are the options
    #: ``open_session`` routes to this backend.
    open: ClassVar[Callable[..., "Backend"]]

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> Outputs:
        """Run validated, contiguous images; return (label, probs, failure_score, defer)."""

    def close(self) -> None:
        """Release the runtime's resources; the default has nothing to release."""


#: The runtime backends: each entry is a Backend class, opened with ``cls.open(model, **options)``;
#: its metadata ``auto_priority`` is its place in ``auto`` (None = never tried by auto).
BACKENDS: Registry[type[Backend]] = Registry("backend", positional=1, factory=lambda cls: cls.open, name_attr="name")
B = TypeVar("B", bound=type[Backend])


def register_backend(name: str, *, auto_priority: int | None = None) -> Callable[[B], B]:
    """Class decorator adding a backend to the registry (the single list of backends).

    Example:
        >>> @register_backend("onnxruntime", auto_priority=20)
        ... class OrtCpuBackend(Backend): ...
    """
    return BACKENDS.register(name, auto_priority=auto_priority)


def available_backends() -> tuple[str, ...]:
    """Names of all registered backends (whether or not they can run here), auto order first."""
    return auto_order() + tuple(n for n in BACKENDS.available() if n not in auto_order())


def auto_order() -> tuple[str, ...]:
    """The backends ``backend="auto"`` tries, first choice first."""
    ranked = sorted((e.meta["auto_priority"], e.name) for e in BACKENDS.entries() if e.meta.get("auto_priority") is not None)
    return tuple(name for _, name in ranked)


class Session:
    """A loaded fused model on one backend: validate, run, answer with a :class:`Prediction`.

    ``predict`` is thread-safe; open one Session per model and share it between threads.

    Example:
        >>> with open_session("fused.onnx") as s:
        ...     pred = s.predict(images)            # images: float32 [N, C, H, W] in [0, 1]
        ...     print(s.backend, s.providers, s.fallback_report)
    """

    def __init__(self, backend: Backend, fallback_report: Sequence[tuple[str, str]] = ()) -> None:
        self._backend = backend
        self._closed = False
        self._lock = threading.Lock()
        self.fallback_report: tuple[tuple[str, str], ...] = tuple(fallback_report)

    @property
    def contract(self) -> Contract:
        """The model's contract, read from the file (or given with a FusedModel)."""
        return self._backend.contract

    @property
    def backend(self) -> str:
        """Registry name of the backend in use, e.g. ``"onnxruntime"``."""
        return self._backend.name

    @property
    def providers(self) -> tuple[str, ...]:
        """What actually runs the graph, e.g. ``("CPUExecutionProvider",)`` or ``("TensorRT 10.3.0 (fp16, ...)",)``."""
        return self._backend.providers

    @property
    def device(self) -> str:
        """The device in use, e.g. ``"cpu"`` or ``"cuda:0"``."""
        return self._backend.device

    @property
    def max_batch(self) -> int | None:
        """The largest batch the backend takes (a TensorRT profile's max), None when unbounded."""
        return self._backend.max_batch

    def predict(self, images: np.ndarray) -> Prediction:
        """Validate ``images`` against the contract, run them, and return the prediction.

        Raises:
            InputError: the images do not match the contract (the message says how to fix them).
        """
        if self._closed:
            raise BackendUnavailable(f"this {self.backend} session is closed; open a new one with open_session")
        x = validate_images(images, self.contract, max_batch=self.max_batch)
        return self._to_prediction(self._backend.run(x), x.shape[0])

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run every batch size once so first-call costs (allocation, tuning) happen now."""
        spec = self.contract.input
        for n in batch_sizes:
            self.predict(np.full((int(n), *spec.shape[1:]), spec.value_range[0], dtype=np.dtype(spec.dtype)))

    def close(self) -> None:
        """Release the backend; later ``predict`` calls raise :class:`BackendUnavailable`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._backend.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session(backend={self.backend!r}, device={self.device!r}, providers={list(self.providers)}, "
                f"classes={self.contract.num_classes}, closed={self._closed})")

    def _to_prediction(self, outputs: Outputs, n: int) -> Prediction:
        k = self.contract.num_classes
        label, probs, score, defer = (np.asarray(o) for o in outputs)
        got = (label.shape, probs.shape, score.reshape(-1).shape, defer.reshape(-1).shape)
        if got != ((n,), (n, k), (n,), (n,)):
            raise ContractError(
                f"the {self.backend} backend returned shapes {got}, expected {((n,), (n, k), (n,), (n,))} "
                "for label/probs/failure_score/defer; the graph does not match its contract. Re-export it."
            )
        arrays = (label.astype(np.int64, copy=False), probs.astype(np.float32, copy=False),
                  score.reshape(-1).astype(np.float32, copy=False), defer.reshape(-1).astype(bool, copy=False))
        for a in arrays:
            a.flags.writeable = False
        return Prediction(arrays[0], arrays[1], arrays[2], arrays[3], classes=self.contract.classes)


def _open_one(name: str, model: Any, options: Mapping[str, Any], strict: bool) -> Backend:
    """Open backend ``name``; an option it does not take is an error when ``strict``, else dropped."""
    accepted = BACKENDS.params(name)
    if not strict and accepted is not None:
        options = {k: v for k, v in options.items() if k in accepted}
    return BACKENDS.create(name, model, **options)


def open_session(model: Any, backend: str = "auto", *, warmup: Sequence[int] = (), **options: Any) -> Session:
    """Open a fused model on a backend and return a :class:`Session`.

    Args:
        model: path to the fused ``.onnx`` (carrying its contract); for ``backend="torch"`` also a
            ``FusedModel`` (pass ``contract=``) or a run folder (opened by the training package's
            run opener, registered when ``metaerr_edge.pipeline`` is imported: the runtime itself never
            imports training; without it, pass ``run.fused()`` with ``contract=run.contract()``).
        backend: a registered name (:func:`available_backends`) or ``"auto"``, which tries
            :func:`auto_order` and falls back, logging and recording every failure.
        warmup: batch sizes to run once right away (see :meth:`Session.warmup`).
        **options: backend options (e.g. ``intra_op_num_threads``, ``precision``, ``device``); in
            auto mode each backend gets the options it accepts, and an option none accepts is an error.

    Raises:
        BackendUnavailable: the backend asked for (or every auto candidate) cannot run here.
        ContractError: the file is unreadable or carries no valid contract.
        ConfigError: unknown backend name or option.

    Example:
        >>> s = open_session("fused.onnx")                      # best available backend
        >>> s = open_session("fused.onnx", backend="onnxruntime", intra_op_num_threads=2)
        >>> s = open_session(fused_model, backend="torch", contract=contract)
    """
    _check_model_path(model)
    if backend == "auto" and _is_torch_only(model):
        backend = "torch"
    if backend == "auto":
        session = _open_auto(model, options)
    elif backend in BACKENDS:
        session = Session(_open_one(backend, model, options, strict=True))
    else:
        raise UnknownName("backend", backend, ("auto", *available_backends()))
    if warmup:
        session.warmup(warmup)
    return session


def _open_auto(model: Any, options: Mapping[str, Any]) -> Session:
    """Try :func:`auto_order` in turn; log and record every backend that cannot run."""
    candidates = auto_order()
    accepted = [BACKENDS.params(n) for n in candidates]
    known = set().union(*(a for a in accepted if a is not None))
    if None not in accepted and set(options) - known:
        raise ConfigError(f"no auto backend takes options {sorted(set(options) - known)}; accepted: {sorted(known)}")
    report: list[tuple[str, str]] = []
    for name in candidates:
        try:
            backend = _open_one(name, model, options, strict=False)
        except BackendUnavailable as exc:
            report.append((name, str(exc)))
            logger.debug("backend %r unavailable, falling back: %s", name, exc)
            continue
        if report:
            logger.warning(fallback_summary(name, backend.providers, report))
        return Session(backend, report)
    raise BackendUnavailable("no backend could run this model: " + "; ".join(f"{n}: {r}" for n, r in report))


def fallback_summary(name: str, providers: Sequence[str], report: Sequence[tuple[str, str]]) -> str:
    """The one line ``backend="auto"`` logs after falling back: where it runs, what it skipped and why.

    Each reason is cut to its first sentence (the install hints are in ``Session.fallback_report``
    and, with ``--verbose``, in the debug log).

    Example:
        >>> fallback_summary("onnxruntime", ["CPUExecutionProvider"], [("tensorrt", "TensorRT is not importable. pip ...")])
        "running on backend 'onnxruntime' (CPUExecutionProvider) after 1 fallback: tensorrt (TensorRT is not importable); reasons in full: Session.fallback_report (CLI: --verbose)"
    """
    skipped = ", ".join(f"{n} ({r.split('. ')[0].rstrip('.')})" for n, r in report)
    plural = "s" if len(report) != 1 else ""
    return (f"running on backend {name!r} ({', '.join(providers)}) after {len(report)} fallback{plural}: {skipped}; "
            "reasons in full: Session.fallback_report (CLI: --verbose)")


def _check_model_path(model: Any) -> None:
    """A path must name a model file or a run folder: say which it is not, before any backend tries."""
    if not isinstance(model, (str, Path)):
        return
    path = Path(model)
    if not path.exists():
        raise ContractError(f"{path}: no such file; expected a fused .onnx written by `metaerr-edge export` "
                            "(or, for backend='torch', a run folder written by `metaerr-edge train`)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ContractError(f"{path} is a folder but not a run folder (no config.json in it); pass the fused "
                            ".onnx file, or a run folder written by `metaerr-edge train` for backend='torch'")


def _is_torch_only(model: Any) -> bool:
    """A FusedModel object or a run folder can only be opened by the torch backend."""
    if isinstance(model, (str, Path)):
        return Path(model).is_dir()
    return type(model).__module__.split(".")[0] != "builtins" and hasattr(model, "forward")
