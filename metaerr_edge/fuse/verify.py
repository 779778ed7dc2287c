"""Parity: does the ONNX file answer like the PyTorch FusedModel it came from?

As Polygraphy compares runners, :func:`verify_parity` feeds ONNX Runtime and the PyTorch reference
the same inputs, in chunks of several batch sizes (dynamic batch is part of what is tested), and
checks three things: labels equal, failure scores within ``atol``, and the same accept/defer
decision. A sample whose score lies within ``atol`` of the threshold may legitimately flip: it is
counted as a boundary case and reported, not failed.

Example:
    >>> report = verify_parity("model.onnx", fused, random_inputs(contract.input, 256, seed=0))
    >>> report.passed, report.max_abs_score_diff
    (True, 1.2e-07)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaerr_edge.console import warn
from metaerr_edge.errors import ConfigError, InputError, require
from metaerr_edge.contract.spec import Contract, dataset_feed
from metaerr_edge.models.fused import FusedModel


@dataclass(frozen=True)
class BatchParity:
    """Agreement for one batch size (all ``n`` inputs run in chunks of ``batch_size``)."""

    batch_size: int
    n: int
    label_mismatches: int
    max_abs_score_diff: float
    max_abs_probs_diff: float
    decision_mismatches: int
    boundary_cases: int
    boundary_flips: int


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs PyTorch on the same inputs, over every batch size tried.

    ``decision_mismatches`` excludes ``boundary_flips`` (flips of samples whose score lies within
    ``atol`` of ``threshold``); ``boundary_cases`` counts such samples, flipped or not.
    """

    onnx_path: str
    n: int
    atol: float
    threshold: float
    providers: tuple[str, ...]
    requested_providers: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    label_agreement: float
    label_mismatches: int
    max_abs_score_diff: float
    max_abs_probs_diff: float
    decision_agreement: float
    decision_mismatches: int
    boundary_cases: int
    boundary_flips: int
    per_batch: tuple[BatchParity, ...]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)

    def to_markdown(self) -> str:
        """A short human-readable report: verdict, totals, one table row per batch size."""
        verdict = "PASSED" if self.passed else "FAILED"
        fallback = "" if self.providers[:1] == self.requested_providers[:1] else (
            f" (requested {self.requested_providers[0]}: ONNX Runtime fell back)")
        lines = [
            f"### Parity {verdict}: `{os.path.basename(self.onnx_path)}` (ONNX Runtime "
            f"{', '.join(self.providers)}{fallback}) vs PyTorch",
            "",
            f"- inputs: {self.n} per batch size, batch sizes {list(self.batch_sizes)}",
            f"- labels: {self.label_agreement:.4%} agree ({self.label_mismatches} mismatches)",
            f"- failure score: max |diff| {self.max_abs_score_diff:.3g} (atol {self.atol:g})",
            f"- probs: max |diff| {self.max_abs_probs_diff:.3g}",
            f"- defer at threshold {self.threshold:g}: {self.decision_agreement:.4%} agree "
            f"({self.decision_mismatches} mismatches; {self.boundary_cases} boundary cases within "
            f"atol of the threshold, {self.boundary_flips} of them flipped)",
            "",
            "| batch | n | label mism. | max dscore | max dprobs | defer mism. | boundary (flips) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {b.batch_size} | {b.n} | {b.label_mismatches} | {b.max_abs_score_diff:.3g} | "
                  f"{b.max_abs_probs_diff:.3g} | {b.decision_mismatches} | "
                  f"{b.boundary_cases} ({b.boundary_flips}) |" for b in self.per_batch]
        return "\n".join(lines) + "\n"


