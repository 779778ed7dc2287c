"""Failure-prediction benchmark: MetaErr against every baseline, same base model, same splits, several seeds.

    python benchmarks/failure_prediction.py --root ../shared/datasets --resume     # converged bases, CPU (hours; resumable)
    python benchmarks/failure_prediction.py --datasets cifar10 --seeds 0 1 --threads 2 --resume
    python benchmarks/failure_prediction.py --root DATA --device cuda --epochs 30 --arch resnet18

Bases are trained to where users deploy them (``RECIPES``, ``--recipe``: resnet9 on all three datasets
in ``converged-v2``, the default; whole training pools and test splits); ``--arch``, ``--arch-kwargs``,
``--epochs``, ``--batch-size`` override the per-dataset choice.

Per dataset and seed (the seed changes the splits and every initialisation):
  1. ``train_run`` with held-out error labels: base on ``base_train``, meta heads on the base's errors on
     ``meta_train``, meta modes ``probs`` and ``mentor`` (a small_cnn mentor trained on ``base_train``).
  2. ``evaluate_run`` on test for every registered baseline and both MetaErr modes (bootstrap CIs per seed).
  3. MetaErr variants fitted here on the same run (the attempts log): a narrower mentor, head widths,
     unweighted loss. Every variant is also scored on ``calib`` (no model trained there); the row
     ``metaerr[selected]`` is the variant with the best calib AUROC, chosen without looking at test.
Outputs: ``benchmarks/results/failure_prediction_<dataset>.json`` (atomic), ``risk_coverage_<dataset>.png``
(seed 0), and the generated tables in ``benchmarks/README.md`` between the failure-prediction markers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaerr_edge.evaluate import evaluate_run, plot_risk_coverage
from metaerr_edge._fileio import atomic_write_text, dumps_json, loads_json
from metaerr_edge.data import error_labels
from metaerr_edge.errors import ConfigError
from metaerr_edge.meta import HeadConfig, MetaData, MetaFitConfig, MetaModel, meta_scores
from metaerr_edge.metrics import aurc, auroc, bootstrap_ci, failure_metrics
from metaerr_edge.models import create_base, fit_classifier, predict_probs
from metaerr_edge.config import BaseConfig, DataConfig, MetaConfig, RunConfig
from metaerr_edge.pipeline import Run, fit_config, fit_meta_mode, train_run


RESULTS = ROOT / "benchmarks" / "results"
#: Per-dataset base recipes (architecture, its kwargs, epochs, batch size, augmentation), by pass.
#: ``converged-v2`` (the default) reaches the accuracy users deploy at on the calib split (MNIST >= 99.2%,
#: Fashion-MNIST >= 92%; ``base_recipes.py``, attempt 15) or, where no candidate reached its target, the most
#: accurate one (CIFAR-10: resnet9 for 24 epochs, 87.76% on calib, below 88%; attempt 20);
#: ``converged-v1`` is the first converged pass (attempt 9, below the targets), kept so that its
#: committed numbers (``results/v1/``, the quantization benchmark) still reproduce.
RECIPES = {
    "converged-v1": {
        "mnist": {"arch": "small_cnn", "arch_kwargs": {}, "epochs": 12, "batch_size": 128, "augment": "auto"},
        "fashion-mnist": {"arch": "small_cnn", "arch_kwargs": {}, "epochs": 15, "batch_size": 128, "augment": "auto"},
        "cifar10": {"arch": "resnet9", "arch_kwargs": {}, "epochs": 14, "batch_size": 256, "augment": "auto"},
    },
    "converged-v2": {
        "mnist": {"arch": "resnet9", "arch_kwargs": {"widths": [32, 64, 128]}, "epochs": 10, "batch_size": 128,
                  "augment": "shift"},
        "fashion-mnist": {"arch": "resnet9", "arch_kwargs": {"widths": [32, 64, 128]}, "epochs": 15, "batch_size": 128,
                          "augment": "shift_flip"},
        "cifar10": {"arch": "resnet9", "arch_kwargs": {}, "epochs": 24, "batch_size": 256, "augment": "auto"},
    },
    # The full-size pass for a lent GPU (benchmarks/gpu_check.sh): a ResNet-18 on CIFAR-10 aiming at
    # >= 93% on the JPEG copy, the converged-v2 bases trained longer on MNIST and Fashion-MNIST.
    # Not yet run on a GPU (no session has had one since it was written): its epochs are a plan, not a choice.
    "gpu-full": {
        "mnist": {"arch": "resnet9", "arch_kwargs": {"widths": [32, 64, 128]}, "epochs": 15, "batch_size": 256,
                  "augment": "shift"},
        "fashion-mnist": {"arch": "resnet9", "arch_kwargs": {"widths": [32, 64, 128]}, "epochs": 30, "batch_size": 256,
                          "augment": "shift_flip"},
        "cifar10": {"arch": "resnet18", "arch_kwargs": {}, "epochs": 40, "batch_size": 256, "augment": "shift_flip"},
    },
}
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- failure-prediction:begin -->", "<!-- failure-prediction:end -->"
BASELINES = ["msp", "entropy", "margin", "logit-margin", "doctor-gini", "doctor-ratio", "temperature", "maxlogit-pnorm", "rel-u",
             "mc-dropout", "trustscore", "confidnet"]
WHITE_BOX = {"mc-dropout", "trustscore", "confidnet"}
PLOTTED = ("metaerr[selected]", "metaerr[probs]", "metaerr[mentor]", "msp", "temperature", "doctor-gini",
           "mc-dropout", "trustscore", "confidnet")  # the risk-coverage plot stays readable
SUMMARY_KEYS = ("auroc", "aurc", "eaurc", "augrc", "aupr_error", "fpr95tpr", "risk@cov90")


#: MetaErr candidates trained on each run's base (``train_run(base_from=run)``: base and mentor
#: reused, only meta-models new), scored as ``metaerr[MODE@NAME]``. ``views2``: meta-training also on
#: two corrupted views of each meta-train image (validation families only, ``--shift-views 2``);
#: ``stack``: the head stacked on the best free score of its training rows (``--meta-skip auto``).
CANDIDATES = {
    "views2": {"modes": ("probs", "mentor", "mentor-features"), "shift_views": 2},
    "features": {"modes": ("mentor-features",)},
    "stack": {"modes": ("probs", "mentor", "mentor-features"), "skip": "auto"},
    "stack-views2": {"modes": ("probs", "mentor", "mentor-features"), "skip": "auto", "shift_views": 2},
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="../shared/datasets", help="folder holding MNIST/, FashionMNIST/, CIFAR10-jpeg/")
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist", "cifar10"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--recipe", default="converged-v2", choices=sorted(RECIPES), help="per-dataset base recipes (RECIPES)")
    ap.add_argument("--arch", default=None, help="base architecture (default: the recipe's per dataset)")
    ap.add_argument("--arch-kwargs", type=json.loads, default={}, help='JSON, e.g. \'{"width": 32}\'')
    ap.add_argument("--mentor-arch", default="small_cnn")
    ap.add_argument("--epochs", type=int, default=None, help="base and mentor epochs (default: the recipe's per dataset)")
    ap.add_argument("--batch-size", type=int, default=None, help="base and mentor batch size (default: the recipe's per dataset)")
    ap.add_argument("--resume", action="store_true", help="keep the seeds already in a results file of the same config")
    ap.add_argument("--retrain-for-baselines", action="store_true",
                    help="with --resume: a kept seed that lacks a baseline added since and whose run folder is gone has its "
                         "run trained again (refused unless it gives the kept test accuracy) to score it")
    ap.add_argument("--meta-epochs", type=int, default=30)
    ap.add_argument("--max-pool", type=int, default=0, help="training pool per run (0 = all)")
    ap.add_argument("--max-test", type=int, default=0, help="test images per run (0 = the whole official test split)")
    ap.add_argument("--meta-fraction", type=float, default=0.2)
    ap.add_argument("--calib-fraction", type=float, default=0.1)
    ap.add_argument("--narrow-width", type=int, default=0, help="width of the narrow mentor variant (0 = skip; it trains a "
                    "second mentor)")
    ap.add_argument("--no-mentor-features", dest="mentor_features", action="store_false",
                    help="skip the mentor-features heads (attempt 8)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "runs"), help="run folders (reused when the config matches)")
    ap.add_argument("--arch-check", nargs="*", default=[],
                    help="architectures for the architecture-agnostic check (empty = skip)")  # fmt: skip
    ap.add_argument("--arch-check-dataset", default="mnist")
    ap.add_argument("--arch-check-pool", type=int, default=8000)
    ap.add_argument("--arch-check-test", type=int, default=3000)
    ap.add_argument("--arch-check-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--arch-check-epochs", type=int, default=5,
                    help="torchvision MobileNetV3's BatchNorm momentum is 0.01: a few hundred steps are needed "
                         "before its running statistics (used in eval) settle")  # fmt: skip
    ap.add_argument("--readme-only", action="store_true", help="only regenerate the README tables from the JSON files")
    ap.add_argument("--arch-check-only", action="store_true", help="skip the per-dataset benchmark")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument("--readme", default=str(README), help="README holding the generated tables")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


# --------------------------------------------------------------------------- cost of each meta mode


def cost(module: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
    """Parameters and forward FLOPs (torch's FLOP counter, batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *shape))
    return {"params": int(sum(p.numel() for p in module.parameters())), "flops": int(counter.get_total_flops())}


def head_cost(meta: MetaModel) -> dict[str, float]:
    return {"params": int(sum(p.numel() for p in meta.head.parameters())), "flops": int(2 * sum(m.in_features * m.out_features
            for m in meta.head.modules() if isinstance(m, torch.nn.Linear)))}  # fmt: skip


# --------------------------------------------------------------------------- one run


def run_config(args, dataset: str, seed: int, arch: str | None = None, max_pool: int | None = None, max_test: int | None = None,
               epochs: int | None = None) -> RunConfig:
    mp = args.max_pool if max_pool is None else max_pool
    mt = args.max_test if max_test is None else max_test
    recipes = RECIPES[args.recipe]
    recipe = recipes.get(dataset, recipes["mnist"])
    name = arch or args.arch or recipe["arch"]
    own = arch is None and args.arch is None  # the recipe's architecture: its kwargs and augmentation too
    if args.arch_kwargs and arch in (None, args.arch):
        kwargs = dict(args.arch_kwargs)
    else:
        kwargs = dict(recipe["arch_kwargs"]) if own else {}
    return RunConfig(
        DataConfig(dataset, args.root, meta_fraction=args.meta_fraction, calib_fraction=args.calib_fraction,
                   max_pool=mp or None, max_test=mt or None),
        BaseConfig(name, kwargs, epochs=epochs or args.epochs or recipe["epochs"], batch_size=args.batch_size or recipe["batch_size"],
                   augment=recipe["augment"] if own else "auto"),
        MetaConfig(modes=("probs", "mentor"), labels="heldout", epochs=args.meta_epochs, mentor_arch=args.mentor_arch,
                   skip="none"),  # the plain heads; the stacked ones are candidates
        seed=seed, device=args.device,
    )  # fmt: skip


def run_folder(args, config: RunConfig) -> Path:
    """Where the run of ``config`` lives (and is reused from) under ``--runs-dir``."""
    d, b = config.data, config.base
    kw = "".join(f"-{k}{'.'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(b.arch_kwargs.items()))
    aug = "" if b.augment == "auto" else f"_{b.augment}"
    return Path(args.runs_dir) / f"{d.dataset}_{b.arch}{kw}_p{d.max_pool}_e{b.epochs}_b{b.batch_size}{aug}_s{config.seed}"


def reusable(folder: Path, config: RunConfig) -> bool:
    """Whether ``folder`` holds a finished run of ``config`` (what :func:`get_run` reuses)."""
    cfg = folder / "config.json"
    return cfg.is_file() and RunConfig.from_dict(json.loads(cfg.read_text())["config"]) == config


def get_run(config: RunConfig, folder: Path, progress: bool, base_from: Path | None = None) -> tuple[Run, float]:
    """Reuse a finished run folder with the same config, else train one (on ``base_from``'s base),
    going on from the base's last finished epoch where a training of it was killed."""
    if reusable(folder, config):
        run = Run(folder)
        return run, float(run.summary.get("train_seconds", 0.0))
    t0 = time.perf_counter()
    run = train_run(config, folder, progress=progress, base_from=base_from, resume=True)  # a killed seed loses one epoch
    return run, time.perf_counter() - t0


def candidate_runs(anchor: Run, progress: bool, candidates: dict[str, dict] | None = None) -> dict[str, Run]:
    """The ``candidates`` (default :data:`CANDIDATES`) runs on ``anchor``'s base, in folders beside it
    (reused when unchanged)."""
    out = {}
    for name, changes in (CANDIDATES if candidates is None else candidates).items():
        config = dataclasses.replace(anchor.config, meta=dataclasses.replace(anchor.config.meta, **changes))
        out[name], _ = get_run(config, Path(f"{anchor.path}__{name}"), progress, base_from=anchor.path)
    return out


def candidate_specs(cands: dict[str, Run]) -> list[str]:
    return [f"metaerr[{mode}@{name}]" for name, run in cands.items() for mode in run.config.meta.modes]


def row_metrics(s_test: np.ndarray, err_test: np.ndarray, s_cal: np.ndarray | None, err_cal: np.ndarray, n_boot: int, seed: int) -> dict:
    row = {k: float(v) for k, v in failure_metrics(s_test, err_test).items()}
    ci_auc = bootstrap_ci(auroc, s_test, err_test, n_boot, seed=seed)
    ci_aurc = bootstrap_ci(aurc, s_test, err_test, min(n_boot, 300), seed=seed)
    row.update(auroc_low=ci_auc.low, auroc_high=ci_auc.high, aurc_low=ci_aurc.low, aurc_high=ci_aurc.high)
    if s_cal is not None:
        row.update(calib_auroc=float(auroc(s_cal, err_cal)), calib_aurc=float(aurc(s_cal, err_cal)))
    return row


def metaerr_variants(run: Run, args, progress: bool) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict]]:
    """Extra MetaErr heads on the same run (no test look): returns {label: {calib, test}} scores and costs.

    Every head is fitted by the package's one recipe (``fit_meta`` through ``fit_meta_mode``, the
    run's own settings), on the run's meta_train errors, with the run's trained mentor (or a narrow one)."""
    cfg = run.config
    pre = run.preprocess
    c, h, w = run.channels, run.height, run.width
    k = len(run.classes)
    meta_x, meta_y = run.split("meta_train")
    base_train = run.splits.arrays(run.data, "base_train")
    data = MetaData(meta_x, predict_probs(run.base, meta_x, pre, device=cfg.device), meta_y)
    probs = {s: run.predictions[f"{s}_probs"] for s in ("calib", "test")}
    images = {s: run.split(s)[0] for s in ("calib", "test")}
    mentors = {"mentor": run.meta("mentor").mentor}
    if args.narrow_width and cfg.meta.mentor_arch == "small_cnn":
        narrow = create_base(cfg.meta.mentor_arch, c, k, (h, w), width=args.narrow_width)
        mentors["mentor-narrow"] = fit_classifier(narrow, base_train.images, base_train.labels, pre,
                                                  fit_config(cfg, c, seed_offset=11), progress, "narrow mentor")
    # (label, mentor name, head, balanced loss, meta epochs); attempt 8: the mentor-features heads
    mentor_kw = dict(cfg.meta.mentor_kwargs)
    plan = [("mentor-narrow", "mentor-narrow", HeadConfig("mentor", cfg.meta.hidden, mentor_kwargs={"width": args.narrow_width}), True, None),
            ("mentor,h16", "mentor", HeadConfig("mentor", 16, mentor_kwargs=mentor_kw), True, None),
            ("mentor,h256", "mentor", HeadConfig("mentor", 256, mentor_kwargs=mentor_kw), True, None),
            ("mentor,unweighted", "mentor", HeadConfig("mentor", cfg.meta.hidden, mentor_kwargs=mentor_kw), False, None),
            ("probs,unweighted", None, HeadConfig("probs", cfg.meta.hidden), False, None)]  # fmt: skip
    if args.mentor_features:
        plan += [(label, "mentor", HeadConfig("mentor-features", 128, mentor_kwargs=mentor_kw, target=target), True, 40)
                 for label, target in (("mentor-features", "tcp"), ("mentor-features,error", "error"))]  # fmt: skip
    out: dict[str, dict[str, np.ndarray]] = {}
    costs: dict[str, dict] = {}
    for label, mentor_name, head, balanced, epochs in plan:
        if mentor_name is not None and mentor_name not in mentors:
            continue
        meta = MetaModel(dataclasses.replace(head, mentor_arch=cfg.meta.mentor_arch), c, k, (h, w))
        if mentor_name:
            meta.mentor.load_state_dict(mentors[mentor_name].state_dict())
        mcfg = MetaFitConfig(epochs=epochs or cfg.meta.epochs, seed=cfg.seed, device=cfg.device, balanced=balanced)
        fit_meta_mode(meta, cfg, data, base_train, run.base, pre, mcfg, progress, mentor_trained=True)
        out[f"metaerr[{label}]"] = {s: meta_scores(meta, images[s], probs[s], pre, device=cfg.device).astype(np.float64)
                                    for s in ("calib", "test")}  # fmt: skip
        costs[f"metaerr[{label}]"] = meta_cost(meta, (c, h, w))
    return out, costs


