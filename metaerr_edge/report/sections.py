"""The report's sections, one function each: plain data in (what the run folder and the other files hold), a
:class:`~metaerr_edge.report.html.Section` out. A section whose data is absent is not built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from metaerr_edge.plots.style import is_metaerr
from metaerr_edge.report.html import Column, Section, esc, figure, fmt, key_values, table

#: ``render(draw)``: ``draw(path)`` writes a figure there; the report embeds its bytes.
Render = Callable[[Callable[[Any], Any]], bytes]

_EVAL_COLUMNS = (
    Column("AUROC", "auroc", better="high"), Column("95% CI", "auroc_ci"),
    Column("AUPR-Err", "aupr_error", better="high"), Column("AUPR-Succ", "aupr_success", better="high"),
    Column("FPR@95TPR", "fpr95tpr", better="low"), Column("AURC ‰", "aurc", 2, 1000.0, "low"), Column("95% CI", "aurc_ci"),
    Column("E-AURC ‰", "eaurc", 2, 1000.0, "low"), Column("AUGRC ‰", "augrc", 2, 1000.0, "low"),
    Column("risk@90% cov.", "risk@cov90", better="low"), Column("cov.@2% risk", "cov@risk2", better="high"),
)


def run_section(config: Mapping[str, Any], metrics: Mapping[str, Any] | None, run_path: str) -> Section:
    """The data, splits, base and meta-model of the run, from its config.json (and metrics.json's summary)."""
    cfg, summary = config.get("config", {}), config.get("summary", {})
    data, base, meta = cfg.get("data", {}), cfg.get("base", {}), cfg.get("meta", {})
    sizes = summary.get("split_sizes", {})
    ev = (metrics or {}).get("summary", {})
    labels = meta.get("labels")
    how_labels = (f"cross-fit over {meta.get('folds')} folds (each fold's errors come from a base that did not see it)"
                  if labels == "crossfit" else "a held-out meta-train split the base did not train on")
    pairs = [
        ("run folder", run_path),
        ("dataset", f"{data.get('dataset')} (root {data.get('root') or 'embedded'})"),
        ("classes", ", ".join(map(str, config.get("classes", []))) or "-"),
        ("input", "x".join(map(str, config.get("input_shape", []))) or "-"),
        ("base", f"{base.get('arch')}{' ' + json.dumps(base['arch_kwargs']) if base.get('arch_kwargs') else ''}, {base.get('epochs')} epochs, batch "
                 f"{base.get('batch_size')}, augmentation {base.get('augment')}"),
        ("base test accuracy", fmt(ev.get("test_accuracy", summary.get("test_accuracy")))),
        ("error labels", how_labels),
        ("meta-model modes", f"{', '.join(meta.get('modes', []))} (the first is deployed)"),
        ("meta-train errors", f"{summary.get('meta_train_errors')} of {summary.get('meta_train_n')} meta-train predictions"),
        ("seed / device", f"{cfg.get('seed')} / {cfg.get('device')}" + _processes(summary.get("distributed"))),
        ("training time", f"{summary.get('train_seconds', '-')} s (torch {summary.get('torch', '-')})"),
    ]
    split_rows = [(name, {"n": n, "share": n / max(1, sum(sizes.values()))}) for name, n in sizes.items()]
    body = key_values(pairs) + "<h3>Splits</h3>" + table([Column("images", "n", 0), Column("share", "share", 3)],
                                                         split_rows, first="split")
    modes = summary.get("meta", {})
    if modes:
        rows = [(m, {"epoch": s.get("best_epoch"), "auroc": s.get("val_auroc"), "n": s.get("n_train"),
                     "errors": s.get("n_errors")}) for m, s in modes.items()]
        body += "<h3>Meta-models (checkpoint chosen on meta-validation AUROC)</h3>" + table(
            [Column("best epoch", "epoch", 0), Column("meta-val AUROC", "auroc"), Column("train rows", "n", 0),
             Column("errors seen", "errors", 0)], rows, first="mode", highlight=list(modes))
    return Section("run", "Run", "What was trained on what. The splits are disjoint and seeded: the base trains on "
                   "base-train only; the meta-model learns from the base's errors on images the base did not train on; "
                   "thresholds are fitted on calibration; every number below the run section is measured on test.", body)


def evaluation_section(metrics: Mapping[str, Any]) -> Section:
    """Every score's failure-prediction metrics on the test split, with bootstrap CIs, best per column marked."""
    summary = metrics.get("summary", {})
    rows = []
    for name, r in metrics.get("metrics", {}).items():
        row = dict(r)
        row["auroc_ci"] = _ci(r.get("auroc_low"), r.get("auroc_high"), 3, 1.0)
        row["aurc_ci"] = _ci(r.get("aurc_low"), r.get("aurc_high"), 2, 1000.0)
        rows.append((name, row))
    body = (f"<p>{esc(metrics.get('dataset'))} / {esc(metrics.get('arch'))}: test n = {summary.get('n_test')}, "
            f"base accuracy {fmt(summary.get('test_accuracy'))}, error rate r = {fmt(summary.get('error_rate'))} "
            "(a random score has AUPR-Err about r). Green cells are the best of their column (ties all marked); "
            "MetaErr rows are in blue.</p>" + table(_EVAL_COLUMNS, rows, first="score",
                                                    highlight=[n for n, _ in rows if is_metaerr(n)]))
    for name, why in metrics.get("skipped", {}).items():
        body += f'<p class="note">skipped {esc(name)}: {esc(why)}</p>'
    return Section("evaluation", "Failure prediction on the test split",
                   "A failure score should be high exactly where the base is wrong. AUROC: the chance that a wrong "
                   "prediction scores above a right one (0.5 = random). AURC and AUGRC: the area under the risk-coverage "
                   "and generalized-risk curves, lower is better, shown x1000. risk@90% cov.: the error rate among the "
                   "90% of inputs a device keeps; cov.@2% risk: how much it can keep at 2% error. The intervals are "
                   "95% bootstrap CIs over test images: overlapping intervals mean the data cannot tell the scores apart.",
                   body)


def curves_section(render: Render, plots: Mapping[str, Callable[..., Any]], names: Sequence[str],
                   scores: np.ndarray | None, is_error: np.ndarray | None, title: str, fallback_png: bytes | None) -> Section | None:
    """Risk-coverage and generalized-risk curves from the per-sample test scores (or the run's own PNG)."""
    if scores is None or is_error is None:
        if fallback_png is None:
            return None
        body = (figure(fallback_png, "risk-coverage curves", "risk_coverage.png of the run")
                + '<p class="note">This run was evaluated before scores.npz was kept: run <code>metaerr-edge evaluate '
                  'RUN</code> again for the reference curves and the generalized-risk plot.</p>')
    else:
        by_name = {n: scores[i] for i, n in enumerate(names)}
        body = (figure(render(lambda path: plots["risk_coverage"](by_name, is_error, path, title=title)), "risk-coverage curves",
                       "Selective risk (error rate among accepted inputs) at each coverage; oracle = a perfect score, "
                       "random = no score.")
                + figure(render(lambda path: plots["generalized_risk"](by_name, is_error, path, title=title)), "generalized-risk curves",
                         "Generalized risk (accepted errors / all inputs) at each coverage: its area is AUGRC."))
    return Section("curves", "Risk-coverage curves",
                   "Sort the test inputs by failure score, keep the lowest-scored fraction (coverage) and defer the "
                   "rest. A curve that stays low further to the right keeps more inputs at the same error rate. The "
                   "oracle curve is the best any score could do, the random line what no score does; read the gap "
                   "between a score and the oracle, not only between scores. Scores with identical curves share one "
                   "line (named together).", body)


def shift_section(render: Render, plot_shift: Callable[..., Any], report: Any, doc: Mapping[str, Any]) -> Section:
    """Per score: clean vs corrupted vs OOD AUROC, the deployed threshold under shift, and AUROC per severity."""
    summary = doc.get("summary", {})
    names = list(summary)
    cols = (Column("clean AUROC", "clean_auroc", better="high"), Column("shift mean AUROC", "shift_auroc_mean", better="high"),
            Column("worst shift cell", "shift_auroc_min", better="high"), Column("OOD mean AUROC", "ood_auroc_mean", better="high"),
            Column("max risk rise", "risk_rise_max", better="low"))
    meta = [n for n in names if is_metaerr(n)]
    body = (f"<p>{esc(doc.get('family_group'))} corruption families (five severities each) and out-of-distribution sets "
            f"counted as failures; n = {doc.get('n_test_used')} test images per set.</p>"
            + table(cols, [(n, summary[n]) for n in names], first="score", highlight=meta))
    body += ("<h3>AUROC per set: clean, each corruption family (mean over severities), each OOD set</h3>"
             + _per_family(doc, names))
    body += (f"<h3>The deployed threshold under shift (each score's at {fmt(doc.get('threshold_coverage'), 2)} "
             "calibration coverage)</h3>" + _threshold_table(doc, names))
    body += figure(render(lambda path: plot_shift(report, path)), "AUROC against severity per family",
                   "AUROC against severity (0 = clean) per family, and per OOD set; the dotted line is chance (0.5).")
    return Section("shift", "Under shift and out of distribution",
                   "A camera sees noise, blur, bad exposure and objects of no class it knows. Each set is the test split "
                   "under one corruption at one severity, or the clean test split mixed with OOD images (each counted "
                   "as a failure). A score that falls below 0.5 AUROC there turns confident where it is wrong. The "
                   "threshold table shows what the calibrated defer threshold does: coverage that rises under shift "
                   "while risk rises too means the device keeps more of what it gets wrong.", body)


def latency_section(render: Render, plot_latency: Callable[..., Any], results: Sequence[Any], ratios: Sequence[Mapping[str, Any]],
                    environment: Mapping[str, Any], source: str) -> Section:
    """The latency table per backend and batch, the side-by-side ratios, and the distributions."""
    rows = []
    for r in results:
        s = r.host
        rows.append((r.name, {"backend": r.backend, "batch": r.batch_size, "iters": s.iterations, "median": s.median_ms,
                              "p90": s.p90_ms, "p99": s.p99_ms, "max": s.max_ms, "tput": s.throughput,
                              "device": r.device.median_ms if r.device is not None else None}))
    cols = (Column("backend", "backend"), Column("batch", "batch", 0), Column("iterations", "iters", 0),
            Column("median ms", "median", 3), Column("p90 ms", "p90", 3), Column("p99 ms", "p99", 3),
            Column("max ms", "max", 3), Column("images/s", "tput", 1), Column("device median ms", "device", 3))
    pk = environment.get("packages", {})
    env = [("recorded", environment.get("recorded_at")), ("CPU", f"{environment.get('cpu_model')} "
            f"({environment.get('cpu_affinity')} usable cores)"), ("GPU", environment.get("gpu") or "none"),
           ("packages", ", ".join(f"{k} {v}" for k, v in pk.items() if v)), ("source", source)]
    body = key_values(env) + table(cols, rows, first="result")
    if ratios:
        rcols = (Column("vs", "b"), Column("batch", "batch_size", 0), Column("median ratio", "median_ratio", 3),
                 Column("p99 ratio", "p99_ratio", 3))
        body += "<h3>Ratios, measured side by side (> 1: the first is slower)</h3>" + table(
            rcols, [(r["a"], r) for r in ratios], first="result")
    if all(len(r.host.samples_ms) for r in results):
        positive = np.concatenate([np.asarray(r.host.samples_ms, np.float64) for r in results])
        positive = positive[positive > 0]
        log = positive.size > 0 and positive.max() / positive.min() > 10  # else the slowest calls flatten every box
        body += figure(render(lambda path: plot_latency(results, path, log_scale=log)), "latency distributions",
                       "Per batch size, one box per result: box p25-p75, line median, whiskers p1 and p99, dots beyond."
                       + (" Log scale: the slowest calls are over 10x the fastest." if log else ""))
    else:
        body += '<p class="note">This bench JSON keeps no per-call samples: no distribution plot.</p>'
    return Section("latency", "Latency", "Host latency is the wall time of one predict call (input checks, copies, the "
                   "run); the median is the typical call and p99 the one in a hundred that a deadline has to survive. "
                   "Compare results measured in the same run only: the ratios table is the honest comparison on a "
                   "shared machine.", body)


def tradeoff_section(render: Render, table_obj: Any, doc: Mapping[str, Any]) -> Section:
    """The deferral sweep on the calibration split, with the recommended operating point."""
    inputs, best = doc.get("inputs", {}), doc.get("recommended") or {}
    rows = doc.get("rows", [])
    keep = sorted(set(np.linspace(0, len(rows) - 1, min(12, len(rows))).round().astype(int).tolist()) | {best.get("index", 0)})
    cols = (Column("threshold", "threshold"), Column("coverage", "coverage", 3), Column("deferral", "deferral_rate", 3),
            Column("system accuracy", "system_accuracy"), Column("selective risk", "selective_risk"),
            Column("mean ms", "mean_latency_ms", 3), Column("p99 ms", "p99_latency_ms", 3))
    if inputs.get("deadline_ms") is not None:
        cols += (Column("p99 deadline", "deadline"),)

    def point(i: int) -> str:
        rate = rows[i].get("deferral_rate")
        return ("recommended" if i == best.get("index") else "always device" if rate == 0 else
                "always fallback" if rate == 1 else f"row {i}")

    shown = [(point(i), {**rows[i], "deadline": "met" if rows[i].get("meets_deadline") else "missed"})
             for i in keep if i < len(rows)]
    fb, dev = inputs.get("fallback", {}), inputs.get("device", {})
    pairs = [("swept on", f"{inputs.get('split')} split, n = {inputs.get('calibration_n')}, on-device error rate "
                          f"{fmt(inputs.get('calibration_error_rate'))}"),
             ("on-device latency", f"{dev.get('result')} from {dev.get('source')} (median {fmt(dev.get('median_ms'), 3)} ms)"),
             ("fallback", f"median {fmt(fb.get('median_ms'), 3)} ms from {fb.get('source')}, accuracy {fb.get('accuracy')}"),
             ("deadline (p99)", inputs.get("deadline_ms") or "none"), ("accuracy target", inputs.get("min_accuracy") or "none"),
             ("recommended", ", ".join(f"{k} {fmt(best.get(k), 4)}" for k in ("threshold", "deferral_rate", "system_accuracy",
                                                                            "p99_latency_ms") if k in best) or "none feasible")]
    body = key_values(pairs) + table(cols, shown, first="point", highlight=["recommended"])
    body += figure(render(lambda path: table_obj.plot(path, deadline_ms=inputs.get("deadline_ms"),
                                                      min_accuracy=inputs.get("min_accuracy"))),
                   "deferral trade-off", "System accuracy and p99 latency against the deferral rate.")
    return Section("tradeoff", "When to defer: the accuracy/latency trade-off",
                   "Each row is one threshold: inputs scored above it go to the fallback (a bigger model, a server, a "
                   "person), which costs its latency and buys its accuracy. Left is always-on-device, right is "
                   "always-fallback. The recommended point is the cheapest that meets the deadline and accuracy target.",
                   body)


def contract_section(info: Mapping[str, Any]) -> Section:
    """What the fused model file says about itself: tensors, preprocessing, classes, threshold, versions."""
    c = info.get("contract") or {}
    inp, th = c.get("input", {}), c.get("threshold", {})
    tensors = [(t["name"], {"role": role, "dtype": t["dtype"], "shape": " x ".join(map(str, t["shape"]))})
               for role, group in (("input", info.get("inputs", [])), ("output", info.get("outputs", []))) for t in group]
    body = key_values([("file", info.get("path")), ("size", f"{info.get('size_bytes', 0) / 1e6:.2f} MB"),
                       ("sha256", info.get("sha256")), ("status", info.get("status")),
                       ("opsets", ", ".join(f"{k} {v}" for k, v in (info.get("opsets") or {}).items()) or "-"), ("nodes", info.get("node_count")),
                       ("precision", (c.get("precision") or {}).get("name"))])
    body += "<h3>Tensors</h3>" + table((Column("role", "role"), Column("dtype", "dtype"), Column("shape", "shape")),
                                       tensors, first="name")
    body += "<h3>Preprocessing the device must do</h3>" + key_values([
        ("layout / dtype", f"{inp.get('layout')} {inp.get('dtype')}"),
        ("size", f"{inp.get('channels')} x {inp.get('height')} x {inp.get('width')} ({inp.get('channel_order')})"),
        ("value range", inp.get("value_range")), ("normalisation (inside the graph)", f"mean {inp.get('mean')}, std {inp.get('std')}")])
    body += "<h3>Classes</h3><p>" + esc(", ".join(map(str, c.get("classes", [])))) + "</p>"
    how = {"coverage": f"accept {fmt(th.get('target_coverage'), 3)} of calibration inputs",
           "risk": f"selective risk <= {th.get('target_risk')} with confidence 1 - {th.get('delta')} (SGR bound)"}
    body += "<h3>Defer threshold</h3>" + key_values([
        ("value", th.get("value")), ("how it was chosen", how.get(th.get("method"), th.get("method"))),
        ("calibration images", th.get("calibration_n")), ("achieved coverage", fmt(th.get("achieved_coverage"))),
        ("achieved risk", fmt(th.get("achieved_risk"))), ("risk upper bound", fmt(th.get("risk_upper_bound"))),
        ("rule", (c.get("score") or {}).get("defer_rule"))])
    body += "<h3>Versions</h3>" + key_values(sorted((c.get("versions") or {}).items()))
    for problem in info.get("problems", []):
        body += f'<p class="note">{esc(problem)}</p>'
    return Section("contract", "The deployed model's contract",
                   "What the ONNX file carries inside it (read from the file, no runtime needed): what to feed it, "
                   "what it returns, and the defer rule. A device that follows this needs nothing else from training.",
                   body)


def _ci(low: float | None, high: float | None, digits: int, scale: float) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "-"
    return f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def _processes(dist: Mapping[str, Any] | None) -> str:
    """``", 2 processes (gloo)"`` for a data-parallel run; nothing for one process (or a run that predates it)."""
    if not dist or int(dist.get("world_size", 1)) <= 1:
        return ""
    return f", {dist['world_size']} processes ({dist.get('backend')})"


def _per_family(doc: Mapping[str, Any], names: Sequence[str]) -> str:
    """One row per score, one column per set (clean, each family averaged over severities, each OOD set)."""
    fams: dict[str, list[dict[str, Any]]] = {}
    for s in doc.get("sets", []):
        fams.setdefault(s["set"], []).append(s)
    rows = []
    for n in names:
        row = {}
        for fam, sets in fams.items():
            vals = [s["scores"][n]["auroc"] for s in sets if s["scores"].get(n, {}).get("auroc") is not None]
            row[fam] = float(np.mean(vals)) if vals else None
        rows.append((n, row))
    cols = [Column(fam.removeprefix("ood:") + (" (OOD)" if fam.startswith("ood:") else ""), fam, 3, better="high") for fam in fams]
    return table(cols, rows, first="score", highlight=[n for n in names if is_metaerr(n)])


def _threshold_table(doc: Mapping[str, Any], names: Sequence[str]) -> str:
    sets = doc.get("sets", [])
    clean = sets[0]["scores"] if sets else {}
    rows = []
    for n in names:
        if clean.get(n, {}).get("coverage") is None:
            continue
        shifted = [s["scores"][n] for s in sets if s.get("kind") == "corruption"]
        risks = [r["risk"] for r in shifted if r.get("risk") is not None]
        rows.append((n, {"cc": clean[n]["coverage"], "cr": clean[n].get("risk"),
                         "sc": float(np.mean([r["coverage"] for r in shifted])) if shifted else None,
                         "sr": float(np.mean(risks)) if risks else None, "wr": max(risks) if risks else None}))
    cols = (Column("clean coverage", "cc", 3), Column("clean risk", "cr", better="low"),
            Column("shift mean coverage", "sc", 3), Column("shift mean risk", "sr", better="low"),
            Column("worst shift risk", "wr", better="low"))
    return table(cols, rows, first="score", highlight=[n for n, _ in rows if is_metaerr(n)])