def verify_parity(onnx_path: str | os.PathLike[str], fused: FusedModel, images: np.ndarray, *,
                  atol: float = 1e-5, batch_sizes: Sequence[int] = (1, 7, 64),
                  providers: Sequence[str] = ("CPUExecutionProvider",),
                  threads: int = 0) -> ParityReport:
    """Run ONNX Runtime and ``fused`` on ``images`` in chunks of each batch size and compare.

    Args:
        onnx_path: the exported fused model.
        fused: the PyTorch reference, with the same threshold as the file.
        images: inputs in the file's layout and dtype, e.g. from :func:`~metaerr_edge.contract.spec.random_inputs`.
        atol: tolerance on the failure score, and the half-width of the boundary band.
        batch_sizes: chunk sizes to run (the last chunk of each may be smaller).
        providers: ONNX Runtime execution providers, in order of preference. The ones actually
            active are reported (ONNX Runtime falls back silently when e.g. CUDA is missing).
        threads: ONNX Runtime ``intra_op_num_threads`` (0 = its default).

    Returns:
        A :class:`ParityReport`; ``passed`` when labels are equal, scores within ``atol`` and
        decisions equal outside the boundary band.

    Raises:
        InputError: ``images`` do not match the model's input.
    """
    ort = require("onnxruntime", "metaerr-edge", "verify_parity")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=list(providers))
    inp = session.get_inputs()[0]
    want_dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
    if images.ndim != 4 or images.dtype != want_dtype or list(images.shape[1:]) != list(inp.shape[1:]):
        raise InputError(f"images are {images.dtype}{list(images.shape)}, the model takes "
                         f"{inp.type}{inp.shape} named {inp.name!r}; use random_inputs(contract.input, n)")
    threshold = float(fused.defer_threshold)
    was_training = fused.training
    fused.eval()
    rows = []
    try:
        for bs in batch_sizes:
            if bs < 1:
                raise ConfigError(f"batch sizes must be >= 1, got {bs}")
            ref, got = _run_chunks(session, inp.name, fused, images, bs)
            rows.append(_compare(ref, got, bs, atol, threshold))
    finally:
        fused.train(was_training)
    n_all = sum(r.n for r in rows)
    labels = sum(r.label_mismatches for r in rows)
    decisions = sum(r.decision_mismatches for r in rows)
    flips = sum(r.boundary_flips for r in rows)
    score = max(r.max_abs_score_diff for r in rows)
    return ParityReport(
        onnx_path=str(onnx_path), n=len(images), atol=atol, threshold=threshold,
        providers=tuple(session.get_providers()), requested_providers=tuple(providers), batch_sizes=tuple(batch_sizes),
        label_agreement=1.0 - labels / n_all, label_mismatches=labels,
        max_abs_score_diff=score, max_abs_probs_diff=max(r.max_abs_probs_diff for r in rows),
        decision_agreement=1.0 - (decisions + flips) / n_all, decision_mismatches=decisions,
        boundary_cases=sum(r.boundary_cases for r in rows), boundary_flips=flips,
        per_batch=tuple(rows), passed=labels == 0 and score <= atol and decisions == 0,
    )


def check_origin(run: Any, contract: Contract, source: str = "the model", *, allow_other_run: bool = False) -> None:
    """Refuse ``run`` unless ``contract``'s file was exported from it.

    The contract records its run's identity (dataset, meta mode, sha256 of the split indices and
    of the weights; see ``Run.identity``). Another run with the same classes is not good enough:
    its calibration split may hold images the model trained on (an optimistic threshold, and the
    SGR risk guarantee no longer holds), and its weights are another model's. ``allow_other_run``
    skips the identity check with a warning (classes, input size, architecture and meta mode
    must still agree).

    Raises:
        ConfigError: the run cannot be the model's origin.
    """
    mode = contract.meta.get("mode")
    own = run.contract(layout=contract.input.layout, mode=mode)  # a mode the run did not train: ConfigError
    problems = []
    if tuple(own.classes) != tuple(contract.classes):
        problems.append(f"classes {list(contract.classes)[:4]}... vs the run's {list(own.classes)[:4]}...")
    a, b = contract.input, own.input
    if (a.channels, a.height, a.width) != (b.channels, b.height, b.width):
        problems.append(f"input {a.channels}x{a.height}x{a.width} vs the run's {b.channels}x{b.height}x{b.width}")
    if contract.base.get("arch") not in (None, own.base.get("arch")):
        problems.append(f"base {contract.base.get('arch')!r} vs the run's {own.base.get('arch')!r}")
    where = getattr(run, "path", "the run")
    if problems:
        raise ConfigError(f"{where} is not the run {source} was exported from: " + "; ".join(problems)
                          + ". Pass the run folder the model was exported from.")
    recorded, actual = contract.meta.get("run"), own.meta.get("run")
    if recorded is None or actual is None:
        return  # an export from before run identities, or a run object that has none: nothing to compare
    differs = [k for k in ("dataset", "meta_mode", "splits_sha256", "weights_sha256") if recorded.get(k) != actual.get(k)]
    if not differs:
        return
    what = ", ".join(f"{k} {str(recorded.get(k))[:12]} vs {str(actual.get(k))[:12]}" for k in differs)
    if allow_other_run:
        warn(f"{where} is not the run {source} was exported from ({what}); going on as asked: a threshold "
             "calibrated on it carries no guarantee for this model", name="metaerr_edge.fuse")
        return
    raise ConfigError(f"{where} is not the run {source} was exported from ({what}): its splits or weights are "
                      "another run's, so its calibration split may hold images the model trained on and the "
                      "risk guarantee would not hold. Pass the run it was exported from, or --allow-other-run "
                      "to accept that (allow_other_run=True).")


