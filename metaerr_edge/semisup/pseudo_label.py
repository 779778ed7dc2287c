"""Pseudo-labelling rounds: train on the labelled set, select pseudo-labels from the pool, retrain.

Round 0 trains the base on the labelled set alone. Each round r >= 1 asks the selector for
pseudo-labels on the *whole* unlabelled pool using the round r-1 base (earlier pseudo-labels are
re-decided, not frozen, as in UPS), then retrains the base from scratch on labelled + pseudo-labelled.
Per round it records how many pseudo-labels were kept, their precision against the true labels (known
in a benchmark, never shown to the selector) and test accuracy. Nothing is selected on the test split:
the schedule is fixed and the meta-model picks its checkpoint on a split of the labelled set.

``shadows`` compares other selectors on the same trajectory: each round, every shadow selects from
the same model and pool with the main selector's count as its budget, and its count, precision and
class counts are recorded beside the main selector's; only the main selection is trained on. That is
precision at equal count on the same model, without a training run per selector.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metaerr_edge.console import warn
from metaerr_edge.data import DatasetArrays, ImageArrays
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models import FitConfig, create_base, fit_classifier, predict_probs
from metaerr_edge.models.training import fingerprint, resolve_device, steps_at_least
from metaerr_edge.semisup.selectors import SelectContext, Selector, create_selector


@dataclass(frozen=True)
class RoundRecord:
    """One round. ``kept``/``precision``/``class_counts`` (kept per pseudo-label class) describe the
    pseudo-labels the round's base trained on; ``shadows`` the same for each shadow selector's choice
    from the same model at the same budget (name -> kept, precision, class_counts, imbalance, seconds,
    info); ``seconds`` is the main selector's round (selection and retraining), without the shadows."""

    round: int
    kept: int
    precision: float
    test_acc: float
    n_train: int
    seconds: float
    info: dict = field(default_factory=dict)
    class_counts: tuple[int, ...] = ()
    shadows: dict = field(default_factory=dict)

    @property
    def imbalance(self) -> float:
        """Largest class count over the mean count of the kept set (1 = balanced; NaN when none kept)."""
        return imbalance(self.class_counts)


def class_counts(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """How many of ``labels`` fall in each of ``num_classes`` classes."""
    return tuple(int(v) for v in np.bincount(labels, minlength=num_classes))


def imbalance(class_counts: Sequence[int]) -> float:
    """Largest class count over the mean count (1 = balanced; NaN when nothing was kept).

    Example:
        >>> imbalance([30, 10, 20])
        1.5
    """
    counts = np.asarray(class_counts, np.float64)
    return float(counts.max() / counts.mean()) if counts.size and counts.sum() > 0 else float("nan")


@dataclass(frozen=True)
class SSLResult:
    selector: str
    selector_params: dict
    seed: int
    n_labelled: int
    n_pool: int
    n_test: int
    rounds: tuple[RoundRecord, ...]

    @property
    def final_test_acc(self) -> float:
        return self.rounds[-1].test_acc

    def to_dict(self) -> dict:
        return {**asdict(self), "rounds": [{**asdict(r), "imbalance": r.imbalance} for r in self.rounds],
                "final_test_acc": self.final_test_acc}


def pseudo_label_precision(pseudo_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Fraction of pseudo-labels equal to the true label; NaN when none were kept.

    Example:
        >>> pseudo_label_precision(np.array([1, 2, 3]), np.array([1, 2, 0]))
        0.6666666666666666
    """
    if len(pseudo_labels) != len(true_labels):
        raise DataError(f"{len(pseudo_labels)} pseudo-labels but {len(true_labels)} true labels")
    return float(np.mean(pseudo_labels == true_labels)) if len(pseudo_labels) else float("nan")


def sample_labelled(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded, class-balanced labelled subset of ``n`` indices (``n // K`` per class, remainder at random).

    Example:
        >>> idx = sample_labelled(ds.train.labels, 100, seed=0)
    """
    classes = np.unique(labels)
    if not len(classes) <= n < len(labels):
        raise ConfigError(
            f"asked for {n} labelled samples from a training pool of {len(labels)} with {len(classes)} classes; "
            f"use between {len(classes)} and {len(labels) - 1} so that every class is labelled and an unlabelled pool remains"
        )
    rng = np.random.default_rng(seed)
    per = n // len(classes)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    taken = np.concatenate(chosen)
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), taken))
    return np.sort(np.concatenate([taken, rest[: n - len(taken)]]))