def meta_cost(meta: MetaModel, shape: tuple[int, ...]) -> dict:
    hc = head_cost(meta)
    if meta.mentor is not None:
        mc = cost(meta.mentor, shape)
        return {"params": hc["params"] + mc["params"], "flops": hc["flops"] + mc["flops"]}
    if meta.encoder is not None:
        ec = cost(meta.encoder, shape)
        return {"params": hc["params"] + ec["params"], "flops": hc["flops"] + ec["flops"]}
    return hc


def one_seed(args, config: RunConfig, specs: list[str], with_variants: bool, progress: bool) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    run, train_s = get_run(config, run_folder(args, config), progress)
    t0 = time.perf_counter()
    cand_runs = candidate_runs(run, progress) if with_variants else {}
    cand_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = evaluate_run(run, specs + candidate_specs(cand_runs), n_boot=args.n_boot, seed=config.seed, progress=progress,
                          meta_runs=cand_runs)  # fmt: skip
    eval_s = time.perf_counter() - t0
    err_cal = error_labels(run.predictions["calib_probs"], run.predictions["calib_labels"])
    rows = dict(report.rows)
    costs = {"base": cost(run.base, (run.channels, run.height, run.width))}
    add_calib_and_costs(rows, costs, {"": run, **cand_runs}, err_cal)
    scores = dict(report.scores)
    t1 = time.perf_counter()
    if with_variants:
        extra, extra_costs = metaerr_variants(run, args, progress)
        costs.update(extra_costs)
        for label, s in extra.items():
            rows[label] = row_metrics(s["test"], report.is_error, s["calib"], err_cal, args.n_boot, config.seed)
            scores[label] = s["test"]
    variants_s = time.perf_counter() - t1
    best = select_best(rows, costs)
    scores["metaerr[selected]"] = scores[best]
    result = {
        "seed": config.seed, "test_accuracy": report.test_accuracy, "error_rate": report.error_rate, "n_test": report.n_test,
        "n_calib": len(err_cal), "split_sizes": run.summary.get("split_sizes"), "meta_train_errors": run.summary.get("meta_train_errors"),
        "selected": best, "rows": rows, "skipped": report.skipped, "costs": costs,
        "candidates": sorted(cand_runs),
        "seconds": {"train": round(train_s, 1), "candidates": round(cand_s, 1), "evaluate": round(eval_s, 1),
                    "variants": round(variants_s, 1)},
    }  # fmt: skip
    return result, scores, report.is_error


