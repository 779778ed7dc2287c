"""What ``metaerr-edge bench`` times: one :class:`Variant` per runtime backend of a fused .onnx.

:func:`open_variants` opens a session per backend (and, for torch on CUDA, the module itself for
device time and a CUDA-graph variant), refusing a torch model that disagrees with the file
(:func:`check_parity`); :func:`measure_variants` times them side by side per batch size
(:func:`~metaerr_edge.bench.interleave.measure_interleaved`) on one seeded input batch each
(:func:`~metaerr_edge.contract.spec.random_inputs`). torch is imported only for the torch backend.

Example:
    >>> with open_variants("fused.onnx", contract, ("onnxruntime",), (1, 8)) as variants:
    ...     results = measure_variants(variants, (1, 8), contract, TimingConfig(), rounds=5)
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.bench.interleave import measure_interleaved
from metaerr_edge.bench.report import BenchResult
from metaerr_edge.bench.timer import TimingConfig
from metaerr_edge.errors import ConfigError
from metaerr_edge.contract.spec import Contract, random_inputs

#: Largest parity gap between the torch model and the .onnx tolerated before refusing to compare them.
PARITY_ATOL = 1e-4
HOST_NOTE = ("wall time of Session.predict: input validation, host->device and device->host copies (GPU), "
             "the run and output conversion; the call returns host arrays, so it always waits for the device")


@dataclass
class Variant:
    """One thing to time: ``host(images)`` and, on CUDA, the torch module itself for device time.

    Example:
        >>> Variant("fused/onnxruntime", "onnxruntime", session.predict, notes={"device": "cpu"})
    """

    name: str
    backend: str
    host: Callable[[np.ndarray], Any]
    gpu_model: Any = None  # a torch module on the GPU: device time is taken on it (eager or graphed)
    graphed: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def thread_counts(threads: int | None) -> dict[str, Any]:
    """The threads each runtime uses for ``--threads threads`` (None: each library's default).

    Example:
        >>> thread_counts(2)["onnxruntime_intra_op"]
        2
    """
    from metaerr_edge.runtime.ort_backend import default_intra_op_threads

    counts: dict[str, Any] = {"requested": threads, "onnxruntime_intra_op": threads or default_intra_op_threads(),
                              "onnxruntime_inter_op": 1}
    torch = sys.modules.get("torch")  # reported where torch was used, never imported for it
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return counts


@contextmanager
def open_variants(model: str | Path, contract: Contract, backends: Sequence[str], batches: Sequence[int], *,
                  fused: Any = None, device: str = "cpu", cuda_graphs: bool = False,
                  threads: int | None = None, seed: int = 0) -> Iterator[list[Variant]]:
    """Open one session per backend on ``model`` (the torch backend on ``fused``); close them on exit.

    ``fused`` is the PyTorch FusedModel ``model`` was exported from (the caller opens its run);
    it must answer like the file (:func:`check_parity`, on ``seed``'s inputs). ``cuda_graphs``
    adds ``fused/torch+cudagraph``, captured for each of ``batches``.

    Raises:
        ConfigError: the torch backend without ``fused``, or a ``fused`` that disagrees with ``model``.
    """
    from metaerr_edge.runtime import open_session

    with ExitStack() as stack:
        variants: list[Variant] = []
        for name in backends:
            if name == "torch":
                if fused is None:
                    raise ConfigError("the torch backend needs the PyTorch model the .onnx was exported from")
                variants += _torch_variants(model, fused, contract, batches, device, cuda_graphs, threads, seed,
                                            stack)
                continue
            options = {"intra_op_num_threads": threads} if name.startswith("onnxruntime") and threads else {}
            session = stack.enter_context(open_session(model, backend=name, **options))
            notes = {"backend": session.backend, "providers": list(session.providers), "device": session.device,
                     "host_time": HOST_NOTE, "copies_included": session.device != "cpu", "cuda_graphs": False,
                     "spin_wait": "not configured (the runtime's default)", "device_time": None}
            if name.startswith("onnxruntime"):
                notes["intra_op_num_threads"] = threads or thread_counts(None)["onnxruntime_intra_op"]
            if session.device != "cpu":
                notes["device_time"] = f"not measured: {name} runs on its own CUDA stream; host time only"
            variants.append(Variant(f"fused/{name}", name, session.predict, notes=notes))
        yield variants


def model_tags(contracts: Sequence[Contract], models: Sequence[str | Path]) -> list[str]:
    """One short, unique tag per model for result names: its precision ("fp32", "int8", "fp16"); its
    file stem where two models share a precision; with a counter where stems repeat too.

    Example:
        >>> model_tags([fp32_contract, int8_contract], ["m.onnx", "m.int8.onnx"])
        ['fp32', 'int8']
    """
    names = [c.precision_name for c in contracts]
    tags = [n if names.count(n) == 1 else Path(m).stem for n, m in zip(names, models)]
    return [t if tags.count(t) == 1 else f"{t}-{tags[:i].count(t) + 1}" for i, t in enumerate(tags)]


@contextmanager
def open_model_variants(models: Sequence[str | Path], contracts: Sequence[Contract], backends: Sequence[str],
                        batches: Sequence[int], *, fused: Any = None, base_alone: bool = False,
                        device: str = "cpu", cuda_graphs: bool = False, threads: int | None = None,
                        seed: int = 0, tags: Sequence[str] | None = None,
                        ) -> Iterator[tuple[list[Variant], list[tuple[str, str]]]]:
    """:func:`open_variants` for several fused graphs of one model (e.g. FP32 and INT8), side by side.

    Yields (variants, pairs to report as ratios). With one model the names are ``fused/<backend>``
    (and ``base/<backend>``); with several, ``fused[<tag>]/<backend>`` (``tags``, else :func:`model_tags`).
    ``base_alone`` adds, on ONNX Runtime backends, the base half of each graph (its label and probs
    outputs extracted with onnx: preprocessing, base, softmax, argmax). The torch backend runs the
    run's FP32 model, so it is timed against the FP32 graphs only.

    Raises:
        ConfigError: graphs whose inputs differ (they would not take the same batch).
    """
    first = contracts[0].input
    for model, contract in zip(models[1:], contracts[1:]):
        if contract.input != first:
            raise ConfigError(f"{model} takes {contract.input.layout} {contract.input.dtype} "
                              f"{list(contract.input.shape)}, {models[0]} {first.layout} {first.dtype} "
                              f"{list(first.shape)}: bench compares graphs of one input (export them alike)")
    if tags is not None and (len(tags) != len(models) or len(set(tags)) != len(tags)):
        raise ConfigError(f"tags {list(tags)}: one unique tag per model ({len(models)} models)")
    tags = list(tags) if tags is not None else model_tags(contracts, models) if len(models) > 1 else [""]
    with ExitStack() as stack:
        variants: list[Variant] = []
        pairs: list[tuple[str, str]] = []
        for model, contract, tag in zip(models, contracts, tags):
            mine = [b for b in backends if b != "torch" or contract.precision_name == "fp32"]
            opened = stack.enter_context(open_variants(model, contract, mine, batches, fused=fused, device=device,
                                                       cuda_graphs=cuda_graphs, threads=threads, seed=seed))
            if base_alone:
                opened += [_base_variant(model, contract, b, threads) for b in mine if b.startswith("onnxruntime")]
            for v in opened:
                v.name = v.name.replace("fused/", f"fused[{tag}]/" if tag else "fused/", 1).replace(
                    "base/", f"base[{tag}]/" if tag else "base/", 1)
            variants += opened
        names = [v.name for v in variants]
        if len(models) == 1:
            pairs = [(n, names[0]) for n in names[1:] if n.startswith("fused")]
        else:  # every graph against the first one on the same backend, fused and base alike
            for n in names:
                kind, _, backend = n.partition("/")
                ref = f"{kind.split('[')[0]}[{tags[0]}]/{backend}"
                if n != ref and ref in names:
                    pairs.append((n, ref))
        for n in names:  # the price of the failure score: each fused graph against its own base
            if n.startswith("base"):
                pairs.append(("fused" + n[len("base"):], n))
        yield variants, pairs


def _base_variant(model: str | Path, contract: Contract, backend: str, threads: int | None) -> Variant:
    """The base half of a fused graph (outputs label and probs only) in an ONNX Runtime session; each
    call validates its input as ``Session.predict`` does, so the two compare like for like."""
    from metaerr_edge.errors import require

    onnx = require("onnx", "metaerr-edge[train]", "bench --base-alone (extracting the base from the fused graph)")
    from onnx.utils import Extractor

    from metaerr_edge.runtime.ort_backend import CPU, CUDA, open_ort_inference_session
    from metaerr_edge.runtime.validate import validate_images

    full = onnx.load(str(model))
    base = Extractor(full).extract_model([full.graph.input[0].name], ["label", "probs"])
    providers = [CPU] if backend == "onnxruntime" else [CUDA, CPU]
    session = open_ort_inference_session(base.SerializeToString(), providers, intra_op_num_threads=threads,
                                         source=f"the base half of {model}")
    name = session.get_inputs()[0].name
    on_gpu = backend != "onnxruntime"
    notes = {"backend": backend, "providers": list(session.get_providers()), "device": "cuda:0" if on_gpu else "cpu",
             "host_time": "wall time of the input validation of Session.predict, then InferenceSession.run on the "
                          "base half of the graph (outputs label, probs)",
             "copies_included": on_gpu, "cuda_graphs": False, "spin_wait": "not configured (the runtime's default)",
             "device_time": "not measured: host time only" if on_gpu else None,
             "intra_op_num_threads": threads or thread_counts(None)["onnxruntime_intra_op"]}
    return Variant(f"base/{backend}", backend, lambda x: session.run(None, {name: validate_images(x, contract)}),
                   notes=notes)


def _torch_variants(model: str | Path, fused: Any, contract: Contract, batches: Sequence[int], device: str,
                    cuda_graphs: bool, threads: int | None, seed: int, stack: ExitStack) -> list[Variant]:
    import torch

    from metaerr_edge.runtime import open_session

    if threads:
        torch.set_num_threads(threads)
    session = stack.enter_context(open_session(fused, backend="torch", contract=contract, device=device))
    check_parity(model, session, contract, seed)
    on_gpu = session.device.startswith("cuda")
    base_notes = {"backend": "torch", "providers": list(session.providers), "device": session.device,
                  "torch_num_threads": torch.get_num_threads(), "host_time": HOST_NOTE, "copies_included": on_gpu,
                  "spin_wait": ("not forced: torch's non-blocking CUDA events and .cpu() follow the CUDA default "
                                "scheduling (cudaDeviceScheduleAuto, spins while cores are free)") if on_gpu else "n/a (CPU)"}
    gpu_model = copy.deepcopy(fused).eval().to(session.device) if on_gpu else None
    variants = [Variant("fused/torch", "torch", session.predict, gpu_model, False, {
        **base_notes, "cuda_graphs": False,
        "device_time": "CUDA events around the eager forward on a device-resident input (copies excluded)" if on_gpu else None})]
    if cuda_graphs:
        graphed = stack.enter_context(open_session(fused, backend="torch", contract=contract, device=device,
                                                   cuda_graph_batch_sizes=tuple(batches)))
        variants.append(Variant("fused/torch+cudagraph", "torch", graphed.predict, gpu_model, True, {
            **base_notes, "cuda_graphs": True,
            "device_time": "CUDA events around the graph replay; the input is already in the graph's static buffer"}))
    return variants


def check_parity(model: str | Path, session: Any, contract: Contract, seed: int = 0) -> None:
    """Refuse to compare runtimes that run different models (a stale or wrong run).

    ``session`` (any backend) and ONNX Runtime on ``model`` must give the same labels and failure
    scores within :data:`PARITY_ATOL` on four seeded random inputs.

    Raises:
        ConfigError: they disagree.

    Example:
        >>> check_parity("fused.onnx", open_session(fused, backend="torch", contract=contract), contract)
    """
    from metaerr_edge.runtime import open_session

    x = random_inputs(contract.input, 4, seed)
    with open_session(model, backend="onnxruntime", intra_op_num_threads=1) as ort:
        a = ort.predict(x)
    b = session.predict(x)
    gap = float(np.max(np.abs(a.failure_score - b.failure_score)))
    if not np.array_equal(a.label, b.label) or gap > PARITY_ATOL:
        raise ConfigError(f"the {session.backend} model from the run and {model} disagree (labels {a.label.tolist()} vs "
                          f"{b.label.tolist()}, failure-score gap {gap:.2e} > {PARITY_ATOL}); pass the run the model "
                          "was exported from")


def measure_variants(variants: Sequence[Variant], batches: Sequence[int], contract: Contract, config: TimingConfig,
                     rounds: int, *, seed: int = 0, model: str = "", progress: bool = False) -> list[BenchResult]:
    """Host time of every variant (and device time where it has a GPU module), per batch size.

    Each batch size gets one seeded random input batch; the variants are measured side by side in
    ``rounds`` round-robin slices. Results are named after the variants, in batch-size order.
    """
    from metaerr_edge.console import progress_bar
    from metaerr_edge.runtime.cuda_graphs import device_call

    steps = len(batches) * rounds * (len(variants) + sum(v.gpu_model is not None for v in variants))
    bar = progress_bar(total=steps, enabled=progress, desc="bench", unit="step")
    results: list[BenchResult] = []
    try:
        for batch in batches:
            x = random_inputs(contract.input, batch, seed)
            on_step = lambda name, batch=batch: (bar.set_postfix_str(f"batch {batch} {name}"), bar.update(1))  # noqa: E731
            host = measure_interleaved([(v.name, _bind(v.host, x)) for v in variants], config, rounds,
                                       batch_size=batch, on_step=on_step)
            dev_calls = [(v.name, device_call(v.gpu_model, x, v.graphed)) for v in variants if v.gpu_model is not None]
            device = measure_interleaved(dev_calls, config, rounds, batch_size=batch, kind="device",
                                         on_step=on_step) if dev_calls else {}
            for v in variants:
                results.append(BenchResult(v.name, v.backend, model, batch, host[v.name],
                                           device.get(v.name), dict(v.notes)))
    finally:
        bar.close()
    return results


def _bind(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> Callable[[], Any]:
    return lambda: fn(x)
