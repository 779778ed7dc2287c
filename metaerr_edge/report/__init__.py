"""``metaerr-edge report``: one self-contained HTML page per run, for people who will never run the CLI.

The page reads only files: the run folder (``config.json``, ``metrics.json``, ``scores.npz``, and
``shift.json`` and ``tradeoff/`` when present), a bench JSON and a fused ``.onnx`` when given. It
needs the core install plus matplotlib (no torch, no scikit-learn, no inference session), embeds
every figure as a PNG ``data:`` URI, and reads without JavaScript or a network.

Example:
    >>> path = write_report_html("runs/demo", bench="bench/bench.json", model="model.onnx", out="report.html")
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge import __version__
from metaerr_edge.errors import ConfigError, DataError, require
from metaerr_edge._fileio import atomic_write_text
from metaerr_edge.report import sections
from metaerr_edge.report.html import Section, page

__all__ = ["ReportInputs", "load_inputs", "render_report", "write_report_html"]

_EVALUATE_FIRST = "run `metaerr-edge evaluate {run}` first (it writes metrics.json and scores.npz)"


@dataclass
class ReportInputs:
    """Everything the page shows, read from files (None: that section is left out)."""

    run_path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    score_names: list[str] | None = None
    scores: np.ndarray | None = None
    is_error: np.ndarray | None = None
    risk_png: bytes | None = None
    shift: dict[str, Any] | None = None
    bench: Any = None
    bench_source: str = ""
    tradeoff: dict[str, Any] | None = None
    model: dict[str, Any] | None = None


def load_inputs(run: str | os.PathLike[str], bench: str | os.PathLike[str] | None = None,
                tradeoff: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None) -> ReportInputs:
    """Read and check every file the report needs; a missing or malformed one raises with the fix.

    ``tradeoff``: a folder written by ``metaerr-edge tradeoff`` (or its tradeoff.json); default:
    ``RUN/tradeoff`` when it exists.
    """
    run_path = Path(run)
    if not run_path.is_dir():
        raise ConfigError(f"{str(run_path)!r} is not a folder: pass a run folder written by `metaerr-edge train`")
    config = _json(run_path / "config.json", "a run folder written by `metaerr-edge train`")
    metrics_path = run_path / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{str(run_path)!r} has no metrics.json: {_EVALUATE_FIRST.format(run=run_path)}")
    inputs = ReportInputs(run_path, config, _json(metrics_path, "metrics.json written by `metaerr-edge evaluate`"))
    _load_scores(inputs)
    if (run_path / "shift.json").is_file():
        inputs.shift = _json(run_path / "shift.json", "shift.json written by `metaerr-edge evaluate --shift`")
    if bench is not None:
        from metaerr_edge.bench.report import load_json

        inputs.bench, inputs.bench_source = load_json(bench), str(bench)
    tradeoff_path = Path(tradeoff) if tradeoff is not None else run_path / "tradeoff"
    if tradeoff is not None or tradeoff_path.is_dir():
        file = tradeoff_path / "tradeoff.json" if tradeoff_path.is_dir() else tradeoff_path
        inputs.tradeoff = _json(file, "a folder written by `metaerr-edge tradeoff`")
        if not isinstance(inputs.tradeoff.get("rows"), list) or not inputs.tradeoff["rows"]:
            raise DataError(f"{str(file)!r} has no rows: expected the tradeoff.json of `metaerr-edge tradeoff`; run it again")
    if model is not None:
        from metaerr_edge.contract.reader import model_info

        inputs.model = model_info(model).to_dict()
    return inputs


def render_report(inputs: ReportInputs) -> str:
    """The whole HTML document for ``inputs``."""
    require("matplotlib", "metaerr-edge[train]", "drawing the report's figures (pip install matplotlib)")
    from metaerr_edge import plots

    m = inputs.metrics
    title = f"{m.get('dataset')} / {m.get('arch')}"
    built: list[Section | None] = [
        sections.run_section(inputs.config, m, str(inputs.run_path)),
        sections.evaluation_section(m),
        sections.curves_section(_render, {"risk_coverage": plots.plot_risk_coverage,
                                          "generalized_risk": plots.plot_generalized_risk},
                                inputs.score_names or [], inputs.scores, inputs.is_error, title, inputs.risk_png),
    ]
    if inputs.shift is not None:
        from metaerr_edge.shift_report import ShiftReport

        built.append(sections.shift_section(_render, plots.plot_shift, ShiftReport.from_dict(inputs.shift), inputs.shift))
    if inputs.bench is not None:
        b = inputs.bench
        from metaerr_edge.bench.report import plot_latency

        built.append(sections.latency_section(_render, plot_latency, b.results, b.ratios, b.environment, inputs.bench_source))
    if inputs.tradeoff is not None:
        built.append(sections.tradeoff_section(_render, _tradeoff_table(inputs.tradeoff), inputs.tradeoff))
    if inputs.model is not None:
        built.append(sections.contract_section(inputs.model))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return page(f"metaerr-edge report: {title}", f"run {inputs.run_path}, written {stamp} by metaerr-edge {__version__}",
                [s for s in built if s is not None],
                "One self-contained file: every figure is embedded, nothing is fetched, no script runs.")


def write_report_html(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                      bench: str | os.PathLike[str] | None = None, tradeoff: str | os.PathLike[str] | None = None,
                      model: str | os.PathLike[str] | None = None) -> Path:
    """Build the report of ``run`` and write it atomically to ``out`` (default: ``RUN/report.html``)."""
    target = Path(out) if out is not None else Path(run) / "report.html"
    if target.is_dir():
        raise ConfigError(f"-o {str(target)!r} is a folder; pass a file path such as report.html")
    text = render_report(load_inputs(run, bench=bench, tradeoff=tradeoff, model=model))
    atomic_write_text(target, text)
    return target


# ----------------------------------------------------------------------------- helpers


def _json(path: Path, expected: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist: expected {expected}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not valid JSON ({exc}): expected {expected}; write it again") from None
    if not isinstance(doc, dict):
        raise DataError(f"{str(path)!r} holds a {type(doc).__name__}, expected an object: {expected}")
    return doc


def _load_scores(inputs: ReportInputs) -> None:
    """scores.npz, checked against metrics.json (same scores); else the run's risk_coverage.png."""
    path = inputs.run_path / "scores.npz"
    if not path.is_file():
        png = inputs.run_path / "risk_coverage.png"
        inputs.risk_png = png.read_bytes() if png.is_file() else None
        return
    stale = f"{str(path)!r} does not belong to metrics.json beside it; {_EVALUATE_FIRST.format(run=inputs.run_path)}"
    try:
        with np.load(path, allow_pickle=False) as z:
            names, scores, is_error = [str(n) for n in z["names"]], np.asarray(z["scores"], np.float64), z["is_error"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{str(path)!r} cannot be read ({exc}); {_EVALUATE_FIRST.format(run=inputs.run_path)}") from None
    if names != list(inputs.metrics.get("metrics", {})) or scores.shape != (len(names), is_error.size):
        raise DataError(stale)
    inputs.score_names, inputs.scores, inputs.is_error = names, scores, is_error.astype(np.int64)


def _render(draw: Callable[[Path], Any]) -> bytes:
    """``draw(path)`` into a temporary PNG, and return its bytes (palette-compressed)."""
    with tempfile.TemporaryDirectory(prefix="metaerr-edge-report.") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return _compress(path.read_bytes())


def _compress(png: bytes) -> bytes:
    """The same picture with a 256-colour palette: a third of the bytes for line plots, same look."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB").quantize(colors=256)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png


def _tradeoff_table(doc: dict[str, Any]) -> Any:
    """The TradeoffTable back from tradeoff.json's rows (for its plot)."""
    from metaerr_edge.decide.tradeoff import _COLUMNS, TradeoffTable

    rows = doc["rows"]
    try:
        cols = {c: np.array([np.nan if r[c] is None else r[c] for r in rows], bool if c == "meets_deadline" else np.float64)
                for c in _COLUMNS}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"tradeoff.json rows lack a column or hold a non-number ({exc}); run `metaerr-edge tradeoff` again") from None
    return TradeoffTable(**cols, deadline_ms=doc.get("inputs", {}).get("deadline_ms"), n=int(doc.get("inputs", {}).get("calibration_n") or 0))