def add_calib_and_costs(rows: dict, costs: dict, runs: dict[str, Run], err_cal: np.ndarray) -> None:
    """Calib AUROC/AURC (what selection looks at) and the cost of each trained MetaErr mode of ``runs``
    (``{"": the anchor run, candidate name: its run}``), into ``rows`` and ``costs``."""
    for name, r in runs.items():
        for mode in r.config.meta.modes:
            label = f"metaerr[{mode}{'@' + name if name else ''}]"
            s_cal = r.predictions[f"calib_score_{mode}"].astype(np.float64)
            rows[label].update(calib_auroc=float(auroc(s_cal, err_cal)), calib_aurc=float(aurc(s_cal, err_cal)))
            costs[label] = meta_cost(r.meta(mode), (r.channels, r.height, r.width))


def select_best(rows: dict, costs: dict) -> str:
    """``rows["metaerr[selected]"]``: the MetaErr variant with the best calib AUROC (ties: the cheaper
    one), chosen without test; returns its label."""
    cands = [k for k in rows if k.startswith("metaerr[") and k != "metaerr[selected]" and "calib_auroc" in rows[k]]
    best = max(cands, key=lambda k: (round(rows[k]["calib_auroc"], 4), -costs.get(k, {"flops": 0})["flops"]))
    rows["metaerr[selected]"] = {**rows[best], "selected": best}
    return best