def reference_model(run: Any, contract: Contract, source: str = "the model", *,
                    allow_other_run: bool = False) -> FusedModel:
    """The PyTorch FusedModel of ``run`` exactly as ``contract``'s file was exported from it.

    Meta mode, layout and threshold come from the file's contract; ``run`` is anything with the
    :class:`~metaerr_edge.fuse.export.RunLike` methods and must be the file's origin
    (:func:`check_origin`).
    """
    check_origin(run, contract, source, allow_other_run=allow_other_run)
    return run.fused(threshold=contract.threshold.value, layout=contract.input.layout, mode=contract.meta.get("mode"))


def verify_run(onnx_path: str | os.PathLike[str], run: Any, n: int = 512, atol: float = 1e-5,
               batch_sizes: Sequence[int] = (1, 7, 64),
               providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
               allow_other_run: bool = False) -> ParityReport:
    """Parity of an exported run on its first ``n`` test images (uses ``run.fused`` and ``run.split``).

    The reference is built with the file's meta mode, layout and threshold (as read from its
    contract), so an export of any trained mode, and a file whose threshold was rewritten by
    ``set_threshold``, is compared with the model it holds.

    Example:
        >>> print(verify_run("model.onnx", run).to_markdown())
    """
    from metaerr_edge.contract.reader import read_contract

    contract = read_contract(onnx_path)
    fused = reference_model(run, contract, str(onnx_path), allow_other_run=allow_other_run)
    images, _ = run.split("test")
    images = np.asarray(images[:n])
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"run.split('test') gave {images.dtype}{list(images.shape)}, expected uint8 NCHW")
    return verify_parity(onnx_path, fused, dataset_feed(contract.input, images), atol=atol,
                         batch_sizes=batch_sizes, providers=providers, threads=threads)


