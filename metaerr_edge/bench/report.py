"""Benchmark results: trtexec-like tables, side-by-side ratios, JSON files and plots.

A benchmark JSON file (``SCHEMA = "metaerr-edge/bench/1"``) is one object::

    {
      "schema": "metaerr-edge/bench/1",
      "environment": {...},            # metaerr_edge.bench.environment()
      "results": [                     # one per BenchResult
        {"name": "fused/onnxruntime-cpu", "backend": "onnxruntime-cpu", "model": "fused.onnx",
         "batch_size": 1, "host": {LatencyStats.to_dict()}, "device": {...} | null,
         "notes": {"copies_included": true, "cuda_graphs": false, "spin_wait": false, ...}}
      ],
      "ratios": [ratio_table() rows],  # host rows, then device rows where both sides have them
      "extra": {...} | null            # anything else the caller wants kept
    }

Latencies are in milliseconds, throughput in images per second. Files are written atomically
(a temporary file in the same folder, then ``os.replace``), so a reader never sees half a file.

Example:
    >>> from metaerr_edge.bench import LatencyStats
    >>> host = LatencyStats.from_samples([1.0, 2.0, 3.0])
    >>> r = BenchResult("base/onnxruntime-cpu", "onnxruntime-cpu", "base.onnx", 1, host)
    >>> print(to_markdown([r]).splitlines()[2].split("|")[1].strip())
    base/onnxruntime-cpu
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from metaerr_edge.bench.timer import Kind, LatencyStats, _check_kind
from metaerr_edge.errors import ConfigError, DataError, require
from metaerr_edge._fileio import atomic_target

SCHEMA = "metaerr-edge/bench/1"

_COLUMNS = ("min", "mean", "median", "p90", "p95", "p99", "max")


@dataclass(frozen=True)
class BenchResult:
    """One measured configuration: a model on a backend at one batch size.

    ``notes`` says what the numbers include, e.g. ``{"copies_included": True,
    "cuda_graphs": False, "spin_wait": False, "threads": 2}``; it must be JSON-serialisable.

    Example:
        >>> s = LatencyStats.from_samples([1.0, 1.2], batch_size=1)
        >>> BenchResult("fused/onnxruntime-cpu", "onnxruntime-cpu", "fused.onnx", 1, s).device
    """

    name: str
    backend: str
    model: str
    batch_size: int
    host: LatencyStats
    device: LatencyStats | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"BenchResult.name must be a non-empty string, got {self.name!r}.")
        if not isinstance(self.host, LatencyStats) or self.host.kind != "host":
            raise ConfigError(f"BenchResult {self.name!r}: host must be LatencyStats(kind='host').")
        if self.device is not None and (
            not isinstance(self.device, LatencyStats) or self.device.kind != "device"
        ):
            raise ConfigError(
                f"BenchResult {self.name!r}: device must be None or LatencyStats(kind='device')."
            )
        for stats in (self.host, self.device):
            if stats is not None and stats.batch_size != self.batch_size:
                raise ConfigError(
                    f"BenchResult {self.name!r} has batch_size {self.batch_size} but its "
                    f"{stats.kind} stats were measured at batch_size {stats.batch_size}."
                )
        if not isinstance(self.notes, Mapping):
            raise ConfigError(
                f"BenchResult {self.name!r}: notes must be a dict, got {self.notes!r}."
            )
        object.__setattr__(self, "notes", dict(self.notes))

    def stats(self, kind: Kind) -> LatencyStats | None:
        """The host or device stats of this result."""
        return self.host if kind == "host" else self.device

    def to_dict(self, include_samples: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``results`` entries of the file schema)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "model": self.model,
            "batch_size": self.batch_size,
            "host": self.host.to_dict(include_samples),
            "device": None if self.device is None else self.device.to_dict(include_samples),
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on missing or bad fields."""
        missing = [k for k in ("name", "backend", "model", "batch_size", "host") if k not in data]
        if missing:
            raise ConfigError(f"a result lacks the fields {missing}.")
        device = data.get("device")
        return cls(
            name=data["name"],
            backend=data["backend"],
            model=data["model"],
            batch_size=data["batch_size"],
            host=LatencyStats.from_dict(data["host"]),
            device=None if device is None else LatencyStats.from_dict(device),
            notes=data.get("notes") or {},
        )


@dataclass(frozen=True)
class BenchReport:
    """What :func:`load_json` returns: the file's content, typed."""

    environment: dict[str, Any]
    results: tuple[BenchResult, ...]
    ratios: tuple[dict[str, Any], ...] = ()
    extra: Any = None
    schema: str = SCHEMA