def add_candidates(args, config: RunConfig, kept: dict, names: list[str], progress: bool, baselines: list[str] = ()) -> dict:
    """A kept seed with the CANDIDATES ``names`` and the BASELINES ``baselines`` added since, from its
    run folder (the same base, the same test split): their rows, costs, and ``metaerr[selected]``
    chosen again on calib."""
    run, _ = get_run(config, run_folder(args, config), progress)
    t0 = time.perf_counter()
    cand_runs = candidate_runs(run, progress, {n: CANDIDATES[n] for n in names})
    report = evaluate_run(run, [*baselines, *candidate_specs(cand_runs)], n_boot=args.n_boot, seed=config.seed,
                          progress=progress, meta_runs=cand_runs)
    if report.n_test != kept["n_test"] or abs(report.test_accuracy - kept["test_accuracy"]) > 1e-9:
        raise SystemExit(f"{run.path}: its test accuracy {report.test_accuracy:.6f} on {report.n_test} images is not the kept "
                         f"seed's ({kept['test_accuracy']:.6f} on {kept['n_test']}); rerun without --resume")
    rows, costs = dict(kept["rows"]), dict(kept["costs"])
    rows.update(report.rows)
    add_calib_and_costs(rows, costs, cand_runs, error_labels(run.predictions["calib_probs"], run.predictions["calib_labels"]))
    best = select_best(rows, costs)
    return {**kept, "rows": rows, "costs": costs, "selected": best, "candidates": sorted(set(kept["candidates"]) | set(names)),
            "skipped": {**kept.get("skipped", {}), **report.skipped}, "seconds": {**kept["seconds"], "added": round(time.perf_counter() - t0, 1)}}