def _run_chunks(session: Any, name: str, fused: FusedModel, images: np.ndarray,
                batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(reference outputs, ONNX Runtime outputs), each the 4 outputs concatenated over chunks."""
    ref: list[list[np.ndarray]] = [[], [], [], []]
    got: list[list[np.ndarray]] = [[], [], [], []]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            for k, value in enumerate(fused(torch.from_numpy(chunk))):
                ref[k].append(value.numpy())
            for k, value in enumerate(session.run(None, {name: chunk})):
                got[k].append(np.asarray(value))
    return [np.concatenate(v) for v in ref], [np.concatenate(v) for v in got]


def _compare(ref: list[np.ndarray], got: list[np.ndarray], batch_size: int, atol: float,
             threshold: float) -> BatchParity:
    (label_r, probs_r, score_r, defer_r), (label_o, probs_o, score_o, defer_o) = ref, got
    score_r, score_o = score_r.astype(np.float64), score_o.astype(np.float64)
    boundary = np.minimum(np.abs(score_r - threshold), np.abs(score_o - threshold)) <= atol
    flipped = defer_r.astype(bool) != defer_o.astype(bool)
    return BatchParity(
        batch_size=batch_size, n=len(label_r),
        label_mismatches=int(np.sum(label_r != label_o)),
        max_abs_score_diff=float(np.max(np.abs(score_r - score_o))),
        max_abs_probs_diff=float(np.max(np.abs(probs_r.astype(np.float64) - probs_o))),
        decision_mismatches=int(np.sum(flipped & ~boundary)),
        boundary_cases=int(np.sum(boundary)),
        boundary_flips=int(np.sum(flipped & boundary)),
    )


# --- reduced precision -----------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionReport:
    """A reduced-precision graph against the FP32 model it came from, on the same test images.

    ``flips_at_fp32_threshold``: share of images whose defer decision changes when the reduced
    graph's score replaces the FP32 score at the FP32 threshold (what the score's distortion does);
    ``decision_changes``: share whose deployed decision (the reduced graph's own, recalibrated
    threshold) differs from the FP32 graph's at its threshold (what the device does differently).
    ``largest_tie``: share of images in the largest block of equal scores (coarse scores tie).
    """

    onnx_path: str
    precision: str
    split: str
    n: int
    runtime: str
    label_agreement: float
    max_abs_score_diff: float
    p99_abs_score_diff: float
    threshold: float
    fp32_threshold: float
    flips_at_fp32_threshold: float
    decision_changes: float
    distinct_scores: dict[str, int]
    largest_tie: dict[str, float]
    auroc: dict[str, float]
    aurc: dict[str, float]
    coverage: dict[str, float]
    calibration: dict[str, Any]
    min_label_agreement: float
    max_auroc_drop: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        drop = self.auroc["fp32"] - self.auroc[self.precision]
        p = self.precision
        auroc_line = ("- failure-prediction AUROC: not measurable on these images (they need both errors and "
                      "correct predictions); the verdict rests on the labels" if math.isnan(drop) else
                      f"- failure-prediction AUROC: FP32 {self.auroc['fp32']:.4f}, {p.upper()} {self.auroc[p]:.4f} "
                      f"(change {-drop:+.4f}; a drop of up to {self.max_auroc_drop:g} allowed); "
                      f"AURC {self.aurc['fp32']:.4f} vs {self.aurc[p]:.4f}")
        lines = [
            f"### {p.upper()} vs FP32 {verdict}: `{os.path.basename(self.onnx_path)}` on {self.n} {self.split} images",
            "",
            f"- reduced graph run on: {self.runtime}",
            f"- labels: {self.label_agreement:.4%} agree (needs >= {self.min_label_agreement:.2%})",
            f"- failure score: max |diff| {self.max_abs_score_diff:.3g}, p99 {self.p99_abs_score_diff:.3g}",
            auroc_line,
            f"- defer flips at the FP32 threshold {self.fp32_threshold:.4g}: {self.flips_at_fp32_threshold:.2%}; "
            f"deployed decisions (threshold {self.threshold:.4g}) that differ from FP32's: {self.decision_changes:.2%}",
            f"- {self.split} coverage: FP32 {self.coverage['fp32']:.2%}, {p.upper()} {self.coverage[p]:.2%}",
            f"- distinct scores: FP32 {self.distinct_scores['fp32']}, {p.upper()} {self.distinct_scores[p]}; "
            f"largest tie {self.largest_tie['fp32']:.2%} vs {self.largest_tie[p]:.2%} of the images",
        ]
        cal = self.calibration
        if cal.get("target_coverage") is not None and cal.get("achieved_coverage") is not None:
            lines.append(f"- threshold ({cal.get('method')}): calibration coverage {cal['achieved_coverage']:.2%} "
                         f"for a target of {cal['target_coverage']:.2%}" + ("" if cal.get("recalibrated") else
                         " -- NOT recalibrated on this precision: run `metaerr-edge calibrate` on it"))
        elif not cal.get("recalibrated"):
            lines.append("- threshold: NOT recalibrated on this precision (the FP32 one); run `metaerr-edge calibrate` on it")
        return "\n".join(lines) + "\n"


def verify_precision(onnx_path: str | os.PathLike[str], run: Any, n: int | None = None, *, split: str = "test",
                     min_label_agreement: float = 0.99, max_auroc_drop: float = 0.005,
                     providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                     allow_other_run: bool = False) -> PrecisionReport:
    """Compare a reduced-precision fused graph (``metaerr-edge quantize``) with its FP32 reference.

    The reference is the run's PyTorch FusedModel (the FP32 graph answers like it within 1e-5, as
    :func:`verify_run` checks); both see the first ``n`` images of ``split`` (all when ``None``; the
    benchmark chooses its defaults on ``split="calib"`` and reports ``"test"``). Passed when
    labels agree on at least ``min_label_agreement`` and the failure-prediction AUROC drops by at
    most ``max_auroc_drop``.
    """
    from metaerr_edge.contract.reader import read_contract
    from metaerr_edge.metrics import aurc, auroc
    from metaerr_edge.runtime.ort_backend import emulates_qdq, open_ort_inference_session

    contract = read_contract(onnx_path)
    name = contract.precision_name
    if name == "fp32":
        raise ConfigError(f"{onnx_path} is an FP32 graph; verify_precision compares a reduced-precision graph "
                          "(metaerr-edge quantize) with FP32. Check an FP32 graph with verify_run (parity)")
    fused = reference_model(run, contract, str(onnx_path), allow_other_run=allow_other_run)
    images, labels = run.split(split)
    images, labels = np.asarray(images[:n]), np.asarray(labels[:n])
    if len(labels) == 0:
        raise InputError(f"no {split} images to compare on (n={n}, the run's {split} split has "
                         f"{len(run.split(split)[1])}); pass n >= 1 or another split")
    # A TensorRT-flavoured graph is checked on its Q/DQ semantics (graph optimisations off: each Q/DQ
    # pair runs as written, as TensorRT's explicit quantization computes it), not on ONNX Runtime's
    # fused x86 int8 kernels, which the device never runs.
    emulate = emulates_qdq(contract)
    session = open_ort_inference_session(Path(onnx_path), list(providers), intra_op_num_threads=threads or None,
                                         optimize=not emulate, source=str(onnx_path))  # cannot run: ContractError
    was_training = fused.training
    fused.eval()
    try:
        ref, got = _run_chunks(session, contract.input.name, fused, dataset_feed(contract.input, images), 256)
    finally:
        fused.train(was_training)
    (label_r, _, score_r, _), (label_q, _, score_q, defer_q) = ref, got
    score_r, score_q, defer_q = score_r.astype(np.float64), score_q.astype(np.float64), defer_q.astype(bool)
    err_r, err_q = label_r != labels, label_q != labels
    source = contract.precision.get("source", {})
    t32 = float(source.get("threshold", contract.threshold.value))
    diff = np.abs(score_r - score_q)
    aurocs = {"fp32": float(auroc(score_r, err_r)), name: float(auroc(score_q, err_q))}
    agreement = float(np.mean(label_r == label_q))
    drop = aurocs["fp32"] - aurocs[name]
    # AUROC needs errors and non-errors in the split: without both it is not measured (NaN), and the
    # verdict rests on the labels alone (the report says so).
    auroc_ok = bool(np.isnan(drop)) or drop <= max_auroc_drop
    th = contract.threshold
    return PrecisionReport(
        onnx_path=str(onnx_path), precision=name, split=split, n=len(labels), label_agreement=agreement,
        runtime="ONNX Runtime CPU, graph optimisations off (the Q/DQ semantics TensorRT computes)" if emulate
        else "ONNX Runtime CPU (its fused int8 / fp16 kernels)",
        max_abs_score_diff=float(diff.max()), p99_abs_score_diff=float(np.quantile(diff, 0.99)),
        threshold=th.value, fp32_threshold=t32,
        flips_at_fp32_threshold=float(np.mean((score_r > t32) != (score_q > t32))),
        decision_changes=float(np.mean((score_r > t32) != defer_q)),
        distinct_scores={"fp32": int(len(np.unique(score_r))), name: int(len(np.unique(score_q)))},
        largest_tie={"fp32": _largest_tie(score_r), name: _largest_tie(score_q)},
        auroc=aurocs, aurc={"fp32": float(aurc(score_r, err_r)), name: float(aurc(score_q, err_q))},
        coverage={"fp32": float(np.mean(score_r <= t32)), name: float(np.mean(~defer_q))},
        calibration={"method": th.method, "target_coverage": th.target_coverage, "target_risk": th.target_risk,
                     "achieved_coverage": th.achieved_coverage, "achieved_risk": th.achieved_risk,
                     "recalibrated": bool(contract.precision.get("recalibrated", False))},
        min_label_agreement=min_label_agreement, max_auroc_drop=max_auroc_drop,
        passed=agreement >= min_label_agreement and auroc_ok,
    )  # fmt: skip


def _largest_tie(scores: np.ndarray) -> float:
    """Share of the scores in the largest block of equal values."""
    _, counts = np.unique(scores, return_counts=True)
    return float(counts.max() / len(scores)) if len(scores) else 0.0