def split_for_ssl(
    data: DatasetArrays, labelled_idx: np.ndarray, seed: int, pool_size: int | None = None, max_test: int | None = None
) -> tuple[ImageArrays, ImageArrays, ImageArrays, np.ndarray]:
    """``(labelled, pool, test, pool_idx)``; ``pool_idx`` indexes ``data.train``. The pool is the rest of the training split (seeded subsample of
    ``pool_size``); without an official test split, a seeded 20% of the non-labelled images is the test."""
    n = len(data.train)
    labelled_idx = np.asarray(labelled_idx, dtype=np.int64)
    if len(labelled_idx) == 0 or len(np.unique(labelled_idx)) != len(labelled_idx):
        raise ConfigError(f"labelled_idx must be non-empty and unique, got {len(labelled_idx)} ({len(np.unique(labelled_idx))} unique)")
    if labelled_idx.min() < 0 or labelled_idx.max() >= n or len(labelled_idx) >= n:
        raise ConfigError(f"labelled_idx must index the {n} training images and leave an unlabelled pool")
    rng = np.random.default_rng(seed + 17)
    rest = rng.permutation(np.setdiff1d(np.arange(n), labelled_idx))
    if data.test is None:
        n_test = max(1, round(0.2 * len(rest)))
        test, rest = data.train.subset(np.sort(rest[:n_test])), rest[n_test:]
    else:
        test = data.test
    if max_test is not None and len(test) > max_test:
        test = test.subset(np.sort(np.random.default_rng(seed + 23).permutation(len(test))[:max_test]))
    pool_idx = np.sort(rest[:pool_size] if pool_size is not None else rest)
    if len(pool_idx) == 0:
        raise ConfigError("the unlabelled pool is empty; use fewer labels or a larger pool_size")
    return data.train.subset(labelled_idx), data.train.subset(pool_idx), test, pool_idx


def run_pseudo_labelling(
    data: DatasetArrays,
    labelled_idx: np.ndarray,
    selector: Selector | str,
    rounds: int = 3,
    fit: FitConfig | None = None,
    seed: int = 0,
    *,
    arch: str = "small_cnn",
    arch_kwargs: dict | None = None,
    pool_size: int | None = None,
    max_test: int | None = None,
    budgets: Sequence[int | None] | None = None,
    min_steps: int = 100,
    warm_start: nn.Module | None = None,
    progress: bool = False,
    shadows: Mapping[str, Selector | str] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> SSLResult:
    """Pseudo-labelling with ``selector`` for ``rounds`` rounds after a supervised round 0.

    Args:
        data: dataset; ``labelled_idx`` indexes ``data.train``.
        selector: a :class:`Selector` or a registered name.
        fit: base training config; ``epochs`` is raised so each round has >= ``min_steps`` steps.
        budgets: per-round count for count-based selectors (round r uses ``budgets[r - 1]``); None
            lets them match the confidence selector's count on the same model.
        warm_start: the round-0 base already trained with this config (``train_round0``), to share it
            between selectors of the same seed.
        shadows: name -> selector (or registered name) compared each round on the main selector's
            model and count (``RoundRecord.shadows``); never trained on.
        checkpoint: a file holding the state after every finished round (the records, the round's
            base, its pseudo-labels, the random state). A call that finds one written for the same
            data, labelled set, selectors, schedule and seed goes on after its last round and gives
            the result an uninterrupted call gives (more ``rounds`` than it holds: it goes on from
            there); one written for anything else is ignored and overwritten. The caller removes it.

    Example:
        >>> res = run_pseudo_labelling(ds, sample_labelled(ds.train.labels, 100, 0), "metaerr-topk", rounds=2)
        >>> [(r.kept, r.precision, r.test_acc) for r in res.rounds]
    """
    fit = fit or FitConfig()
    sel = create_selector(selector) if isinstance(selector, str) else selector
    shadow_sels = {name: create_selector(s) if isinstance(s, str) else s for name, s in (shadows or {}).items()}
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}")
    if budgets is not None and len(budgets) < rounds:
        raise ConfigError(f"budgets has {len(budgets)} entries for {rounds} rounds; give one per round")
    labelled, pool, test, _ = split_for_ssl(data, labelled_idx, seed, pool_size, max_test)
    mean, std = data.channel_stats()
    pre = Preprocess(mean, std)
    num_classes = len(data.classes)

    def factory() -> nn.Module:
        return create_base(arch, data.channels, num_classes, data.image_size, **(arch_kwargs or {}))

    torch.manual_seed(seed)  # every initial weight after this is seed-determined: the same seed, the same run

    def test_acc(model: nn.Module) -> float:
        return float((predict_probs(model, test.images, pre, device=fit.device).argmax(1) == test.labels).mean())

    t0 = time.perf_counter()
    fit0 = steps_at_least(fit, len(labelled), min_steps, seed * 1000)
    state = None if checkpoint is None else _RoundState(checkpoint, data, labelled_idx, sel, shadow_sels, fit, seed, arch, arch_kwargs,
                                                        pool_size, max_test, min_steps, warm_start)  # fmt: skip
    held = None if state is None else state.load(budgets, rounds)
    if held is not None:  # rounds 0..R from the checkpoint: their records, the round-R base and pseudo-labels
        records, weights, cur_fit, pseudo_idx, pseudo_y, rng = held
        model = _with_state(factory(), weights, fit.device)
        torch.set_rng_state(rng)  # after factory(), whose initial weights drew from it
        pseudo_x = None if pseudo_idx is None else pool.images[pseudo_idx]
    else:
        model = warm_start if warm_start is not None else fit_classifier(factory(), labelled.images, labelled.labels, pre, fit0, progress, "round 0")
        records = [RoundRecord(0, 0, float("nan"), test_acc(model), len(labelled), time.perf_counter() - t0)]
        cur_fit = fit0
        pseudo_idx = pseudo_x = pseudo_y = None
        if state is not None:
            state.save(records, model, cur_fit, None, None, budgets)
    for r in range(len(records), rounds + 1):
        t0 = time.perf_counter()
        probs = predict_probs(model, pool.images, pre, device=fit.device)
        ctx = SelectContext(
            model=model, probs=probs, pool_images=pool.images, labelled_images=labelled.images,
            labelled_labels=labelled.labels, preprocess=pre, round=r, budget=None if budgets is None else budgets[r - 1],
            fit=cur_fit, factory=factory, pseudo_images=pseudo_x, pseudo_labels=pseudo_y, seed=seed, progress=progress,
            schedule=fit, min_steps=min_steps,
        )  # fmt: skip
        idx, plabels = sel.select(ctx)
        _check_selection(idx, plabels, len(pool), sel.name)
        precision = pseudo_label_precision(plabels, pool.labels[idx])
        t_shadows = time.perf_counter()
        shadow_records = {name: _shadow(s, dataclasses.replace(ctx, budget=len(idx), info={}), pool, num_classes)
                          for name, s in shadow_sels.items()}  # fmt: skip
        t0 += time.perf_counter() - t_shadows  # the round's seconds are the main selector's: the shadows time themselves
        pseudo_idx, pseudo_x, pseudo_y = idx, pool.images[idx], plabels
        x = np.concatenate([labelled.images, pseudo_x])
        y = np.concatenate([labelled.labels, pseudo_y])
        cur_fit = steps_at_least(fit, len(x), min_steps, seed * 1000 + r)
        torch.manual_seed(seed * 1000 + r)  # the round's initial weights: the same for every selector, whatever it drew
        model = fit_classifier(factory(), x, y, pre, cur_fit, progress, f"round {r}")
        records.append(RoundRecord(r, len(idx), precision, test_acc(model), len(x), time.perf_counter() - t0, dict(ctx.info),
                                   class_counts(plabels, num_classes), shadow_records))
        _warn_if_degenerate(records, len(pool), sel.name)
        if state is not None:
            state.save(records, model, cur_fit, pseudo_idx, pseudo_y, budgets)
    records = records[: rounds + 1]  # a checkpoint may hold more rounds than asked for
    return SSLResult(sel.name, sel.params(), seed, len(labelled), len(pool), len(test), tuple(records))