def aggregate(seeds: list[dict]) -> dict:
    names = list(dict.fromkeys(n for s in seeds for n in s["rows"]))
    out = {}
    for n in names:
        vals = {k: [s["rows"][n][k] for s in seeds if n in s["rows"]] for k in SUMMARY_KEYS}
        out[n] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)} for k, v in vals.items()}
    acc = [s["test_accuracy"] for s in seeds]
    return {"scores": out, "test_accuracy": {"mean": float(np.mean(acc)), "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0}}


def same_config(stored: dict, config: RunConfig) -> bool:
    """Whether a results file's config (``"seed": "per seed"``) is ``config`` but for the seed."""
    def plain(c: RunConfig) -> dict:  # through JSON: tuples and lists compare alike
        return loads_json(dumps_json(c.to_dict()))

    try:
        return plain(RunConfig.from_dict({**stored, "seed": config.seed})) == plain(config)
    except ConfigError:  # a field this version no longer knows
        return False


def run_dataset(args, dataset: str, progress: bool) -> dict:
    specs = ["metaerr[probs]", "metaerr[mentor]"] + BASELINES
    path = RESULTS / f"failure_prediction_{dataset}.json"
    seeds: list[dict] = []
    t0 = time.perf_counter()
    done: dict[int, dict] = {}
    if args.resume and path.is_file():
        old = loads_json(path.read_text())
        # Compared as configs, not dicts: a field added since (with its default) does not discard finished seeds.
        if same_config(old["config"], run_config(args, dataset, 0)):
            done = {s["seed"]: s for s in old["seeds"] if set(s.get("candidates", ())) <= set(CANDIDATES)}
            t0 -= old.get("wall_seconds", 0.0)
    # Finished seeds not asked for this time stay in the file (``--seeds 1`` adds seed 1 to seed 0).
    others = [s for n, s in sorted(done.items()) if n not in args.seeds]
    for seed in args.seeds:
        config = run_config(args, dataset, seed)
        missing = sorted(set(CANDIDATES) - set(done[seed]["candidates"])) if seed in done else []
        scored = set(done[seed]["rows"]) | set(done[seed].get("skipped", {})) if seed in done else set()
        unscored = [b for b in BASELINES if b not in scored]
        folder_ok = reusable(run_folder(args, config), config) or (args.retrain_for_baselines and bool(unscored))
        if seed in done and folder_ok and (missing or unscored):  # only what was added since
            seeds.append(add_candidates(args, config, done[seed], missing, progress, unscored))
            log(f"{dataset} seed {seed}: kept from {path.name}, candidates {missing} and baselines {unscored} added from its run folder")
        elif seed in done and not missing:  # a baseline added since needs the run folder: said, kept
            seeds.append(done[seed])
            log(f"{dataset} seed {seed}: kept from {path.name} (--resume)"
                + (f"; without baselines {unscored} (its run folder is gone: --retrain-for-baselines)" if unscored else ""))
            continue
        else:  # not run yet, or its run folder is gone (the base is trained again): the whole seed anew
            res, scores, err = one_seed(args, config, specs, True, progress)
            seeds.append(res)
            if seed == min([*args.seeds, *done]):  # the plot shows the file's first seed
                shown = {k: v for k, v in scores.items() if k in PLOTTED}
                plot_risk_coverage(shown, err, RESULTS / f"risk_coverage_{dataset}.png",
                                   f"{dataset} / {config.base.arch} (seed {seed}, acc {res['test_accuracy']:.3f})")  # fmt: skip
        atomic_write_text(path, dumps_json(results_doc(dataset, config, _by_seed(others + seeds), time.perf_counter() - t0), indent=1))
        log(f"{dataset} seed {seed}: acc {seeds[-1]['test_accuracy']:.4f} selected {seeds[-1]['selected']} "
            f"{json.dumps(seeds[-1]['seconds'])}")  # fmt: skip
    return results_doc(dataset, run_config(args, dataset, 0), _by_seed(others + seeds), time.perf_counter() - t0)


def _by_seed(seeds: list[dict]) -> list[dict]:
    return sorted(seeds, key=lambda s: s["seed"])


def results_doc(dataset: str, config: RunConfig, seeds: list[dict], wall_s: float) -> dict:
    """What ``failure_prediction_<dataset>.json`` holds: the seeds, their aggregate and the settings."""
    return {"dataset": dataset, "config": {**config.to_dict(), "seed": "per seed"}, "seeds": seeds,
            "aggregate": aggregate(seeds), "wall_seconds": round(wall_s, 1),
            "white_box": sorted(WHITE_BOX), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "notes": "aurc/eaurc/augrc raw (tables x1000); failure score: higher = more likely wrong; "
                     "metaerr[selected] = best calib AUROC among MetaErr variants"}  # fmt: skip


def run_arch_check(args, progress: bool) -> dict:
    specs = ["metaerr[probs]", "metaerr[mentor]", "msp", "temperature", "doctor-gini"]
    path = RESULTS / "failure_prediction_archcheck.json"
    doc = {"dataset": args.arch_check_dataset, "archs": {}, "max_pool": args.arch_check_pool, "max_test": args.arch_check_test,
           "epochs": args.arch_check_epochs, "mentor_arch": args.mentor_arch}
    for arch in args.arch_check:
        seeds = []
        for seed in args.arch_check_seeds:
            cfg = run_config(args, args.arch_check_dataset, seed, arch=arch, max_pool=args.arch_check_pool, max_test=args.arch_check_test,
                             epochs=args.arch_check_epochs)
            res, _, _ = one_seed(args, cfg, specs, False, progress)
            seeds.append(res)
            log(f"arch check {arch} seed {seed}: acc {res['test_accuracy']:.4f} {json.dumps(res['seconds'])}")
        doc["archs"][arch] = {"seeds": seeds, "aggregate": aggregate(seeds)}
        atomic_write_text(path, dumps_json(doc, indent=1))
    return doc


# --------------------------------------------------------------------------- README tables


def _fmt(agg: dict, key: str, scale: float = 1.0, digits: int = 4) -> str:
    m, s = agg[key]["mean"] * scale, agg[key]["std"] * scale
    return f"{m:.{digits}f} ± {s:.{digits}f}" if not math.isnan(m) else "nan"


def _config_keys(doc: dict) -> dict:
    """The run config of a results file as one flat dict (files before nested configs were flat already)."""
    cfg = doc["config"]
    return {**cfg, **cfg.get("data", {}), **cfg.get("base", {})}


def dataset_table(doc: dict) -> str:
    agg = doc["aggregate"]
    seeds = doc["seeds"]
    acc = agg["test_accuracy"]
    cfg = _config_keys(doc)
    sel = ", ".join(f"s{s['seed']}: {s['selected']}" for s in seeds)
    lines = [
        (f"### {doc['dataset']}: base {cfg['arch']}{' ' + json.dumps(cfg['arch_kwargs']) if cfg.get('arch_kwargs') else ''}, "
        f"test accuracy {acc['mean']:.4f} ± {acc['std']:.4f}"),
        "",
        (f"{len(seeds)} seeds; pool {cfg['max_pool']} ({seeds[0]['split_sizes']}), test n={seeds[0]['n_test']}, "
        f"base/mentor epochs {cfg['epochs']}, held-out labels ({seeds[0]['meta_train_errors']} meta-train errors on seed {seeds[0]['seed']}). "
        f"`metaerr[selected]` picked on calib: {sel}. Wall time {doc['wall_seconds'] / 60:.1f} min."),
        "",
        "| score | AUROC | AURC ×1000 | E-AURC ×1000 | AUGRC ×1000 | AUPR-Err | FPR@95 | AUROC 95% CI (seed 0) | calib AUROC (selection) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best_auc = max(v["auroc"]["mean"] for v in agg["scores"].values())
    best_aurc = min(v["aurc"]["mean"] for v in agg["scores"].values())
    for name, a in agg["scores"].items():
        r0 = seeds[0]["rows"].get(name, {})
        au, ar = _fmt(a, "auroc"), _fmt(a, "aurc", 1000, 2)
        au = f"**{au}**" if a["auroc"]["mean"] == best_auc else au
        ar = f"**{ar}**" if a["aurc"]["mean"] == best_aurc else ar
        tag = f"{name} (white-box)" if name in WHITE_BOX else name
        ci = f"[{r0['auroc_low']:.3f}, {r0['auroc_high']:.3f}]" if r0 else ""
        cal = [s["rows"][name]["calib_auroc"] for s in seeds if "calib_auroc" in s["rows"].get(name, {})]
        cal_s = f"{np.mean(cal):.4f}" if cal and name != "metaerr[selected]" else ""
        lines.append(f"| {tag} | {au} | {ar} | {_fmt(a, 'eaurc', 1000, 2)} | {_fmt(a, 'augrc', 1000, 2)} | "
                     f"{_fmt(a, 'aupr_error')} | {_fmt(a, 'fpr95tpr')} | {ci} | {cal_s} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def frontier_table(docs: list[dict]) -> str:
    lines = ["### Quality / cost frontier of the MetaErr variants (seed-mean test AUROC, AURC ×1000; cost relative to the base)", "",
             "| variant | " + " | ".join(f"{d['dataset']} AUROC / AURC" for d in docs) + " | params / base | FLOPs / base |",
             "|---|" + "---|" * len(docs) + "---|---|"]  # fmt: skip
    names = [n for n in docs[0]["aggregate"]["scores"] if n.startswith("metaerr[") and n != "metaerr[selected]"] + ["msp"]
    for n in names:
        cells = []
        for d in docs:
            a = d["aggregate"]["scores"].get(n)
            cells.append(f"{a['auroc']['mean']:.4f} / {1000 * a['aurc']['mean']:.2f}" if a else "-")
        c, base = docs[0]["seeds"][0]["costs"].get(n), docs[0]["seeds"][0]["costs"]["base"]
        rel = (f"{c['params'] / base['params']:.3f}", f"{c['flops'] / base['flops']:.4f}") if c else ("0", "~0")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {rel[0]} | {rel[1]} |")
    base = docs[0]["seeds"][0]["costs"]["base"]
    lines += ["", (f"Base ({_config_keys(docs[0])['arch']}, {docs[0]['dataset']} input): {base['params']:,} params, "
              f"{base['flops'] / 1e6:.1f} MFLOPs per image (torch FLOP counter; other datasets' inputs differ slightly).")]  # fmt: skip
    return "\n".join(lines) + "\n"


def archcheck_table(doc: dict) -> str:
    lines = [(f"### Architecture-agnostic check ({doc['dataset']}, pool {doc['max_pool']}, test n={doc['max_test']}, "
             f"{doc.get('epochs', '?')} epochs, same MetaErr recipe, {doc.get('mentor_arch', 'small_cnn')} mentor)"), "",
             "| base arch | test acc | msp AUROC | metaerr[probs] AUROC | metaerr[mentor] AUROC | msp AURC‰ | metaerr[mentor] AURC‰ | selected (calib) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arch, d in doc["archs"].items():
        a = d["aggregate"]["scores"]
        lines.append(f"| {arch} | {d['aggregate']['test_accuracy']['mean']:.4f} | {a['msp']['auroc']['mean']:.4f} | "
                     f"{a['metaerr[probs]']['auroc']['mean']:.4f} | {a['metaerr[mentor]']['auroc']['mean']:.4f} | "
                     f"{1000 * a['msp']['aurc']['mean']:.2f} | {1000 * a['metaerr[mentor]']['aurc']['mean']:.2f} | "
                     f"{', '.join(s['selected'] for s in d['seeds'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_readme() -> None:
    docs = [loads_json((RESULTS / f"failure_prediction_{d}.json").read_text())
            for d in ("mnist", "fashion-mnist", "cifar10") if (RESULTS / f"failure_prediction_{d}.json").is_file()]  # fmt: skip
    parts = [dataset_table(d) for d in docs]
    if docs:
        parts.append(frontier_table(docs))
    arch = RESULTS / "failure_prediction_archcheck.json"
    if arch.is_file():
        parts.append(archcheck_table(loads_json(arch.read_text())))
    block = f"{BEGIN}\n<!-- generated by benchmarks/failure_prediction.py; edits here are overwritten -->\n\n" + "\n".join(parts) + f"\n{END}"
    text = README.read_text() if README.is_file() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    elif "## Failure prediction" in text:
        text = text.replace("## Failure prediction", "## Failure prediction\n\n" + block, 1)
    else:
        text = text.rstrip() + "\n\n## Failure prediction\n\n" + block + "\n"
    atomic_write_text(README, text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> None:
    global RESULTS, README
    args = parse_args(argv)
    RESULTS, README = Path(args.out), Path(args.readme)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.readme_only:
        for dataset in [] if args.arch_check_only else args.datasets:
            run_dataset(args, dataset, not args.quiet)
            write_readme()
        if args.arch_check:
            run_arch_check(args, not args.quiet)
    write_readme()


if __name__ == "__main__":
    main()
