"""Base recipes for the converged benchmark, chosen on CALIBRATION accuracy (never test).

The failure-prediction benchmark needs bases trained to where users deploy them (MNIST >= 99.2%,
Fashion-MNIST >= 92%, CIFAR-10 >= 88%). This script trains candidate recipes on the base_train split of
a benchmark run (the same seeded split the benchmark uses) and reports their accuracy on its calib
split, a split no model trains on, with the wall time per epoch on this machine. The test split is not
loaded (the benchmark's current recipe is read from its run: its base is that recipe). Rule, fixed
before the numbers: per dataset, the cheapest candidate (seconds of training)
whose calib accuracy reaches the target; if none does, the most accurate one, reported as not held.

    python benchmarks/base_recipes.py --datasets fashion-mnist --threads 2
    python benchmarks/base_recipes.py --readme-only

Outputs: ``results/base_recipes.json`` (merged per candidate: reruns replace their own entry) and a table
between the base-recipes markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "base_recipes.json"
README = HERE / "README.md"
BEGIN, END = "<!-- base-recipes:begin -->", "<!-- base-recipes:end -->"
TARGETS = {"mnist": 0.992, "fashion-mnist": 0.92, "cifar10": 0.88}

#: dataset -> candidate name -> recipe (registry arch, its kwargs, epochs, batch size, augmentation)
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "mnist": {
        "small_cnn-w32-e12": {"arch": "small_cnn", "kwargs": {}, "epochs": 12, "batch_size": 128, "augment": "shift"},
        "resnet9-32.64.128-e10": {"arch": "resnet9", "kwargs": {"widths": [32, 64, 128]}, "epochs": 10,
                                  "batch_size": 128, "augment": "shift"},
    },
    "fashion-mnist": {
        "small_cnn-w32-e15": {"arch": "small_cnn", "kwargs": {}, "epochs": 15, "batch_size": 128, "augment": "shift"},
        "resnet9-32.64.128-e15-flip": {"arch": "resnet9", "kwargs": {"widths": [32, 64, 128]}, "epochs": 15,
                                       "batch_size": 128, "augment": "shift_flip"},
    },
    "cifar10": {
        "resnet9-e14": {"arch": "resnet9", "kwargs": {}, "epochs": 14, "batch_size": 256, "augment": "shift_flip"},
        # the fast-CIFAR residual net's usual schedule length (24 epochs), the same optimiser and batch
        "resnet9-e24": {"arch": "resnet9", "kwargs": {}, "epochs": 24, "batch_size": 256, "augment": "shift_flip"},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--candidates", nargs="*", default=None, help="names from CANDIDATES (default: all of the dataset; "
                    "where the benchmark's run folder is gone its own recipe is trained like any other)")
    ap.add_argument("--root", default="../shared/datasets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--readme-only", action="store_true")
    return ap.parse_args(argv)


class SplitsOnly:
    """What a candidate needs of the benchmark's run when its folder is gone (a fresh machine): the
    same seeded base_train and calib splits and preprocessing, without training the run's base."""

    config = None
    predictions: dict = {}

    def __init__(self, config: Any) -> None:
        from metaerr_edge.data import load_dataset, make_splits
        from metaerr_edge.models.preprocess import Preprocess
        from metaerr_edge.pipeline import split_config

        self.data = load_dataset(config.data.dataset, config.data.root)
        self.splits = make_splits(self.data, split_config(config))
        self.preprocess = Preprocess(*self.data.channel_stats())
        self.classes = self.data.classes
        self.channels, (self.height, self.width) = self.data.channels, self.data.image_size

    def split(self, name: str) -> tuple[Any, Any]:
        arr = self.splits.arrays(self.data, name)
        return arr.images, arr.labels


def splits(dataset: str, root: str, seed: int) -> Any:
    """The benchmark's run for ``dataset`` and ``seed`` (its base_train and calib splits), or where its
    folder is gone the same splits alone (:class:`SplitsOnly`; the benchmark's own recipe is then skipped)."""
    import failure_prediction as fp

    # the candidates were compared on the first converged pass's seed-0 run (its small_cnn base is the
    # "benchmark's run" row; the seeded splits are the same under every recipe)
    fp_args = fp.parse_args(["--root", root, "--recipe", "converged-v1"])
    config = fp.run_config(fp_args, dataset, seed)
    folder = fp.run_folder(fp_args, config)
    return fp.get_run(config, folder, progress=False)[0] if fp.reusable(folder, config) else SplitsOnly(config)


