"""Pseudo-labelling benchmark: MetaErr against confidence, class-balanced top-k and MC-Dropout (UPS).

Settings: MNIST with 100 and 1,000 labels, Fashion-MNIST with 1,000 and 4,000, CIFAR-10 with 4,000 and
10,000. Every selector gets the same labelled set, pool, test split, schedule and round-0 base per
seed. The count-based selectors (``COUNT_MATCHED``) get, per round, the number of pseudo-labels the
``confidence`` selector kept in the same seed and round, so their precision compares at equal count.

Two protocols (``--protocol``; any flag given explicitly wins over the protocol's default):

- ``first`` (the first attempt, ``results/pseudo_label_<setting>.json``): a pool of 2,000, a test
  subset of 1,000, a width-16 CNN, 2 rounds; about an hour on one CPU thread.
- ``realistic`` (``results/pseudo_label_realistic_<setting>.json``): the whole unlabelled pool and
  test split, 5 rounds, the base retrained from scratch each round, a width-32 CNN at batch 128
  on CPU (``--arch resnet9`` with the failure-prediction benchmark's recipes on a GPU); resumable
  per seed and selector (``--resume``), so it can be spread over sessions. Two comparisons:
  *equal count on the same model*: along the ``confidence`` run, every selector of ``--shadows``
  picks each round from the same base at confidence's count, and its precision is recorded
  (``run_pseudo_labelling(shadows=...)``: no training run per selector, so every selector gets this
  on CPU); *own trajectory*: each selector of ``--selectors`` trains its own rounds on its own
  pseudo-labels (final test accuracy; count-matched selectors keep confidence's count per round).
  A selector run killed mid-way goes on from its last finished round (``benchmarks/runs/pseudo_label/``).

    python benchmarks/pseudo_label.py --root ../shared/datasets            # all settings, first protocol
    python benchmarks/pseudo_label.py --protocol realistic --settings mnist-100 --seeds 0 1 2 --resume
    python benchmarks/pseudo_label.py --readme-only                        # re-tabulate saved JSON
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np

from metaerr_edge._fileio import loads_json, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs" / "pseudo_label"  # per-round checkpoints of the selector runs in progress (gitignored; beside --out)
README = HERE / "README.md"
SETTINGS = {  # name -> (dataset, labels)
    "mnist-100": ("mnist", 100),
    "mnist-1000": ("mnist", 1000),
    "fashion-mnist-1000": ("fashion-mnist", 1000),
    "fashion-mnist-4000": ("fashion-mnist", 4000),
    "cifar10-4000": ("cifar10", 4000),
    "cifar10-10000": ("cifar10", 10000),
}
SELECTORS = ("confidence", "topk", "mc-dropout", "metaerr", "metaerr-topk", "metaerr-mentor-topk", "metaerr-cheap-topk",
             "metaerr-robust-topk", "metaerr-more-topk", "metaerr-balanced", "metaerr-perclass", "mc-dropout-topk")
COUNT_MATCHED = ("topk", "metaerr-topk", "metaerr-mentor-topk", "metaerr-cheap-topk", "metaerr-robust-topk", "metaerr-more-topk",
                 "metaerr-balanced", "metaerr-perclass", "mc-dropout-topk")
#: The shipped MetaErr presets as selectors (the targets are checked on these; the rest are explorations).
PRESETS = {"cheap": "metaerr-cheap-topk", "robust": "metaerr-robust-topk"}
#: Realistic protocol: the selectors that train their own rounds (final accuracy), and those compared
#: at equal count on the confidence run's models (every other selector).
TRAJECTORIES = ("confidence", "topk", "mc-dropout", *PRESETS.values())
SHADOWS = tuple(s for s in SELECTORS if s != "confidence")
#: benchmark label -> registered selector (with the options of ``run_setting``)
REGISTERED = {"metaerr-mentor-topk": "metaerr-topk", "metaerr-cheap-topk": "metaerr-topk", "metaerr-robust-topk": "metaerr-topk",
              "metaerr-more-topk": "metaerr-topk"}
FIRST_SETTINGS = ("mnist-100", "mnist-1000", "fashion-mnist-1000", "cifar10-4000")
#: Per-protocol defaults of the schedule flags (a flag given explicitly wins).
PROTOCOLS = {
    "first": {"rounds": 2, "pool_size": 2000, "max_test": 1000, "epochs": 3, "min_steps": 300, "batch_size": 32, "lr": 5e-3,
              "width": 16, "threshold": 0.9, "selectors": SELECTORS[:6], "shadows": ()},
    "realistic": {"rounds": 5, "pool_size": 0, "max_test": 0, "epochs": 3, "min_steps": 300, "batch_size": 128, "lr": 2e-3,
                  "width": 32, "threshold": 0.95, "selectors": TRAJECTORIES, "shadows": SHADOWS},
}
SECTION = "## Pseudo-labelling"


def run_setting(name: str, args: argparse.Namespace) -> dict:
    import torch

    from metaerr_edge.data import load_dataset
    from metaerr_edge.models import FitConfig
    from metaerr_edge.semisup import (
        create_selector,
        run_pseudo_labelling,
        sample_labelled,
        train_round0,
    )

    dataset, n_labels = SETTINGS[name]
    data = load_dataset(dataset, args.root)
    fit = FitConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        augment="shift_flip" if data.channels == 3 else "shift", device=args.device,
    )  # fmt: skip
    if args.arch == "small_cnn":
        arch_kwargs = {"width": args.width}
    else:  # the failure-prediction benchmark's resnet9: widths 32/64/128 on the grey sets, full width on CIFAR-10
        arch_kwargs = {"widths": [32, 64, 128]} if data.channels == 1 else {}
    common = {
        "arch": args.arch, "arch_kwargs": arch_kwargs, "pool_size": args.pool_size or None, "max_test": args.max_test or None,
        "min_steps": args.min_steps, "progress": False,
    }  # fmt: skip
    options = {
        "confidence": {"threshold": args.threshold},
        "topk": {"threshold": args.threshold},
        "mc-dropout": {"threshold": args.threshold, "max_std": args.max_std, "passes": args.mc_passes},
        "mc-dropout-topk": {"threshold": args.threshold, "passes": args.mc_passes},
        "metaerr": {"mode": args.meta_mode, "folds": args.folds, "meta_epochs": args.meta_epochs},
        "metaerr-topk": {"mode": args.meta_mode, "folds": args.folds, "meta_epochs": args.meta_epochs, "threshold": args.threshold},
        "metaerr-mentor-topk": {"mode": "mentor", "folds": args.folds, "meta_epochs": args.meta_epochs, "threshold": args.threshold},
    }
    meta = {"mode": args.meta_mode, "folds": args.folds, "meta_epochs": args.meta_epochs, "threshold": args.threshold}
    options.update({
        "metaerr-cheap-topk": {**meta, "skip": "auto"},  # the cheap preset's head
        "metaerr-robust-topk": {**meta, "mode": "mentor-features", "shift_views": 2},  # the robust preset's head
        "metaerr-more-topk": {**meta, "meta_rows": "labelled+pseudo"},  # more errors: labelled + accepted, cross-fitted
        "metaerr-balanced": meta,
        "metaerr-perclass": meta,
    })
    def create(sel: str):
        return create_selector(REGISTERED.get(sel, sel), **options[sel])

    runs = _resumable_runs(name, args) if args.resume else []
    for seed in args.seeds:
        done = {r["selector"]: r for r in runs if r["seed"] == seed}
        if "confidence" in done and not set(args.shadows) <= shadow_names(done["confidence"]):
            old_counts = [x["kept"] for x in done.pop("confidence")["rounds"]]  # rerun with the shadows it lacks
            runs = [r for r in runs if not (r["seed"] == seed and r["selector"] == "confidence")]
        else:
            old_counts = None
        todo = [sel for sel in args.selectors if sel not in done]
        if old_counts is not None and "confidence" not in todo:
            todo.insert(0, "confidence")
        if not todo:
            continue
        torch.manual_seed(seed)
        labelled = sample_labelled(data.train.labels, n_labels, seed)
        t0 = time.perf_counter()
        base0 = train_round0(data, labelled, fit, seed, arch=args.arch, arch_kwargs=arch_kwargs, min_steps=args.min_steps)
        round0_s = time.perf_counter() - t0
        conf_counts = [r["kept"] for r in done["confidence"]["rounds"][1:]] if "confidence" in done else None
        if conf_counts is None and any(sel in COUNT_MATCHED for sel in todo) and "confidence" not in todo:
            todo.insert(0, "confidence")  # count-matched selectors need confidence's counts of this seed
        for sel in sorted(todo, key=lambda name: name != "confidence"):
            budgets = conf_counts if sel in COUNT_MATCHED else None
            t0 = time.perf_counter()
            shadows = {s: create(s) for s in args.shadows} if sel == "confidence" else None
            ckpt = RUNS / f"{args.protocol}_{name}_s{seed}_{sel}.pt"  # a run killed mid-way goes on from its last round
            res = run_pseudo_labelling(data, labelled, create(sel), args.rounds, fit, seed, budgets=budgets, warm_start=base0,
                                       shadows=shadows, checkpoint=ckpt, **common)  # fmt: skip
            shadow_seconds = sum(s["seconds"] for r in res.rounds for s in r.shadows.values())
            seconds = time.perf_counter() - t0 - shadow_seconds  # the selector's own run; the shadows are timed apart
            if sel == "confidence":
                conf_counts = [r.kept for r in res.rounds[1:]]
                if old_counts is not None and [r.kept for r in res.rounds] != old_counts:
                    raise SystemExit(f"[{name}] seed {seed}: the confidence run, rerun for its shadows, kept {conf_counts} "
                                     f"where the saved one kept {old_counts[1:]}; the count-matched runs of this seed no "
                                     "longer match it. Rerun the seed without --resume.")
            runs.append({**res.to_dict(), "selector": sel, "seconds": seconds, "shadow_seconds": shadow_seconds,
                         "round0_seconds": round0_s, "count_matched_to": "confidence" if budgets else None})
            last = res.rounds[-1]
            print(
                f"[{name}] seed {seed} {sel:13s} kept {[r.kept for r in res.rounds[1:]]} "
                f"prec {[round(r.precision, 4) for r in res.rounds[1:]]} acc {[round(r.test_acc, 4) for r in res.rounds]} "
                f"final {last.test_acc:.4f} ({seconds:.0f}s)", flush=True,
            )  # fmt: skip
            for s in shadows or ():
                print(f"[{name}] seed {seed}   at its count, {s:20s} prec "
                      f"{[round(r.shadows[s]['precision'], 4) for r in res.rounds[1:]]}", flush=True)
            partial = _setting_result(name, dataset, n_labels, args, options, runs, complete=False)
            _save(result_path(name, args.protocol), partial)  # each selector run survives an interruption
            ckpt.unlink(missing_ok=True)
    return _setting_result(name, dataset, n_labels, args, options, runs, complete=True)


def _save(path: Path, result: dict) -> None:
    """Strict JSON: round 0 keeps no pseudo-labels, so its precision is written as null (with the reason)."""
    write_json(path, result, indent=1, reasons={"precision": "no pseudo-labels kept in this round (round 0 keeps none)"})


def _load(path: Path) -> dict:
    """A saved result with its NaNs restored (the tables read NaN as 'none kept' / 'not measured')."""
    return loads_json(path.read_text())


def result_path(setting: str, protocol: str) -> Path:
    """Where a setting's results live: the first protocol's files keep their names."""
    return RESULTS / (f"pseudo_label_{setting}.json" if protocol == "first" else f"pseudo_label_{protocol}_{setting}.json")


def _schedule_key(schedule: dict) -> dict:
    skip = ("seeds", "resume", "threads", "root", "selectors", "shadows", "protocol", "out", "readme")
    return {k: v for k, v in schedule.items() if k not in skip}


def shadow_names(run: dict) -> set[str]:
    """The shadow selectors a saved run compared in every round (none for a run without rounds)."""
    rounds = run["rounds"][1:]
    return set.intersection(*(set(x.get("shadows", {})) for x in rounds)) if rounds else set()


def _resumable_runs(name: str, args: argparse.Namespace) -> list[dict]:
    """Runs saved for ``name`` under the same schedule, so ``--resume`` adds missing seeds and selectors."""
    path = result_path(name, args.protocol)
    if not path.exists():
        return []
    saved = _load(path)
    mine = _schedule_key({k: v for k, v in vars(args).items() if k not in ("settings", "readme_only")})
    if {"arch": "small_cnn", **_schedule_key(saved["schedule"])} != mine:  # files from before --arch: small_cnn
        raise SystemExit(f"--resume: {path} was run with another schedule; remove it or match its flags")
    return list(saved["runs"])


def _setting_result(name: str, dataset: str, n_labels: int, args: argparse.Namespace, options: dict, runs: list[dict], complete: bool) -> dict:
    schedule = {k: v for k, v in vars(args).items() if k not in ("settings", "readme_only")}
    schedule["seeds"] = sorted({r["seed"] for r in runs})
    schedule.pop("resume", None)
    return {"setting": name, "dataset": dataset, "labels": n_labels, "schedule": schedule, "options": options,
            "complete": complete, "runs": runs, "summary": summarise(runs)}  # fmt: skip


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if not math.isnan(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Per selector: final test accuracy, round-0 accuracy, last-round kept/precision (mean, std over seeds)."""
    out = {}
    for sel in dict.fromkeys(r["selector"] for r in runs):
        rs = [r for r in runs if r["selector"] == sel]
        last = [r["rounds"][-1] for r in rs]
        pooled_kept = sum(sum(x["kept"] for x in r["rounds"][1:]) for r in rs)
        pooled_correct = sum(sum(x["kept"] * x["precision"] for x in r["rounds"][1:] if x["kept"]) for r in rs)
        out[sel] = {
            "final_test_acc": _mean_std([r["final_test_acc"] for r in rs]),
            "round0_test_acc": _mean_std([r["rounds"][0]["test_acc"] for r in rs]),
            "last_kept": _mean_std([x["kept"] for x in last]),
            "last_precision": _mean_std([x["precision"] for x in last]),
            "precision_all_rounds": pooled_correct / pooled_kept if pooled_kept else float("nan"),
            "seconds": _mean_std([r["seconds"] for r in rs]),
            "meta_val_auroc": _mean_std([x["info"]["meta_val_auroc"] for r in rs for x in r["rounds"] if "meta_val_auroc" in x["info"]]),
            "meta_fallbacks": sum("meta_fallback" in x["info"] for r in rs for x in r["rounds"]),
            "imbalance": _mean_std([x.get("imbalance", float("nan")) for r in rs for x in r["rounds"][1:]]),
            "seeds": len(rs),
        }
    return out