class _RoundState:
    """:func:`run_pseudo_labelling`'s state after a round, in one file, keyed by everything the rounds
    depend on but their number (a run asked for more rounds goes on from the last one held)."""

    def __init__(self, path, data: DatasetArrays, labelled_idx, sel: Selector, shadows: Mapping[str, Selector], fit: FitConfig,
                 seed: int, arch: str, arch_kwargs, pool_size, max_test, min_steps: int, warm_start: nn.Module | None) -> None:
        self.path = Path(path)
        header = json.dumps([sel.name, sel.params(), {n: [s.name, s.params()] for n, s in shadows.items()},
                             sorted(asdict(fit).items()), seed, arch, arch_kwargs or {}, pool_size, max_test, min_steps],
                            sort_keys=True, default=str)
        self.key = fingerprint(header, (np.asarray(labelled_idx, np.int64), data.train.labels, data.train.images),
                               {} if warm_start is None else warm_start.state_dict())

    def load(self, budgets, rounds: int):
        """(records, base weights, fit, pseudo indices, pseudo-labels, random state) of a matching
        checkpoint whose first ``rounds`` rounds used the same budgets; None otherwise."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if state.get("key") != self.key:
                return None
            records = [RoundRecord(**{**r, "class_counts": tuple(r["class_counts"])}) for r in json.loads(state["records"])]
        except Exception:  # cut short, from another version: these rounds start over and overwrite it
            return None
        n = min(len(records) - 1, rounds)
        used = state["budgets"]
        if (used is None) != (budgets is None) or (used is not None and used[:n] != _budgets_used(budgets, n)):
            return None
        idx = state["pseudo_idx"]
        return (records, state["model"], FitConfig(**json.loads(state["fit"])), None if idx is None else idx.numpy(),
                None if idx is None else state["pseudo_labels"].numpy(), state["torch_rng"])

    def save(self, records, model: nn.Module, fit: FitConfig, pseudo_idx, pseudo_labels, budgets) -> None:
        from metaerr_edge._fileio import atomic_write_bytes

        state = {"key": self.key, "records": json.dumps([asdict(r) for r in records], default=_plain),
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "fit": json.dumps(asdict(fit)),
                 "pseudo_idx": None if pseudo_idx is None else torch.from_numpy(np.asarray(pseudo_idx, np.int64)),
                 "pseudo_labels": None if pseudo_labels is None else torch.from_numpy(np.asarray(pseudo_labels, np.int64)),
                 "budgets": _budgets_used(budgets, len(records) - 1), "torch_rng": torch.get_rng_state()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, lambda tmp: torch.save(state, tmp))


def _budgets_used(budgets, rounds_done: int) -> list | None:
    return None if budgets is None else [None if b is None else int(b) for b in budgets[:rounds_done]]


def _plain(obj):
    """numpy scalars and arrays in a round's info, as JSON."""
    return obj.item() if isinstance(obj, np.generic) else obj.tolist() if isinstance(obj, np.ndarray) else str(obj)


