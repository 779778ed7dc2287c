"""Shift benchmark: every failure score under the test corruption families and on OOD sets, per dataset.

    python benchmarks/shift.py --root ../shared/datasets                      # MNIST + Fashion-MNIST, seed 0
    python benchmarks/shift.py --root DATA --datasets cifar10 --seeds 0 1 --resume
    python benchmarks/shift.py --readme-only                                  # re-tabulate saved JSON
    python benchmarks/shift.py --select-only --datasets mnist --seeds 1 2     # choose among TRIALS (no test look)

Per dataset and seed it opens (or trains) the run folder of ``benchmarks/failure_prediction.py`` with
the same settings (same config: the same folder, reused) and its MetaErr candidates (``CANDIDATES``
there: the same base, other meta-models), then :func:`metaerr_edge.shift_eval.evaluate_shift` twice:

- **selection**: the calibration split under the **validation** corruption families (the only
  numbers any choice of preset or default may look at), clean calib AUROC and mean shifted AUROC;
- **report**: the test split under the **test** corruption families (reported only; nothing is
  chosen on it), five severities, and the OOD sets counted as failures.

Both passes also score out-of-distribution inputs, each counted as a failure: the selection pass the
validation outlier families made from calibration images (smoothed noise, blends:
:func:`metaerr_edge.data.outlier_sets`), the report the OOD datasets and uniform noise.
Outputs: ``benchmarks/results/shift_<dataset>.json`` (written after every seed: ``--resume`` skips
the seeds already there), ``shift_<dataset>.png`` (seed 0) and the tables in
``benchmarks/README.md`` between the shift markers.

``--select-only`` runs the selection pass alone, for :data:`TRIALS` (candidate meta-models of a
choice not made yet) beside :data:`CANDIDATES`: it reads no test image and no OOD dataset, and
writes ``benchmarks/results/selection_<dataset>.json`` (``--resume``: per seed) and its table.
A trial the rule picks then joins ``CANDIDATES`` and is reported by the two passes above.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from failure_prediction import (CANDIDATES, candidate_runs, candidate_specs, get_run,  # noqa: E402  (the same runs as
                                reusable, run_config, run_folder, same_config)  # the failure-prediction benchmark)

from metaerr_edge._fileio import atomic_write_text, dumps_json, loads_json  # noqa: E402
from metaerr_edge.shift_eval import ShiftReport, evaluate_shift, plot_shift  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- shift:begin -->", "<!-- shift:end -->"
SCORES = ["metaerr[probs]", "metaerr[mentor]", "msp", "margin", "logit-margin", "doctor-gini", "temperature",
          "maxlogit-pnorm", "rel-u", "mc-dropout", "trustscore", "confidnet"]
SUMMARY = ("clean_auroc", "shift_auroc_mean", "shift_auroc_min", "ood_auroc_mean", "risk_rise_max")
#: Candidates of a choice not made yet (``--select-only``; attempts log in benchmarks/README.md):
#: the robust preset's head also trained on synthetic outliers (training outlier families), as failures.
TRIALS = {
    "views2-oe05": {"modes": ("mentor-features",), "shift_views": 2, "outliers": 0.05},
    "views2-oe20": {"modes": ("mentor-features",), "shift_views": 2, "outliers": 0.2},
}


def parse_args(argv=None) -> argparse.Namespace:
    from failure_prediction import parse_args as fp_args

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)  # --readme is not --readme-only
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--max-n", type=int, default=2000, help="test images per set (0 = the run's whole test split)")
    ap.add_argument("--calib-n", type=int, default=1000, help="calibration images per validation-family set (selection)")
    ap.add_argument("--scores", nargs="+", default=SCORES)
    ap.add_argument("--resume", action="store_true", help="keep the seeds already in the results file")
    ap.add_argument("--readme-only", action="store_true")
    ap.add_argument("--select-only", action="store_true",
                    help="the selection pass alone (calib, validation families and outliers) for CANDIDATES and TRIALS")
    ap.add_argument("--threads", type=int, default=2)
    args, rest = ap.parse_known_args(argv)
    args.fp = fp_args(rest)  # the failure-prediction benchmark's options (--root, --epochs, --max-pool, ...)
    return args


def run_dataset(args, dataset: str) -> dict:
    path = RESULTS / f"shift_{dataset}.json"
    doc = loads_json(path.read_text()) if args.resume and path.is_file() else {"dataset": dataset, "seeds": {}}
    settings = {"config": {**run_config(args.fp, dataset, 0).to_dict(), "seed": "per seed"}, "max_n": args.max_n,
                "severities": sorted(set(args.severities)), "scores": list(args.scores), "calib_n": args.calib_n}
    def differs(key: str, value) -> bool:  # the config as a config: a field added since (at its default) is no change
        if key == "config":
            return not isinstance(doc.get(key), dict) or not same_config(doc[key], run_config(args.fp, dataset, 0))
        return loads_json(dumps_json(value)) != doc.get(key)

    changed = sorted(k for k, v in settings.items() if doc["seeds"] and differs(k, v))
    if changed:
        raise SystemExit(f"{path} holds seeds run with other {', '.join(changed)}; run without --resume to start over")
    doc.update(settings, torch=torch.__version__, threads=torch.get_num_threads())
    for seed in args.seeds:
        kept = doc["seeds"].get(str(seed))
        config = run_config(args.fp, dataset, seed)
        progress = not args.fp.quiet
        missing = [] if kept is None else [n for n in CANDIDATES if not any(k.endswith(f"@{n}]") for k in kept["summary"])]
        if kept is not None and not missing:
            print(f"{dataset} seed {seed}: kept from {path}", flush=True)
            continue
        if kept is not None and reusable(run_folder(args.fp, config), config):  # candidates added since: only they run
            doc["seeds"][str(seed)] = add_candidates(args, config, kept, missing)
            atomic_write_text(path, dumps_json(doc, indent=1))
            print(f"{dataset} seed {seed}: kept from {path}, candidates {missing} added from its run folder", flush=True)
            continue
        run, train_s = get_run(config, run_folder(args.fp, config), progress=progress)  # a kept seed whose folder is gone: anew
        cands = candidate_runs(run, progress)
        metaerr = [f"metaerr[{m}]" for m in run.config.meta.modes] + candidate_specs(cands)
        t0 = time.perf_counter()
        chosen_on = selection_pass(args, run, metaerr, cands, seed)
        select_s = time.perf_counter() - t0
        report = evaluate_shift(run, list(dict.fromkeys(args.scores + metaerr)), group="test", severities=args.severities,
                                root=args.fp.root, max_n=args.max_n or None, seed=seed, progress=progress, meta_runs=cands)
        doc["seeds"][str(seed)] = {**report.to_dict(), "test_accuracy": run.summary.get("test_accuracy"),
                                   "selection": {"split": "calib", "families": "validation", "n": args.calib_n,
                                                 "summary": chosen_on.summary()},
                                   "seconds": {"train": round(train_s, 1), "select": round(select_s, 1),
                                               "shift": round(time.perf_counter() - t0 - select_s, 1)}}  # fmt: skip
        doc.update(settings)
        atomic_write_text(path, dumps_json(doc, indent=1))
        print(f"{dataset} seed {seed}: acc {run.summary.get('test_accuracy'):.4f} {doc['seeds'][str(seed)]['seconds']}", flush=True)
    return doc


def add_candidates(args, config, kept: dict, names: list[str]) -> dict:
    """A kept seed with the CANDIDATES ``names`` added from its run folder: the same seeded sets
    (test images, corruptions, OOD images), their scores merged in, the summaries computed again; the
    selection pass again for them and MSP (which then also has the validation outliers)."""
    progress = not args.fp.quiet
    run, _ = get_run(config, run_folder(args.fp, config), progress=progress)
    t0 = time.perf_counter()
    cands = candidate_runs(run, progress, {n: CANDIDATES[n] for n in names})
    specs = candidate_specs(cands)
    chosen_on = selection_pass(args, run, specs, cands, config.seed)
    report = evaluate_shift(run, specs, group="test", severities=args.severities, root=args.fp.root,
                            max_n=args.max_n or None, seed=config.seed, progress=progress, meta_runs=cands)
    layout = lambda sets: [(x["set"], x["severity"], x["n"], round(x["error_rate"], 9)) for x in sets]  # noqa: E731
    if layout(report.sets) != layout(kept["sets"]):
        raise SystemExit(f"{run.path}: its sets under shift are not the kept seed's (another base or test subset?); "
                         "rerun without --resume")
    for old, new in zip(kept["sets"], report.sets):
        old["scores"].update(new["scores"])
    merged = ShiftReport.from_dict(kept)
    merged.thresholds.update(report.thresholds)
    selection = {**kept["selection"], "summary": {**kept["selection"]["summary"], **chosen_on.summary()}}
    return {**kept, "thresholds": merged.thresholds, "summary": merged.summary(), "selection": selection,
            "seconds": {**kept["seconds"], "added": round(time.perf_counter() - t0, 1)}}


def selection_pass(args, run, metaerr: list[str], cands: dict, seed: int) -> ShiftReport:
    """What a choice may look at: the calibration split under the validation families, and the
    validation outliers of its images (counted as failures)."""
    return evaluate_shift(run, ["msp"] + metaerr, group="validation", split="calib", severities=args.severities,
                          ood=True, max_n=args.calib_n or None, seed=seed, progress=not args.fp.quiet, meta_runs=cands)


def select_dataset(args, dataset: str) -> dict:
    """``--select-only``: the selection pass for CANDIDATES and TRIALS, per seed, into selection_<dataset>.json."""
    path = RESULTS / f"selection_{dataset}.json"
    doc = loads_json(path.read_text()) if args.resume and path.is_file() else {"dataset": dataset, "seeds": {}}
    settings = {"trials": TRIALS, "calib_n": args.calib_n, "severities": sorted(set(args.severities))}
    if doc["seeds"] and any(loads_json(dumps_json(v)) != doc.get(k) for k, v in settings.items()):
        raise SystemExit(f"{path} holds seeds run with other trials or settings; run without --resume to start over")
    doc.update(settings)
    for seed in args.seeds:
        if str(seed) in doc["seeds"]:
            print(f"{dataset} seed {seed}: kept from {path} (--resume)", flush=True)
            continue
        config = run_config(args.fp, dataset, seed)
        run, _ = get_run(config, run_folder(args.fp, config), progress=not args.fp.quiet)
        t0 = time.perf_counter()
        cands = candidate_runs(run, not args.fp.quiet, {**CANDIDATES, **TRIALS})
        metaerr = [f"metaerr[{m}]" for m in run.config.meta.modes] + candidate_specs(cands)
        train_s = time.perf_counter() - t0
        report = selection_pass(args, run, metaerr, cands, seed)
        ood = {x["set"]: {n: v["auroc"] for n, v in x["scores"].items()} for x in report.sets if x["kind"] == "ood"}
        doc["seeds"][str(seed)] = {"selection": {"split": "calib", "families": "validation", "n": args.calib_n,
                                                 "summary": report.summary(), "ood_sets": ood},
                                   "seconds": {"trials": round(train_s, 1), "select": round(time.perf_counter() - t0 - train_s, 1)}}
        atomic_write_text(path, dumps_json(doc, indent=1))
        print(f"{dataset} seed {seed}: {doc['seeds'][str(seed)]['seconds']}", flush=True)
    print(selection_table(doc))
    return doc


def summary_table(doc: dict) -> str:
    seeds = list(doc["seeds"].values())
    names = list(dict.fromkeys(n for s in seeds for n in s["summary"]))
    acc = np.mean([s["test_accuracy"] for s in seeds])
    cfg = doc["config"]
    lines = [f"### {doc['dataset']}: base {cfg['base']['arch']} ({cfg['base']['epochs']} epochs, pool {cfg['data']['max_pool']}), "
             f"clean test accuracy {acc:.4f}, {len(seeds)} seed(s), {doc.get('max_n')} test images per set", "",
             "Test corruption families (shot and impulse noise, defocus and motion blur, brightness, JPEG, rotation), "
             "severities " + ",".join(str(s) for s in doc["severities"]) + "; OOD sets counted as failures. Risk rise: the "
             "largest increase, over the corrupted sets, of the selective risk at each score's 90%-calibration-coverage "
             "threshold (- for scores outside [0, 1], which have no deployable threshold).", "",
             "| score | clean AUROC | test-shift mean AUROC | worst (family, severity) AUROC | OOD mean AUROC | max risk rise |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for n in names:
        cells = []
        have = [s for s in seeds if n in s["summary"]]
        for key in SUMMARY:
            vals = [s["summary"][n][key] for s in have if s["summary"][n].get(key) is not None]
            cells.append(f"{np.mean(vals):.4f}" if vals else "-")
        label = n if len(have) == len(seeds) else f"{n} ({len(have)} of {len(seeds)} seeds)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def selection_table(doc: dict) -> str:
    """What presets and defaults may be chosen on: calib AUROC, clean and under the validation families."""
    seeds = [s for s in doc["seeds"].values() if "selection" in s]
    if not seeds:
        return ""
    names = list(dict.fromkeys(n for s in seeds for n in s["selection"]["summary"]))
    lines = [f"#### {doc['dataset']}: selection numbers (calibration split, validation families and outliers; "
             f"{len(seeds)} seed(s), {seeds[0]['selection']['n']} calib images per set)", "",
             "| score | seeds | calib clean AUROC | calib validation-shift mean AUROC | worst cell | mean of the two | "
             "validation-outlier mean AUROC (seeds) | mean of the three |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in names:
        rows = [s["selection"]["summary"][n] for s in seeds if n in s["selection"]["summary"]]
        vals = {k: np.mean([r[k] for r in rows]) for k in ("clean_auroc", "shift_auroc_mean", "shift_auroc_min")}
        two = (vals["clean_auroc"] + vals["shift_auroc_mean"]) / 2
        # the validation outliers joined the selection pass later: a score selected before has no OOD value there
        ood = [r["ood_auroc_mean"] for r in rows if isinstance(r.get("ood_auroc_mean"), float) and np.isfinite(r["ood_auroc_mean"])]
        ood_cells = f"{np.mean(ood):.4f} ({len(ood)}) | {(2 * two + np.mean(ood)) / 3:.4f}" if ood else "- | -"
        lines.append(f"| {n} | {len(rows)} | {vals['clean_auroc']:.4f} | {vals['shift_auroc_mean']:.4f} | "
                     f"{vals['shift_auroc_min']:.4f} | {two:.4f} | {ood_cells} |")
    return "\n".join(lines) + "\n"


#: Where each dataset's base is timed in the latency benchmark's results (same architecture, random weights).
LATENCY_FILE, LATENCY_ARCH = "latency_presets_cpu.json", {"mnist": "small_cnn", "fashion-mnist": "small_cnn", "cifar10": "resnet9"}


def latency_key(label: str) -> str | None:
    """The latency benchmark's head for a score label: ``metaerr[mentor@stack-views2]`` -> ``mentor,stack``
    (views change training only, not the graph); None for the free baselines (a few nodes on the base)."""
    if not label.startswith("metaerr["):
        return None
    mode, _, cand = label[len("metaerr["):-1].partition("@")
    return mode + (",stack" if CANDIDATES.get(cand, {}).get("skip", "none") != "none" else "")


def _set_means(seeds: list[dict], name: str, kind: str, metric: str) -> float:
    """The seed mean (over the seeds that have ``name``) of its mean ``metric`` over the sets of ``kind``."""
    vals = [np.mean([x["scores"][name][metric] for x in s["sets"] if x["kind"] == kind]) for s in seeds if name in s["summary"]]
    return float(np.mean(vals))


def frontier_table(doc: dict) -> str:
    """Quality (clean, test shift, OOD) against the fused graph's latency over the base alone."""
    fp_path = RESULTS / f"failure_prediction_{doc['dataset']}.json"
    lat_path = RESULTS / LATENCY_FILE
    seeds = list(doc["seeds"].values())
    if not fp_path.is_file() or not lat_path.is_file() or not seeds:
        return ""
    clean = loads_json(fp_path.read_text())["aggregate"]["scores"]
    arch = LATENCY_ARCH.get(doc["dataset"])
    ratios = {(r["a"], r["batch_size"]): r["median_ratio"] for r in loads_json(lat_path.read_text())["ratios"]
              if r["b"] == f"{arch}/base/onnxruntime"}  # fmt: skip
    lines = [f"#### {doc['dataset']}: quality against latency (fused graph / {arch} base alone, ONNX Runtime CPU, 1 thread, "
             "median, measured side by side)", "",
             "| score | latency b1 | latency b32 | clean AUROC | clean AURC ×1000 | test-shift AUROC | test-shift AURC ×1000 | "
             "OOD AUROC | OOD AURC ×1000 |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in dict.fromkeys(n for s in seeds for n in s["summary"]):
        key = latency_key(name)
        lat = [ratios.get((f"{arch}/fused[{key}]/onnxruntime", b)) if key else None for b in (1, 32)]
        cells = [f"{x:.3f}x" if x else ("~1x" if key is None else "-") for x in lat]
        c = clean.get(name)
        cells += [f"{c['auroc']['mean']:.4f}" if c else "-", f"{1000 * c['aurc']['mean']:.2f}" if c else "-"]
        for kind in ("corruption", "ood"):
            cells += [f"{_set_means(seeds, name, kind, 'auroc'):.4f}", f"{1000 * _set_means(seeds, name, kind, 'aurc'):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: The shipped presets (metaerr_edge.config.PRESETS) as the benchmark's candidate labels.
PRESET_LABELS = {"cheap": "metaerr[probs@stack]", "robust": "metaerr[mentor-features@views2]"}
FREE = ("msp", "entropy", "margin", "logit-margin", "doctor-gini", "doctor-ratio", "temperature", "maxlogit-pnorm", "rel-u")
WHITE_BOX = ("mc-dropout", "trustscore", "confidnet")


def targets_table(docs: list[dict]) -> str:
    """The issue's targets, held or not, per dataset (test numbers: reported, never chosen on)."""
    cols, checks = [], {}
    for doc in docs:
        fp_path = RESULTS / f"failure_prediction_{doc['dataset']}.json"
        if not fp_path.is_file() or not doc.get("seeds"):
            continue
        fp = loads_json(fp_path.read_text())["aggregate"]["scores"]
        seeds = list(doc["seeds"].values())
        cheap, robust = PRESET_LABELS["cheap"], PRESET_LABELS["robust"]
        # Compared on the seeds that have both presets (a candidate added since may not be on every seed yet).
        seeds = [x for x in seeds if cheap in x["summary"] and robust in x["summary"]]
        if not seeds:
            continue
        mean = lambda n, k: round(float(np.mean([x["summary"][n][k] for x in seeds if x["summary"][n][k] is not None])), 4)  # noqa: E731
        worst = lambda n: round(float(min(x["summary"][n]["shift_auroc_min"] for x in seeds)), 4)  # noqa: E731
        shown = "" if len(seeds) == len(doc["seeds"]) else f" of {len(doc['seeds'])}"
        cols.append(f"{doc['dataset']} ({len(seeds)}{shown} seed(s))")
        au = lambda n: round(fp[n]["auroc"]["mean"], 4)  # noqa: E731  (compared at the precision shown)
        ar = lambda n: round(fp[n]["aurc"]["mean"], 5)  # noqa: E731
        free = [n for n in FREE if n in fp]
        bf_au, bf_ar = max(free, key=au), min(free, key=ar)
        # Seeds benchmarked before a free score joined the benchmark (their run folders gone) lack it: said.
        unscored = f" (not scored on the clean test split: {', '.join(n for n in FREE if n not in fp)})" if len(free) < len(FREE) else ""
        wb_au, wb_ar = max(WHITE_BOX, key=au), min(WHITE_BOX, key=ar)
        rows = {
            "clean: cheap >= best free score (AUROC, AURC)": (au(cheap) >= au(bf_au) and ar(cheap) <= ar(bf_ar),
                f"{au(cheap):.4f} vs {au(bf_au):.4f} ({bf_au}); {1000 * ar(cheap):.2f} vs {1000 * ar(bf_ar):.2f}{unscored}"),
            "clean: robust >= best white-box score (AUROC, AURC)": (au(robust) >= au(wb_au) and ar(robust) <= ar(wb_ar),
                f"{au(robust):.4f} vs {au(wb_au):.4f} ({wb_au}); {1000 * ar(robust):.2f} vs {1000 * ar(wb_ar):.2f}"),
        }  # fmt: skip
        for name, label in PRESET_LABELS.items():
            rows[f"test shift: {name} >= MSP (mean AUROC)"] = (mean(label, "shift_auroc_mean") >= mean("msp", "shift_auroc_mean"),
                f"{mean(label, 'shift_auroc_mean'):.4f} vs {mean('msp', 'shift_auroc_mean'):.4f}")  # fmt: skip
            rows[f"test shift: no cell of {name} below 0.5 (worst seed)"] = (worst(label) >= 0.5, f"{worst(label):.4f} (MSP {worst('msp'):.4f})")
            rows[f"90% threshold: {name}'s largest risk rise <= MSP's"] = (mean(label, "risk_rise_max") <= mean("msp", "risk_rise_max"),
                f"{mean(label, 'risk_rise_max'):.3f} vs {mean('msp', 'risk_rise_max'):.3f}")  # fmt: skip
        rows["OOD: robust >= MSP (mean AUROC)"] = (mean(robust, "ood_auroc_mean") >= mean("msp", "ood_auroc_mean"),
                                                   f"{mean(robust, 'ood_auroc_mean'):.4f} vs {mean('msp', 'ood_auroc_mean'):.4f}")
        for k, v in rows.items():
            checks.setdefault(k, []).append(v)
    if not cols:
        return ""
    lines = [f"### Targets (presets: cheap = `{PRESET_LABELS['cheap']}`, robust = `{PRESET_LABELS['robust']}`; "
             "means over the seeds present, compared at the precision shown (a tie holds); test numbers, reported only)", "",
             "| target | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k, vals in checks.items():
        lines.append(f"| {k} | " + " | ".join(f"{'**held**' if ok else 'not held'}: {txt}" for ok, txt in vals) + " |")
    return "\n".join(lines) + "\n"


def write_readme() -> None:
    """The tables from the results files, and each dataset's seed-0 plot drawn again from its JSON."""
    docs = [loads_json(p.read_text()) for p in sorted(RESULTS.glob("shift_*.json"))]
    for doc in docs:
        if doc.get("seeds"):
            first = doc["seeds"][min(doc["seeds"], key=int)]
            plot_shift(ShiftReport.from_dict(first), RESULTS / f"shift_{doc['dataset']}.png")
    parts = [targets_table(docs)]
    parts += [summary_table(d) + "\n" + selection_table(d) + "\n" + frontier_table(d) for d in docs if d.get("seeds")]
    block = f"{BEGIN}\n<!-- generated by benchmarks/shift.py; edits here are overwritten -->\n\n" + "\n".join(parts) + f"\n{END}"
    text = README.read_text()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Failure prediction under shift\n\n" + block + "\n"
    atomic_write_text(README, text)


def main(argv=None) -> None:
    global RESULTS, README
    args = parse_args(argv)
    if args.fp.out != str(RESULTS):  # --out / --readme (the failure-prediction benchmark's options) move both
        RESULTS = Path(args.fp.out)
    README = Path(args.fp.readme)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.select_only:
        for dataset in args.datasets:
            select_dataset(args, dataset)
        return
    if not args.readme_only:
        for dataset in args.datasets:
            run_dataset(args, dataset)
            write_readme()
    write_readme()


if __name__ == "__main__":
    main()