def equal_count_gap(runs: list[dict], sel: str) -> tuple[float, int]:
    """Pooled precision of ``sel`` minus confidence's over the (seed, round) cells where both kept the
    same count (count-matched selectors: every cell), and how many cells that is."""
    conf = {(r["seed"], x["round"]): x for r in runs if r["selector"] == "confidence" for x in r["rounds"][1:]}
    pairs = [(x, conf[(r["seed"], x["round"])]) for r in runs if r["selector"] == sel for x in r["rounds"][1:]
             if (r["seed"], x["round"]) in conf and x["kept"] == conf[(r["seed"], x["round"])]["kept"] > 0]
    if not pairs:
        return float("nan"), 0
    kept = sum(a["kept"] for a, _ in pairs)
    return (sum(a["kept"] * a["precision"] for a, _ in pairs) - sum(b["kept"] * b["precision"] for _, b in pairs)) / kept, len(pairs)


def shadow_summary(runs: list[dict]) -> dict:
    """Per shadow selector, over the confidence runs: per seed, its precision pooled over the rounds and
    confidence's over the same rounds; their means over seeds (mean, std), the gap (the mean of the
    per-seed differences, so it equals the difference of the means) and the seeds at or above
    confidence; kept per round and imbalance."""
    conf = [r for r in runs if r["selector"] == "confidence"]
    out = {}
    for name in sorted(set().union(*(shadow_names(r) for r in conf)) if conf else (), key=SELECTORS.index):
        own, main, kept, imb, secs = [], [], [], [], []
        for r in conf:
            cells = [(x["shadows"][name], x) for x in r["rounds"][1:] if name in x.get("shadows", {})]
            s_k, m_k = sum(s["kept"] for s, _ in cells), sum(x["kept"] for _, x in cells)
            if s_k and m_k:
                own.append(sum(s["kept"] * s["precision"] for s, _ in cells if s["kept"]) / s_k)
                main.append(sum(x["kept"] * x["precision"] for _, x in cells if x["kept"]) / m_k)
            kept += [s["kept"] for s, _ in cells]
            imb += [s["imbalance"] for s, _ in cells]
            secs.append(sum(s.get("seconds", float("nan")) for s, _ in cells))
        out[name] = {
            "precision": _mean_std(own), "confidence_precision": _mean_std(main),
            "gap": _mean_std([a - b for a, b in zip(own, main)]), "seeds_at_or_above": sum(a >= b for a, b in zip(own, main)),
            "seeds": len(own), "equal_count": name in COUNT_MATCHED, "kept": _mean_std(kept), "imbalance": _mean_std(imb),
            "seconds": _mean_std(secs),
        }
    return out