def _with_state(model: nn.Module, state: dict, device: str) -> nn.Module:
    """``model`` holding ``state``, on ``device`` and in eval mode: as :func:`fit_classifier` returns it."""
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


def _shadow(sel: Selector, ctx: SelectContext, pool: ImageArrays, num_classes: int) -> dict:
    """What ``sel`` would keep from the round's model at the main selector's budget (``ctx.budget``)."""
    t0 = time.perf_counter()
    idx, labels = sel.select(ctx)
    seconds = time.perf_counter() - t0  # work shared with an earlier shadow (ctx.cache) is timed where it ran
    _check_selection(idx, labels, len(pool), sel.name)
    counts = list(class_counts(labels, num_classes))
    return {"kept": int(len(idx)), "precision": pseudo_label_precision(labels, pool.labels[idx]), "class_counts": counts,
            "imbalance": imbalance(counts), "seconds": seconds, "info": dict(ctx.info)}


def train_round0(
    data: DatasetArrays, labelled_idx: np.ndarray, fit: FitConfig | None = None, seed: int = 0, *,
    arch: str = "small_cnn", arch_kwargs: dict | None = None, min_steps: int = 100, progress: bool = False,
) -> nn.Module:  # fmt: skip
    """The round-0 base of :func:`run_pseudo_labelling` (same seed and schedule), for ``warm_start``."""
    labelled_idx = np.asarray(labelled_idx, dtype=np.int64)
    fit = fit or FitConfig()
    mean, std = data.channel_stats()
    net = create_base(arch, data.channels, len(data.classes), data.image_size, **(arch_kwargs or {}))
    return fit_classifier(
        net, data.train.images[labelled_idx], data.train.labels[labelled_idx], Preprocess(mean, std),
        steps_at_least(fit, len(labelled_idx), min_steps, seed * 1000), progress, "round 0",
    )  # fmt: skip


#: How to make each selector keep fewer pseudo-labels (the knob the `ssl` command exposes).
_STRICTER = {"confidence": "Raise --threshold", "mc-dropout": "Raise --threshold (or lower max_std)",
             "topk": "Give a smaller --budget", "mc-dropout-topk": "Give a smaller --budget", "metaerr-topk": "Give a smaller --budget",
             "metaerr-balanced": "Give a smaller --budget", "metaerr-perclass": "Give a smaller --budget",
             "metaerr": "Lower --max-score"}


def _warn_if_degenerate(records: Sequence[RoundRecord], n_pool: int, name: str) -> None:
    """A selector that keeps the whole pool selects nothing: say so (louder when accuracy fell)."""
    last, before = records[-1], records[-2]
    if n_pool == 0 or last.kept < n_pool:
        return
    fell = last.test_acc < before.test_acc
    warn(f"ssl round {last.round}: selector {name!r} kept all {n_pool} pool images (100%), so it selected nothing"
         + (f", and test accuracy fell from {before.test_acc:.4f} to {last.test_acc:.4f}" if fell else "")
         + f". {_STRICTER.get(name, 'Make the selector stricter')}.", name="metaerr_edge.semisup")


def _check_selection(idx: np.ndarray, labels: np.ndarray, n_pool: int, name: str) -> None:
    if len(idx) != len(labels) or len(np.unique(idx)) != len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= n_pool)):
        raise DataError(f"selector {name!r} returned an invalid selection: {len(idx)} indices into a pool of {n_pool}, {len(labels)} labels")