def to_markdown(results: Sequence[BenchResult], kind: Kind = "host") -> str:
    """A trtexec-like table, one row per result, latencies in ms.

    With ``kind="device"`` the GPU compute times are shown; results without them get dashes.

    Example:
        >>> s = LatencyStats.from_samples([1.0, 3.0])
        >>> print(to_markdown([BenchResult("a", "ort", "m.onnx", 1, s)]))  # doctest: +NORMALIZE_WHITESPACE
        | name | batch | iters | min (ms) | mean (ms) | median (ms) | p90 (ms) | p95 (ms) | p99 (ms) | max (ms) | throughput (img/s) |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
        | a | 1 | 2 | 1.000 | 2.000 | 2.000 | 2.800 | 2.900 | 2.980 | 3.000 | 500.0 |
    """
    _check_kind(kind)
    header = ["name", "batch", "iters", *(f"{c} (ms)" for c in _COLUMNS), "throughput (img/s)"]
    lines = [_row(header), "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        s = r.stats(kind)
        if s is None:
            cells = [_cell(r.name), str(r.batch_size), *(["-"] * (len(header) - 2))]
        else:
            cells = [
                _cell(r.name),
                str(r.batch_size),
                str(s.iterations),
                *(f"{getattr(s, c + '_ms'):.3f}" for c in _COLUMNS),
                f"{s.throughput:.1f}",
            ]
        lines.append(_row(cells))
    return "\n".join(lines)


def ratio_table(
    results: Sequence[BenchResult],
    pairs: Sequence[tuple[str, str]],
    kind: Kind = "host",
) -> list[dict[str, Any]]:
    """Median and p99 latency ratios ``a / b`` for each named pair at each shared batch size.

    A ratio above 1 means ``a`` is slower than ``b``. Quote these rather than absolute times:
    both sides ran in the same process on the same machine. Raises :class:`ConfigError` for an
    unknown name, a duplicated (name, batch) or a pair with no batch size measured on both sides.

    Example:
        >>> a = BenchResult("fused", "ort", "f.onnx", 1, LatencyStats.from_samples([3.0]))
        >>> b = BenchResult("base", "ort", "b.onnx", 1, LatencyStats.from_samples([2.0]))
        >>> ratio_table([a, b], [("fused", "base")])[0]["median_ratio"]
        1.5
    """
    return _ratio_rows(results, pairs, kind, strict=True)


def ratios_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render :func:`ratio_table` rows as a markdown table.

    Example:
        >>> rows = [{"a": "fused", "b": "base", "kind": "host", "batch_size": 1,
        ...          "median_a_ms": 3.0, "median_b_ms": 2.0, "median_ratio": 1.5,
        ...          "p99_a_ms": 4.0, "p99_b_ms": 2.0, "p99_ratio": 2.0}]
        >>> ratios_markdown(rows).splitlines()[-1]
        '| fused | base | host | 1 | 3.000 | 2.000 | 1.500 | 4.000 | 2.000 | 2.000 |'
    """
    header = ["a", "b", "kind", "batch", "median a (ms)", "median b (ms)", "median a/b",
              "p99 a (ms)", "p99 b (ms)", "p99 a/b"]
    lines = [_row(header), "|---|---|---|" + "---:|" * (len(header) - 3)]
    for r in rows:
        lines.append(_row([
            _cell(r["a"]), _cell(r["b"]), str(r["kind"]), str(r["batch_size"]),
            *(_ms(r[k]) for k in ("median_a_ms", "median_b_ms", "median_ratio",
                                      "p99_a_ms", "p99_b_ms", "p99_ratio")),
        ]))
    return "\n".join(lines)


def save_json(
    path: str | os.PathLike[str],
    results: Sequence[BenchResult],
    environment: Mapping[str, Any],
    extra: Any = None,
    *,
    pairs: Sequence[tuple[str, str]] = (),
    include_samples: bool = False,
) -> Path:
    """Write results, environment and the ratios of ``pairs`` atomically (schema in module doc).

    ``include_samples`` keeps every per-call latency (needed to plot from the file later).

    Example:
        >>> pairs = [("fused", "base")]
        >>> save_json("bench.json", results, environment(), pairs=pairs)  # doctest: +SKIP
    """
    results = list(results)
    ratios = _ratio_rows(results, pairs, "host", strict=True)
    ratios += _ratio_rows(results, pairs, "device", strict=False)
    doc = {
        "schema": SCHEMA,
        "environment": dict(environment),
        "results": [r.to_dict(include_samples) for r in results],
        "ratios": ratios,
        "extra": extra,
    }
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Cannot write benchmark JSON: environment, notes or extra hold a value JSON cannot "
            f"represent ({exc}). Pass plain str/int/float/bool/list/dict values."
        ) from exc
    path = Path(path)
    with atomic_target(path, keep_mode=True) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def load_json(path: str | os.PathLike[str]) -> BenchReport:
    """Read a file written by :func:`save_json`; raises :class:`DataError` for any other file.

    Example:
        >>> report = load_json("bench.json")  # doctest: +SKIP
        >>> print(to_markdown(report.results))  # doctest: +SKIP
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, FIFO or device: reading it would fail or block
        raise DataError(f"{str(path)!r} is not a regular file; pass a bench.json written by `metaerr-edge bench`.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"No benchmark file at {str(path)!r}.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not a readable JSON file ({exc}).") from exc
    found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
    if not isinstance(doc, dict) or found != SCHEMA:
        raise DataError(
            f"{str(path)!r} is not a metaerr-edge benchmark file: expected schema {SCHEMA!r}, "
            f"found {found!r}. Pass a file written by metaerr_edge.bench.save_json."
        )
    if not isinstance(doc.get("results"), list):
        raise DataError(f"{str(path)!r}: 'results' must be a list, got {doc.get('results')!r}.")
    results = []
    for i, entry in enumerate(doc["results"]):
        try:
            if not isinstance(entry, dict):
                raise ConfigError(f"expected an object, got {type(entry).__name__}")
            results.append(BenchResult.from_dict(entry))
        except (ConfigError, TypeError, ValueError) as exc:
            raise DataError(f"{str(path)!r}: results[{i}] is malformed: {exc}") from exc
    ratios = doc.get("ratios") or []
    if not isinstance(ratios, list):
        raise DataError(f"{str(path)!r}: 'ratios' must be a list, got {type(ratios).__name__}.")
    env = doc.get("environment")
    if not isinstance(env, dict):
        raise DataError(f"{str(path)!r}: 'environment' must be an object, got {env!r}.")
    return BenchReport(
        environment=env,
        results=tuple(results),
        ratios=tuple(ratios),
        extra=doc.get("extra"),
    )


def plot_latency(
    results: Sequence[BenchResult],
    path: str | os.PathLike[str],
    *,
    kind: Kind = "host",
    style: str = "box",
    log_scale: bool = False,
) -> Path:
    """Latency distributions, one panel per batch size, one box (or violin) per result.

    Boxes span p25..p75 with whiskers at p1 and p99, as a caption under the panels says; the title
    names the latency kind; a log axis labels 1-2-5 steps only. The format follows the file suffix (.png,
    .svg, .pdf). Needs matplotlib (Agg, no display) and the per-call samples, so results loaded
    from a file saved without ``include_samples`` cannot be plotted.

    Example:
        >>> plot_latency(results, "latency.png", log_scale=True)  # doctest: +SKIP
    """
    fig = _latency_figure(results, kind=kind, style=style, log_scale=log_scale)
    from metaerr_edge.plots.style import figure_format

    path = Path(path)
    with atomic_target(path, keep_mode=True) as tmp:
        fig.savefig(tmp, format=figure_format(path), dpi=120)
    return path


_KIND_TITLES = {"host": "Host latency per call (wall clock around each call)",
                "device": "Device latency per call (GPU time between CUDA events)"}
_CAPTIONS = {"box": ("box: p25-p75", "line: median", "whiskers: p1 and p99", "dots: beyond"),
             "violin": ("violin: sample density", "line: median", "bars: min and max")}


def _latency_figure(results: Sequence[BenchResult], *, kind: Kind, style: str, log_scale: bool) -> Any:
    """The figure :func:`plot_latency` writes (checks its arguments the same way)."""
    _check_kind(kind)
    if style not in ("box", "violin"):
        raise ConfigError(f"plot style must be 'box' or 'violin', got {style!r}.")
    groups: dict[int, list[tuple[str, Any]]] = {}
    for r in results:
        s = r.stats(kind)
        if s is None:
            continue
        if len(s.samples_ms) == 0:
            raise ConfigError(
                f"Result {r.name!r} has no {kind} latency samples to plot; measure again, or "
                "save with save_json(..., include_samples=True) before loading."
            )
        groups.setdefault(r.batch_size, []).append((r.name, s.samples_ms))
    if not groups:
        raise ConfigError(f"No result has {kind} latency stats to plot.")

    require("matplotlib", "metaerr-edge[train]", "plotting latency distributions")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    batches = sorted(groups)
    width = max(5.0, sum(1.2 * len(groups[b]) + 1.0 for b in batches))
    fig = Figure(figsize=(min(width, 24.0), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches):
        names = [name for name, _ in groups[batch]]
        data = [samples for _, samples in groups[batch]]
        positions = list(range(1, len(data) + 1))
        if style == "box":
            ax.boxplot(data, positions=positions, whis=(1, 99), flierprops={"markersize": 2})
        else:
            ax.violinplot(data, positions=positions, showmedians=True)
        ax.set_xticks(positions, _short_names(names), rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_title(f"batch {batch}")
        if log_scale:
            ax.set_yscale("log")
            _log_ticks(ax)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{kind} latency (ms{', log scale' if log_scale else ''})")
    fig.suptitle(_KIND_TITLES[kind], fontsize=10)
    if style == "box":
        handles = [Patch(facecolor="none", edgecolor="black"), Line2D([], [], color="C1"), Line2D([], [], color="black"),
                   Line2D([], [], ls="none", marker="o", ms=3, mfc="none", mec="black")]
    else:
        handles = [Patch(facecolor="C0", alpha=0.3), Line2D([], [], color="C0"), Line2D([], [], color="C0", marker="_", ms=8)]
    fig.legend(handles, _CAPTIONS[style], loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    return fig


def _log_ticks(ax: Any) -> None:
    """Readable ticks on a log latency axis: labels at 1-2-5 steps (decades only over > 6 decades), never every minor tick."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 else math.inf
    steps = LogLocator(base=10, subs=(1, 2, 5))
    if decades > 6:
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    elif sum(lo <= t <= hi for t in steps.tick_values(lo, hi)) >= 3:
        ax.yaxis.set_major_locator(steps)
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(3, 4, 6, 7, 8, 9)))
    else:  # under about a decade: evenly spaced round values label the axis better than one or two 1-2-5 ticks
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _short_names(names: Sequence[str], width: int = 24) -> list[str]:
    """Names cut in the middle to ``width`` characters (``"metaerr[im…]/tensorrt-fp16"``); whole when cutting would merge two."""
    def cut(name: str) -> str:
        if len(name) <= width:
            return name
        head = (width - 1) // 2
        return name[:head] + "…" + name[len(name) - (width - 1 - head):]

    short = [cut(n) for n in names]
    return short if len(set(short)) == len(set(names)) else list(names)


# --- helpers -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    """``a / b``; None (JSON null) when ``b`` is 0 ms, below the clock's resolution."""
    return a / b if b > 0 else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ratio_rows(
    results: Sequence[BenchResult],
    pairs: Sequence[tuple[str, str]],
    kind: Kind,
    strict: bool,
) -> list[dict[str, Any]]:
    _check_kind(kind)
    index: dict[tuple[str, int], BenchResult] = {}
    for r in results:
        key = (r.name, r.batch_size)
        if key in index:
            raise ConfigError(f"Two results share name {r.name!r} at batch {r.batch_size}; "
                              "give each measured configuration its own name.")
        index[key] = r
    names = sorted({r.name for r in results})
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"Each ratio pair must be (a, b) result names, got {pair!r}.")
        a, b = pair
        for name in (a, b):
            if name not in names:
                raise ConfigError(f"Ratio pair {pair!r}: no result named {name!r}; known: {names}.")
        shared = sorted(
            batch for (name, batch), r in index.items()
            if name == a and (b, batch) in index
            and r.stats(kind) is not None and index[(b, batch)].stats(kind) is not None
        )
        if not shared and strict:
            raise ConfigError(f"Ratio pair {pair!r}: no batch size has {kind} stats on both sides; "
                              "measure both at the same batch size.")
        for batch in shared:
            sa, sb = index[(a, batch)].stats(kind), index[(b, batch)].stats(kind)
            rows.append({
                "a": a, "b": b, "kind": kind, "batch_size": batch,
                "median_a_ms": sa.median_ms, "median_b_ms": sb.median_ms,
                "median_ratio": _ratio(sa.median_ms, sb.median_ms),
                "p99_a_ms": sa.p99_ms, "p99_b_ms": sb.p99_ms,
                "p99_ratio": _ratio(sa.p99_ms, sb.p99_ms),
            })
    return rows