def targets(results: list[dict]) -> list[str]:
    """The issue's targets for the shipped presets, held or not, with the numbers (test accuracy is
    reported, never chosen on; precision is on the pool, whose labels no selector sees)."""
    summaries = [(shadow_summary(res["runs"]), summarise(res["runs"])) for res in results]
    lines = ["| target | " + " | ".join(r["setting"] for r in results) + " |", "|---|" + "---|" * len(results)]
    for preset, sel in PRESETS.items():
        cells = []
        for shadows, _ in summaries:
            s = shadows.get(sel)
            if s is None or not s["seeds"]:
                cells.append("not run")
                continue
            gap, sd = s["gap"]
            held = round(100 * gap, 2) >= 0
            cells.append(f"{'**held**' if held else 'not held'}: {100 * s['precision'][0]:.2f}% vs {100 * s['confidence_precision'][0]:.2f}% "
                         f"({100 * gap:+.2f} ± {100 * sd:.2f} pts, {s['seeds_at_or_above']}/{s['seeds']} seeds)")
        lines.append(f"| {preset} (`{sel}`): precision at equal count >= confidence's | " + " | ".join(cells) + " |")
    for preset, sel in PRESETS.items():
        cells = []
        wins = 0
        for _, summ in summaries:
            if sel not in summ or "confidence" not in summ:
                cells.append("not run")
                continue
            (m, sd), (c, csd) = summ[sel]["final_test_acc"], summ["confidence"]["final_test_acc"]
            held = round(100 * m, 1) >= round(100 * c, 1)
            wins += held
            cells.append(f"{'**at or above**' if held else 'below'}: {100 * m:.1f} ± {100 * sd:.1f} vs {100 * c:.1f} ± {100 * csd:.1f} "
                         f"({summ[sel]['seeds']} seeds)")
        lines.append(f"| {preset} (`{sel}`): final test accuracy >= confidence's (target: on 2 of 3 datasets; "
                     f"{wins} settings so far) | " + " | ".join(cells) + " |")
    return lines