def is_runs_base(run: Any, recipe: dict[str, Any]) -> bool:
    if run.config is None:
        return False
    b = run.config.base
    return (b.arch, dict(b.arch_kwargs), b.epochs, b.batch_size) == (recipe["arch"], recipe["kwargs"], recipe["epochs"],
                                                                     recipe["batch_size"])


def train_candidate(run: Any, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train ``recipe`` on the run's base_train split; its accuracy on the calib split. The benchmark's
    own recipe is read from the run (its base is that recipe, already trained), not trained again."""
    import numpy as np

    if is_runs_base(run, recipe):
        probs, labels = run.predictions["calib_probs"], run.predictions["calib_labels"]
        return {"recipe": recipe, "calib_accuracy": float(np.mean(probs.argmax(1) == labels)), "n_calib": int(len(labels)),
                "n_train": int(len(run.split("base_train")[1])), "train_seconds": None, "seconds_per_epoch": None,
                "source": f"the benchmark run's base ({run.path.name})"}

    from metaerr_edge.models import create_base, fit_classifier, predict_probs
    from metaerr_edge.models.training import FitConfig

    x, y = run.split("base_train")
    cx, cy = run.split("calib")
    net = create_base(recipe["arch"], run.channels, len(run.classes), (run.height, run.width), **recipe["kwargs"])
    t0 = time.perf_counter()
    fit_classifier(net, x, y, run.preprocess, FitConfig(recipe["epochs"], recipe["batch_size"], augment=recipe["augment"],
                                                       seed=seed), progress=False, desc=recipe["arch"])  # fmt: skip
    seconds = time.perf_counter() - t0
    acc = float(np.mean(predict_probs(net, cx, run.preprocess).argmax(1) == cy))
    return {"recipe": recipe, "calib_accuracy": acc, "n_calib": int(len(cy)), "n_train": int(len(y)),
            "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / recipe["epochs"], 1)}


def choose(dataset: str, rows: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The preregistered rule: cheapest candidate at or above the target on calib, else the most accurate."""
    target = TARGETS[dataset]
    ok = [n for n, r in rows.items() if r["calib_accuracy"] >= target]
    if ok:  # the benchmark's current recipe (no timing: read from its run) is the cheapest by construction
        return min(ok, key=lambda n: rows[n]["train_seconds"] or 0.0), True
    return max(rows, key=lambda n: rows[n]["calib_accuracy"]), False


def markdown(data: dict[str, Any]) -> str:
    lines = ["| dataset | candidate | calib accuracy | target | train s (s/epoch) | threads | chosen |",
             "|---|---|---:|---:|---:|---:|---|"]
    for dataset, rows in data.items():
        chosen, held = choose(dataset, rows)
        for name, r in rows.items():
            mark = ("**chosen** (" + ("reaches the target" if held else "best, target not reached") + ")") if name == chosen else ""
            cost = ("the benchmark's run" if r["train_seconds"] is None else
                    f"{r['train_seconds']:.0f} ({r['seconds_per_epoch']:.0f})")
            lines.append(f"| {dataset} | `{name}` | {100 * r['calib_accuracy']:.2f}% | {100 * TARGETS[dataset]:.1f}% | "
                         f"{cost} | {r.get('threads', '?')} | {mark} |")
    return "\n".join(lines)


def write_readme(data: dict[str, Any]) -> None:
    from metaerr_edge._fileio import atomic_write_text

    text = README.read_text()
    block = "\n".join([BEGIN, "", "Generated by `python benchmarks/base_recipes.py` (calib split of the seed-0 benchmark run; "
                       "the test split is not loaded).", "", markdown(data), "", END])
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    atomic_write_text(README, text)


def main(argv: list[str] | None = None) -> int:
    from metaerr_edge._fileio import atomic_write_text, dumps_json

    args = parse_args(argv)
    data: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.readme_only:
        import torch

        torch.set_num_threads(args.threads)
        for dataset in args.datasets:
            run = splits(dataset, args.root, args.seed)
            for name, recipe in CANDIDATES[dataset].items():
                if args.candidates and name not in args.candidates:
                    continue
                row = {**train_candidate(run, recipe, args.seed), "threads": args.threads, "seed": args.seed}
                data.setdefault(dataset, {})[name] = row
                atomic_write_text(RESULTS, dumps_json(data, indent=1))  # each candidate lands as it finishes
                took = "from the benchmark run" if row["train_seconds"] is None else f"in {row['train_seconds']:.0f} s"
                print(f"[{time.strftime('%H:%M:%S')}] {dataset} {name}: calib {100 * row['calib_accuracy']:.2f}% {took}",
                      flush=True)
    write_readme(data)
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