def _per_setting_figure(results: list[dict], path: Path, draw) -> None:
    """One panel per setting, filled by ``draw(ax, result)``; the legend outside the last panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        draw(ax, res)
        ax.grid(alpha=0.3)
    shown = dict(pair for ax in axes[0] for pair in zip(*reversed(ax.get_legend_handles_labels())))  # label -> handle
    if shown:  # a panel may have no point (a selector that kept nothing): the legend gathers every panel's
        axes[0][-1].legend(list(shown.values()), list(shown), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_rounds(results: list[dict], path: Path) -> None:
    """Test accuracy per round (mean over seeds), one line per selector, one panel per setting."""

    def draw(ax, res: dict) -> None:
        for sel in dict.fromkeys(r["selector"] for r in res["runs"]):
            rs = [r for r in res["runs"] if r["selector"] == sel]
            acc = np.mean([[x["test_acc"] for x in r["rounds"]] for r in rs], axis=0)
            ax.plot(range(len(acc)), 100 * acc, marker="o", ms=3, lw=2.2 if sel.startswith("metaerr") else 1.2,
                    ls="-" if sel.startswith("metaerr") else "--", label=sel)
        rounds = max(len(r["rounds"]) for r in res["runs"])
        ax.set(title=f"{res['setting']} ({len({r['seed'] for r in res['runs']})} seeds)", xticks=range(rounds),
               xlabel="round (0: labelled set only)", ylabel="test accuracy %")

    _per_setting_figure(results, path, draw)


def plot_equal_count(results: list[dict], path: Path) -> None:
    """Precision per round on the confidence run's models (mean over seeds): confidence and every
    count-matched shadow at its count, one panel per setting."""

    def draw(ax, res: dict) -> None:
        conf = [r for r in res["runs"] if r["selector"] == "confidence"]
        names = ["confidence", *[n for n in shadow_summary(res["runs"]) if n in COUNT_MATCHED]]
        for name in names:
            prec = [[x["precision"] if name == "confidence" else x["shadows"][name]["precision"] for x in r["rounds"][1:]]
                    for r in conf if name == "confidence" or name in shadow_names(r)]
            if prec:
                with np.errstate(all="ignore"), warnings.catch_warnings():  # a round none kept is NaN, drawn as a gap
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(np.array(prec, float), axis=0)
                ax.plot(range(1, len(mean) + 1), 100 * mean, marker="o", ms=3,
                        lw=2.2 if name.startswith("metaerr") else 1.2, ls="-" if name.startswith("metaerr") else "--", label=name)
        ax.set(title=f"{res['setting']} ({len(conf)} seeds)", xlabel="round", ylabel="precision % at confidence's count")

    _per_setting_figure(results, path, draw)


def plot(results: list[dict], path: Path) -> None:
    """Pseudo-label precision against the count kept, every (seed, round) a point, one panel per setting."""
    markers = dict(zip(SELECTORS, "os^Dv<>ph*XP"))

    def draw(ax, res: dict) -> None:
        for sel in dict.fromkeys(r["selector"] for r in res["runs"]):
            pts = [(x["kept"], x["precision"]) for r in res["runs"] if r["selector"] == sel for x in r["rounds"][1:] if x["kept"]]
            if pts:
                k, p = zip(*pts)
                ax.scatter(k, p, label=sel, marker=markers.get(sel, "o"), alpha=0.7, s=22)
        ax.set(title=res["setting"], xlabel="pseudo-labels kept (per round, seed)", ylabel="pseudo-label precision")

    _per_setting_figure(results, path, draw)


def _num(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt(ms: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = ms
    return "-" if math.isnan(m) else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def readme_section(found: dict[str, list[dict]]) -> str:
    """The README section: the first attempt's tables and notes as they were, then the realistic protocol's."""
    lines = [SECTION, ""]
    if found.get("first"):
        lines += [
            "`python benchmarks/pseudo_label.py --root ../shared/datasets` (one CPU thread; the schedule is in each JSON).",
            "Round 0 trains on the labelled set only; each round re-selects pseudo-labels from the whole pool with the",
            "previous base and retrains from scratch on labelled + pseudo-labelled. `topk` and `metaerr-topk` keep, per",
            "round, exactly as many as `confidence` kept in the same seed (precision at equal count). Test accuracy",
            "in %, mean ± std over seeds; kept/precision are the last round's; \"prec. all\" pools every round and seed.",
            "",
        ]
        lines += _setting_tables(found["first"], realistic=False)
        lines += ["![precision against count](results/pseudo_label_precision.png)", ""]
        notes = RESULTS / "pseudo_label_notes.md"  # hand-written reading of the numbers, kept across re-runs
        if notes.exists():
            lines += [notes.read_text().strip(), ""]
    if found.get("realistic"):
        lines += [
            "### Realistic protocol", "",
            "`python benchmarks/pseudo_label.py --protocol realistic --resume` (the whole pool and test split, 5 rounds,",
            "the base retrained from scratch each round; the schedule is in each JSON). **Equal count on the same model**:",
            "along the `confidence` run, every other selector picks, each round, from the same base as many pseudo-labels",
            "as confidence kept (threshold selectors, `mc-dropout` and `metaerr`, keep what their rule says); its",
            "precision is recorded and never trained on. Per seed, precision is pooled over the rounds; \"gap\" is",
            "the shadow's minus confidence's on the same rounds; each figure is a mean ± std over seeds of those",
            "per-seed values. **Own trajectory**: a selector trains its own rounds on its own",
            "pseudo-labels (count-matched ones keep confidence's count per round); \"vs confidence\" is its pooled",
            "precision minus confidence's over those rounds. Imbalance: the kept set's largest class over its mean",
            "class (1 = balanced).",
            "",
            "#### Targets (shipped MetaErr presets; precision on the unlabelled pool, test accuracy reported only;",
            "compared at the precision shown, so a tie holds)",
            "",
            *targets(found["realistic"]),
            "",
        ]
        lines += _setting_tables(found["realistic"], realistic=True)
        lines += ["![precision at equal count per round](results/pseudo_label_realistic_equal_count.png)", "",
                  "![precision against count](results/pseudo_label_realistic_precision.png)", "",
                  "![test accuracy per round](results/pseudo_label_realistic_accuracy.png)", ""]
        notes = RESULTS / "pseudo_label_realistic_notes.md"
        if notes.exists():
            lines += [notes.read_text().strip(), ""]
    return "\n".join(lines)


def _setting_tables(results: list[dict], realistic: bool) -> list[str]:
    lines = []
    for res in results:
        sch = res["schedule"]
        head = "####" if realistic else "###"
        lines += [
            (
                f"{head} {res['setting']} ({res['dataset']}, {res['labels']} labels; pool {sch['pool_size'] or 'all'}, "
                f"test {sch['max_test'] or 'all'}, {sch['rounds']} rounds, {len(sch['seeds'])} seeds"
                f"{'' if res.get('complete', True) else '; PARTIAL: interrupted'})"
            ),
            "",
        ]
        if realistic:
            lines += ["| selector | seeds | round-0 acc | final acc | kept (last round) | precision % (last round) | prec. all % | "
                      "vs confidence (pts, rounds) | imbalance | s / run |", "|---|---|---|---|---|---|---|---|---|---|"]
        else:
            lines += ["| selector | round-0 acc | final acc | kept (last round) | precision % (last round) | prec. all % | s / run |",
                      "|---|---|---|---|---|---|---|"]
        for sel, s in summarise(res["runs"]).items():
            kept = "-" if math.isnan(s["last_kept"][0]) else f"{s['last_kept'][0]:.0f} ± {s['last_kept'][1]:.0f}"
            pa = "-" if math.isnan(s["precision_all_rounds"]) else f"{100 * s['precision_all_rounds']:.2f}"
            if not realistic:
                lines.append(f"| {sel} | {_fmt(s['round0_test_acc'])} | {_fmt(s['final_test_acc'])} | {kept} | "
                             f"{_fmt(s['last_precision'], digits=2)} | {pa} | {s['seconds'][0]:.0f} |")
                continue
            gap, cells = equal_count_gap(res["runs"], sel) if sel in COUNT_MATCHED else (float("nan"), 0)
            vs = f"{100 * gap:+.2f} ({cells})" if cells else "-"
            imb = "-" if math.isnan(s["imbalance"][0]) else f"{s['imbalance'][0]:.2f}"
            lines.append(f"| {sel} | {s['seeds']} | {_fmt(s['round0_test_acc'])} | {_fmt(s['final_test_acc'])} | {kept} | "
                         f"{_fmt(s['last_precision'], digits=2)} | {pa} | {vs} | {imb} | {s['seconds'][0]:.0f} |")
        shadows = shadow_summary(res["runs"]) if realistic else {}
        if shadows:
            lines += ["", "Equal count on the confidence run's models:", "",
                      "| selector | count | precision % | confidence % (same rounds) | gap (pts) | "
                      "seeds >= confidence | kept per round | imbalance | s / seed |", "|---|---|---|---|---|---|---|---|---|"]
            for sel, s in shadows.items():
                lines.append(f"| {sel} | {'equal' if s['equal_count'] else 'own rule'} | {_fmt(s['precision'], digits=2)} | "
                             f"{_fmt(s['confidence_precision'], digits=2)} | {_fmt(s['gap'], digits=2)} | "
                             f"{s['seeds_at_or_above']}/{s['seeds']} | {_num(s['kept'][0], 0)} | {_num(s['imbalance'][0], 2)} | "
                             f"{_num(s['seconds'][0], 0)} |")
        lines.append("")
    return lines


def write_readme(section: str, path: Path | None = None) -> None:
    """Replace (or append) only the '## Pseudo-labelling' section; other sections are left as they are."""
    path = path or README
    text = path.read_text() if path.exists() else ""
    start = text.find(SECTION + "\n")
    if start < 0:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    path.write_text(text.rstrip() + "\n")


def load_results(protocol: str = "first") -> list[dict]:
    """The saved results of ``protocol``, in the order of SETTINGS."""
    return [_load(result_path(s, protocol)) for s in SETTINGS if result_path(s, protocol).is_file()]


def main(argv: list[str] | None = None) -> int:
    global RESULTS, README, RUNS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(HERE.parents[1] / "shared" / "datasets"))
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="first",
                   help="the schedule defaults (module docstring); a flag given explicitly wins")
    p.add_argument("--settings", nargs="+", default=None, choices=list(SETTINGS),
                   help="default: the protocol's (first: the four first-attempt settings; realistic: all)")
    p.add_argument("--selectors", nargs="+", default=None, choices=list(SELECTORS),
                   help="selectors that train their own rounds (default: the protocol's)")
    p.add_argument("--shadows", nargs="*", default=None, choices=list(SHADOWS),
                   help="selectors compared at equal count on the confidence run's models (default: the protocol's: "
                        "none for first, every other selector for realistic)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--max-pool", dest="pool_size", type=int, default=None,
                   help="unlabelled pool cap (0 = the whole rest of the train split)")
    p.add_argument("--max-test", type=int, default=None, help="test subset size (0 = the whole test split)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--min-steps", type=int, default=None, help="at least this many optimiser steps per training")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--width", type=int, default=None, help="small_cnn width")
    p.add_argument("--arch", choices=("small_cnn", "resnet9"), default="small_cnn",
                   help="the base (resnet9: the failure-prediction benchmark's widths 32/64/128 on the grey sets)")
    p.add_argument("--threshold", type=float, default=None, help="confidence threshold (first protocol: 0.9, as short CPU "
                   "schedules give under-confident bases)")
    p.add_argument("--max-std", type=float, default=0.05)
    p.add_argument("--mc-passes", type=int, default=10)
    p.add_argument("--meta-mode", default="probs", help="head of the metaerr selectors without a preset of their own")
    p.add_argument("--meta-epochs", type=int, default=30)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="keep saved runs of the same schedule and only add missing "
                   "seeds and selectors")
    p.add_argument("--readme-only", action="store_true", help="re-tabulate the saved JSON into README.md and the plots")
    p.add_argument("--out", default=str(RESULTS), help="results folder (JSON, plots; --resume reads it)")
    p.add_argument("--readme", default=str(HERE / "README.md"), help="README holding the generated section")
    args = p.parse_args(argv)
    RESULTS, README = Path(args.out), Path(args.readme)
    RUNS = RESULTS.parent / "runs" / "pseudo_label"
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, tuple) else value)
    if args.settings is None:
        args.settings = list(FIRST_SETTINGS if args.protocol == "first" else SETTINGS)
    if not args.readme_only:
        import torch

        torch.set_num_threads(args.threads)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name in args.settings:
            t0 = time.perf_counter()
            res = run_setting(name, args)
            res["wall_seconds"] = time.perf_counter() - t0
            _save(result_path(name, args.protocol), res)
            print(f"[{name}] done in {res['wall_seconds']:.0f}s", flush=True)
            publish()
    publish()
    return 0


def publish() -> None:
    """The plots and the README section from every saved result, per protocol."""
    found = {protocol: load_results(protocol) for protocol in PROTOCOLS}
    for protocol, results in found.items():
        if results:
            stem = "pseudo_label" if protocol == "first" else f"pseudo_label_{protocol}"
            plot(results, RESULTS / f"{stem}_precision.png")
            if protocol != "first":
                plot_rounds(results, RESULTS / f"{stem}_accuracy.png")
                plot_equal_count(results, RESULTS / f"{stem}_equal_count.png")
    if any(found.values()):
        write_readme(readme_section(found))


if __name__ == "__main__":
    raise SystemExit(main())
