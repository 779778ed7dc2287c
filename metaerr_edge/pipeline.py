"""The training job: base + MetaErr into a run folder, and loading it back.

A run folder holds everything later stages need::

    run/config.json          RunConfig (what was asked) + summary (what came out)
    run/splits.npz           the seeded split indices
    run/base.pt              base architecture + weights
    run/meta_<mode>.pt       one meta-model per trained input mode (the first is deployed)
    run/predictions.npz      base probabilities and meta scores on calib and test, labels, and the
                             base's probabilities on the meta-train rows (what base_from= reuses)
    run/manifest.json        sha256 and size of every file above, written last

A run is written whole: into a hidden temporary folder beside the target, which then replaces the
target in one step, under a lock (a second writer fails at once). An interrupted training leaves
the previous run as it was; :class:`Run` refuses a folder whose files do not match its manifest,
and a file that changed after the run was opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaerr_edge.console import warn
from metaerr_edge.config import RunConfig
from metaerr_edge.data import DatasetArrays, ImageArrays, SplitConfig, Splits, load_dataset, make_splits, shift_views
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge._fileio import atomic_write_bytes, atomic_write_text, dumps_json, write_npz
from metaerr_edge.contract.spec import Contract, InputSpec, ThresholdSpec
from metaerr_edge.models import distributed
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models.seams import canonical_state_dict
from metaerr_edge.meta import (
    HeadConfig,
    MentorData,
    MetaData,
    MetaFitConfig,
    MetaFitResult,
    MetaModel,
    crossfit_probs,
    fit_meta,
    meta_scores,
    outlier_rows,
)
from metaerr_edge.models import FitConfig, create_base, fit_classifier, predict_probs
from metaerr_edge.models.registry import BASES
from metaerr_edge.models.training import resolve_device
from metaerr_edge.runtime.torch_backend import register_run_opener


#: The files train_run writes (the manifest lists them), and what it owns besides: the manifest and
#: what evaluate and tradeoff add to a run folder (a retraining drops them with the old run).
RUN_FILES = re.compile(r"config\.json|splits\.npz|base\.pt|predictions\.npz|meta_.+\.pt")
RUN_EXTRAS = re.compile(r"manifest\.json|metrics\.json|metrics\.md|risk_coverage\.png|scores\.npz|report\.html|shift\.json|shift\.md|shift\.png|tradeoff")


# What the run's settings mean for each stage's own config (the one translation of RunConfig).


def check_config(config: RunConfig) -> None:
    """What a config can only be checked against here: registered architectures, an existing device.
    ``train_run`` calls it first, before any data is loaded; a run trained elsewhere opens without it."""
    if not isinstance(config, RunConfig):
        raise ConfigError(f"train_run takes a RunConfig, got {type(config).__name__}")
    for name in (config.base.arch, config.meta.mentor_arch):
        BASES.entry(name)  # an unknown name: UnknownName, listing the registered ones
    resolve_device(config.device)  # no GPU for --device cuda: one clear error, before any work


def split_config(config: RunConfig) -> SplitConfig:
    d = config.data
    return SplitConfig(d.meta_fraction, d.calib_fraction, d.test_fraction, d.max_pool, d.max_test, config.seed)


def fit_config(config: RunConfig, channels: int, seed_offset: int = 0) -> FitConfig:
    """How a base (and a mentor, ``seed_offset=7``) is trained on images with ``channels`` channels."""
    b = config.base
    augment = b.augment if b.augment != "auto" else ("shift_flip" if channels == 3 else "shift")
    return FitConfig(b.epochs, b.batch_size, b.lr, augment=augment, seed=config.seed + seed_offset, device=config.device,
                     amp=config.amp)


def head_config(config: RunConfig, mode: str) -> HeadConfig:
    m = config.meta
    return HeadConfig(mode, m.hidden, m.image_width, mentor_arch=m.mentor_arch, mentor_kwargs=dict(m.mentor_kwargs),
                      target=m.target_of(mode), skip="none" if mode == "image" else m.skip)  # fmt: skip


def meta_fit_config(config: RunConfig, index: int = 0) -> MetaFitConfig:
    """How the ``index``-th meta mode's head is trained."""
    return MetaFitConfig(epochs=config.meta.epochs, seed=config.seed + index, device=config.device)


class Run:
    """A trained run folder, loaded lazily. See the module docstring for its files."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Open a run folder; refuse one whose files are not all from one training.

        :func:`train_run` writes ``manifest.json`` last (sha256 and size of every file): a listed
        file that is missing or differs, or a run file it does not list, is a :class:`DataError`.
        Folders written before manifests existed have none and open unchecked, as they always did.
        A folder whose training was killed between the two renames of its swap is put back first.
        """
        from metaerr_edge._fileio import recover_folder, verify_manifest

        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"a run is opened from its folder path, got {type(path).__name__} {path!r}")
        self.path = Path(path)
        if not self.path.exists():
            try:
                recover_folder(self.path)
            except ConfigError as exc:  # its writer is still at work
                raise DataError(f"{self.path} is being replaced by another training right now; open it once that "
                                f"finishes. ({exc})") from exc
            except OSError:
                pass  # cannot take the lock here (read-only): report the folder as missing below
        cfg_file = self.path / "config.json"
        if not cfg_file.is_file():
            raise DataError(f"{self.path} is not a run folder: expected {cfg_file} (made by `metaerr-edge train`)")
        retrain = f"re-train it (metaerr-edge train -o {self.path})"
        self.manifest: dict[str, Any] | None = verify_manifest(
            self.path, owned=lambda name: RUN_FILES.fullmatch(name) is not None, fix=retrain)
        if self.manifest is None:
            warn(f"{self.path} has no manifest.json, so its files cannot be checked against each other (a run "
                 f"written before manifests, or the manifest was removed); {retrain} to get one",
                 name="metaerr_edge.pipeline")
        try:
            raw = json.loads(cfg_file.read_text(encoding="utf-8"))
            config, classes, mean, std = raw["config"], raw["classes"], raw["mean"], raw["std"]
            self.channels, self.height, self.width = raw["input_shape"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{cfg_file} is unreadable or incomplete ({type(exc).__name__}: {exc}); {retrain}") from exc
        self.config = RunConfig.from_dict(config)
        self.summary: dict[str, Any] = raw.get("summary", {})
        self.classes: tuple[str, ...] = tuple(classes)
        self.preprocess = Preprocess(mean, std)

    def _read(self, name: str) -> bytes:
        """A run file's bytes, checked against the manifest read when the run was opened: a run
        re-trained since (its folder swapped under this object) is refused, never mixed in."""
        data = (self.path / name).read_bytes()
        entry = (self.manifest or {}).get("files", {}).get(name)
        if entry is not None and hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise DataError(f"{self.path / name} changed since this run was opened (re-trained meanwhile?); "
                            "open the run again (load_run)")
        return data

    @cached_property
    def base(self) -> nn.Module:
        ckpt = torch.load(io.BytesIO(self._read("base.pt")), map_location="cpu", weights_only=True)
        net = create_base(ckpt["arch"], self.channels, len(self.classes), (self.height, self.width), **ckpt["arch_kwargs"])
        net.load_state_dict(ckpt["state_dict"])
        return net.eval()

    def meta(self, mode: str | None = None) -> MetaModel:
        mode = self.mode(mode)
        ckpt = torch.load(io.BytesIO(self._read(f"meta_{mode}.pt")), map_location="cpu", weights_only=True)
        meta = MetaModel(HeadConfig(**ckpt["head"]), self.channels, len(self.classes), (self.height, self.width))
        meta.load_state_dict(ckpt["state_dict"])
        return meta.eval()

    @cached_property
    def data(self) -> DatasetArrays:
        return load_dataset(self.config.data.dataset, self.config.data.root, self.config.data.download)

    @cached_property
    def splits(self) -> Splits:
        with np.load(io.BytesIO(self._read("splits.npz"))) as z:
            return Splits.from_npz_dict(z)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images N x C x H x W, int64 labels) of a split: base_train, meta_train, calib, test, pool."""
        arr = self.splits.arrays(self.data, name)
        return arr.images, arr.labels

    @cached_property
    def predictions(self) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self._read("predictions.npz"))) as z:
            return {k: z[k] for k in z.files}

    def input_spec(self, layout: str = "NCHW") -> InputSpec:
        mean = tuple(self.preprocess.mean.flatten().tolist())
        std = tuple(self.preprocess.std.flatten().tolist())
        nchw = layout == "NCHW"
        return InputSpec(
            name="image", layout=layout, dtype="float32" if nchw else "uint8", channels=self.channels,
            height=self.height, width=self.width, value_range=(0.0, 1.0) if nchw else (0.0, 255.0),
            channel_order="GRAY" if self.channels == 1 else "RGB", mean=mean, std=std,
        )  # fmt: skip

    def mode(self, mode: str | None = None) -> str:
        """``mode`` checked against the trained ones; None is the deployed (first) mode."""
        mode = mode or self.config.meta.modes[0]
        if mode not in self.config.meta.modes:
            raise ConfigError(f"this run trained meta modes {list(self.config.meta.modes)}, not {mode!r}")
        return mode

    def fused(self, threshold: float | None = None, layout: str = "NCHW", mode: str | None = None) -> FusedModel:
        pre = Preprocess(self.preprocess.mean.flatten().tolist(), self.preprocess.std.flatten().tolist(), layout)
        t = self.default_threshold(mode).value if threshold is None else threshold
        return FusedModel(self.base, self.meta(mode), pre, t).eval()

    def default_threshold(self, mode: str | None = None) -> ThresholdSpec:
        """``mode``'s threshold at 90% coverage on the calibration split (``metaerr-edge calibrate`` refines it)."""
        scores = self.predictions[f"calib_score_{self.mode(mode)}"]
        value = float(np.quantile(scores, 0.9, method="lower"))
        return ThresholdSpec(value=value, method="coverage", target_coverage=0.9, calibration_n=int(len(scores)),
                             achieved_coverage=float(np.mean(scores <= value)))  # fmt: skip

    def test_metrics(self, mode: str | None = None) -> dict[str, Any]:
        """What ``metaerr-edge evaluate`` measured for ``mode`` (and MSP) on the test split; {} before evaluate."""
        metrics_file = self.path / "metrics.json"
        if not metrics_file.is_file():
            return {}
        doc = json.loads(metrics_file.read_text())
        rows = doc.get("metrics", {})
        out = {k: v for k, v in doc.get("summary", {}).items() if "." not in k}  # test_accuracy, error_rate, n_test
        for label, keys in ((f"metaerr[{self.mode(mode)}]", ("auroc", "aurc", "aupr_error")), ("msp", ("auroc", "aurc"))):
            out.update({f"{label}.{k}": rows[label][k] for k in keys if k in rows.get(label, {})})
        return out

    def identity(self, mode: str | None = None) -> dict[str, str]:
        """What ties an exported model to this run: sha256 of its split indices and of the weights of
        the base and ``mode``'s meta-model (recorded in the contract; calibrate and verify check it).

        Example:
            >>> load_run("runs/demo").identity()["splits_sha256"][:12]
            '3f0c9a2e81b7'
        """
        mode = self.mode(mode)
        return {"dataset": self.config.data.dataset, "meta_mode": mode, "splits_sha256": self.splits_sha256,
                "weights_sha256": _weights_sha256((("base.pt", self.base), (f"meta_{mode}.pt", self.meta(mode))))}

    @cached_property
    def splits_sha256(self) -> str:
        """sha256 of the split indices (part of :meth:`identity`)."""
        splits = hashlib.sha256()
        for name, array in sorted(self.splits.to_npz_dict().items()):
            splits.update(name.encode() + b":" + np.ascontiguousarray(array).tobytes())
        return splits.hexdigest()

    @cached_property
    def base_sha256(self) -> str:
        """sha256 of the base's weights alone: equal for runs that share a base (``base_from=``)."""
        return _weights_sha256((("base.pt", self.base),))

    def contract(self, layout: str = "NCHW", threshold: ThresholdSpec | None = None, mode: str | None = None) -> Contract:
        mode = self.mode(mode)
        return Contract(
            input=self.input_spec(layout), classes=self.classes, threshold=threshold or self.default_threshold(mode),
            base={"arch": self.config.base.arch, "dataset": self.config.data.dataset, "accuracy": self.summary.get("test_accuracy")},
            meta={"mode": mode, "labels": self.config.meta.labels, "folds": self.config.meta.folds, "run": self.identity(mode)},
            metrics=self.test_metrics(mode),
        )  # fmt: skip


def _weights_sha256(modules) -> str:
    """sha256 of ``(file name, module)`` pairs' tensors, not of the files: torch.save's zip names vary."""
    weights = hashlib.sha256()
    for name, module in modules:
        for key, tensor in sorted(canonical_state_dict(module).items()):
            weights.update(f"{name}:{key}:{tuple(tensor.shape)}:{tensor.dtype}:".encode())
            weights.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return weights.hexdigest()


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder written by :func:`train_run`."""
    return Run(path)


# The torch backend opens run folders through this (open_session("runs/x", backend="torch")): the
# runtime is downstream of training and never imports it.
register_run_opener(load_run)


def check_architecture_fits(arch: str, channels: int, num_classes: int, size: tuple[int, int], kwargs: dict,
                            role: str = "base") -> None:
    """One forward pass on two blank images, before any training: an architecture that cannot take
    this image size (a stem that pools 1x1 inputs away) fails here, in one line, not mid-training."""
    net = create_base(arch, channels, num_classes, size, **kwargs).eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, channels, *size))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"the {role} architecture {arch!r} cannot take {channels}x{size[0]}x{size[1]} images "
                          f"({str(exc).splitlines()[0][:160]}); use larger images or another --arch") from None
    if tuple(out.shape) != (2, num_classes):
        raise ConfigError(f"the {role} architecture {arch!r} returns shape {tuple(out.shape)} for 2 images, "
                          f"expected (2, {num_classes}) logits")


def resume_state(out_dir: str | os.PathLike) -> Path:
    """Where ``train_run(resume=True)`` keeps the base's training state: ``.<name>.resume/`` beside the folder."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.resume"


def train_run(config: RunConfig, out_dir: str | os.PathLike, progress: bool = True,
              base_from: str | os.PathLike | None = None, resume: bool = False) -> Run:
    """Train the base model and every requested MetaErr mode; write the run folder.

    ``base_from``: a run folder trained with the same data, base settings, seed and error labels;
    its base (and, where the recipe allows, its mentor) is reused instead of trained again, so only
    the meta-models are new (trying another meta preset on a base that took an hour to train).

    The folder is written whole: its files go into a hidden folder beside ``out_dir``, with
    ``manifest.json`` last, which then replaces ``out_dir`` in one step
    (:func:`metaerr_edge._fileio.replace_folder`). A failure or ``kill -9`` at any point leaves the
    previous run as it was, never a mix. The lock of ``out_dir`` is taken first: a second training
    into the same folder fails at once with a :class:`ConfigError`, before any work. Retraining
    drops what ``evaluate`` and ``tradeoff`` wrote from the old run (metrics.*, risk_coverage.png,
    tradeoff/); a folder holding anything else (an exported model, notes) is refused, not deleted.

    ``resume``: the base's training state is saved after every epoch in the hidden
    :func:`resume_state` folder beside ``out_dir`` (removed once the folder is written): a training
    that is killed, or fails later, goes on from the base's last finished epoch when the same config
    is trained into the same folder again with ``resume``, and ends with the same weights
    (:func:`fit_classifier`'s ``checkpoint``). Single-process only (ignored under torchrun).

    Under torchrun (``metaerr-edge train --nproc N``) every rank runs this same function: training is
    data-parallel (:mod:`metaerr_edge.models.distributed`), rank 0 alone takes the lock and writes
    the folder, and every rank returns the run it wrote; ``summary["distributed"]`` records the
    world size and backend.

    Example:
        >>> run = train_run(RunConfig(base=BaseConfig(epochs=5)), "runs/digits")  # metaerr_edge.config
    """
    import secrets

    from metaerr_edge import __version__
    from metaerr_edge._fileio import check_replaceable, path_lock, replace_folder, write_manifest

    t0 = time.perf_counter()
    check_config(config)
    out = Path(out_dir)
    dist = distributed.current()  # under torchrun: every rank trains, rank 0 alone writes
    progress = progress and dist.is_main

    def owned(name: str) -> bool:
        return RUN_FILES.fullmatch(name) is not None or RUN_EXTRAS.fullmatch(name) is not None

    with distributed.main_holds(dist, lambda: path_lock(out)):
        check_replaceable(out, owned, "metaerr-edge train")
        data = load_dataset(config.data.dataset, config.data.root, config.data.download)
        splits = make_splits(data, split_config(config))
        mean, std = data.channel_stats()
        pre = Preprocess(mean, std)
        k, (h, w), c = len(data.classes), data.image_size, data.channels
        fit = fit_config(config, c)

        def new_base() -> nn.Module:
            return create_base(config.base.arch, c, k, (h, w), seed=config.seed, **config.base.arch_kwargs)

        check_architecture_fits(config.base.arch, c, k, (h, w), config.base.arch_kwargs)
        if any(m in ("mentor", "mentor-features") for m in config.meta.modes):
            check_architecture_fits(config.meta.mentor_arch, c, k, (h, w), config.meta.mentor_kwargs, role="mentor")
        pool = splits.arrays(data, "pool")
        calib, test = splits.arrays(data, "calib"), splits.arrays(data, "test")
        # the base's state per epoch (keyed: another config's is ignored)
        ckpt = resume_state(out) / "base.pt" if resume and not dist.enabled else None
        reuse = _base_source(base_from, config, out) if base_from is not None else None
        crossfit = config.meta.labels == "crossfit"
        meta_split = pool if crossfit else splits.arrays(data, "meta_train")
        mentor_train = pool if crossfit else splits.arrays(data, "base_train")
        meta_x, meta_y = meta_split.images, meta_split.labels
        views_x = shift_views(meta_x, config.meta.shift_views, config.seed) if config.meta.shift_views else None
        views_p: np.ndarray | None = None
        # 1. Error labels on data the base did not train on (views: the same rows, corrupted).
        if reuse is not None:
            base, meta_probs = reuse.base, reuse.predictions["meta_train_probs"]
        elif crossfit:
            if views_x is not None:
                views_p = np.zeros((len(views_x), k), np.float32)
                rows_of = np.arange(len(views_x)).reshape(config.meta.shift_views, len(meta_x))

                def score_views(model: nn.Module, held: np.ndarray) -> None:
                    idx = rows_of[:, held].reshape(-1)
                    views_p[idx] = predict_probs(model, views_x[idx], pre, device=config.device)
            meta_probs, _ = crossfit_probs(new_base, meta_x, meta_y, pre, fit, config.meta.folds, progress, "base fold",
                                           on_fold=score_views if views_x is not None else None)  # fmt: skip
            base = fit_classifier(new_base(), pool.images, pool.labels, pre, fit, progress, "base (all)", checkpoint=ckpt)
        else:
            base = fit_classifier(new_base(), mentor_train.images, mentor_train.labels, pre, fit, progress, "base",
                                  checkpoint=ckpt)
            meta_probs = predict_probs(base, meta_x, pre, device=config.device)
        if views_x is not None and views_p is None:  # held-out rows: the deployed base never saw them
            views_p = predict_probs(base, views_x, pre, device=config.device)
        meta_data = MetaData(meta_x, meta_probs, meta_y)
        views = None if views_x is None else MetaData(views_x, views_p, np.tile(meta_y, config.meta.shift_views))
        # images of no class, made from the meta-train images: failures, whatever the base says
        outliers = outlier_rows(base, meta_x, config.meta.outliers, pre, config.seed, device=config.device)
        is_error = meta_data.is_error
        preds: dict[str, np.ndarray] = {
            "calib_probs": predict_probs(base, calib.images, pre, device=config.device),
            "calib_labels": calib.labels,
            "test_probs": predict_probs(base, test.images, pre, device=config.device),
            "test_labels": test.labels,
            "meta_train_is_error": is_error,
            "meta_train_probs": meta_probs,  # what base_from= reuses (out-of-fold for cross-fit runs)
        }
        # 2. One meta-model per input mode.
        meta_results, meta_ckpts = {}, {}
        for i, mode in enumerate(config.meta.modes):
            torch.manual_seed(config.seed + 100 + i)  # the head's initial weights depend on the seed only
            meta = MetaModel(head_config(config, mode), c, k, (h, w))
            trained = reuse is not None and _reuse_mentor(meta, reuse, config, mode)
            result = fit_meta_mode(meta, config, meta_data, mentor_train, base, pre, meta_fit_config(config, i), progress,
                                   mentor_trained=trained, views=views, outliers=outliers)  # fmt: skip
            meta_results[mode] = asdict(result)
            for split, arr in (("calib", calib), ("test", test)):
                preds[f"{split}_score_{mode}"] = meta_scores(meta, arr.images, preds[f"{split}_probs"], pre, device=config.device)
            meta_ckpts[mode] = {"head": meta.config.to_dict(), "state_dict": meta.state_dict()}
        # 3. The run folder, written whole.
        summary = {
            "test_accuracy": float((preds["test_probs"].argmax(1) == test.labels).mean()),
            "split_sizes": splits.sizes(),
            "meta_train_n": int(len(is_error)),
            "meta_train_errors": int(is_error.sum()),
            **({} if views is None else {"shift_view_n": int(len(views.labels)), "shift_view_errors": int(views.is_error.sum())}),
            **({} if outliers is None else {"outlier_n": int(len(outliers.labels)),
                                            "outlier_base_confidence": float(outliers.probs.max(1).mean())}),
            **({} if reuse is None else {"base_from": str(reuse.path)}),
            "meta": meta_results,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "torch": torch.__version__,
            "distributed": dist.to_dict(),
        }
        cfg = {"config": config.to_dict(), "summary": summary, "classes": list(data.classes), "mean": list(mean),
               "std": list(std), "input_shape": [c, h, w]}  # fmt: skip
        def write() -> None:
            with replace_folder(out, owned=owned, writer="metaerr-edge train") as tmp:
                for mode, ckpt in meta_ckpts.items():
                    _save_torch(tmp / f"meta_{mode}.pt", ckpt)
                _save_torch(tmp / "base.pt", {"arch": config.base.arch, "arch_kwargs": dict(config.base.arch_kwargs),
                                              "state_dict": base.state_dict()})
                write_npz(tmp / "splits.npz", splits.to_npz_dict())
                write_npz(tmp / "predictions.npz", preds)
                atomic_write_text(tmp / "config.json", dumps_json(cfg, indent=2))
                write_manifest(tmp, writer="metaerr_edge.pipeline.train_run", metaerr_edge=__version__,
                               run_id=secrets.token_hex(8), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               world_size=dist.world_size)

        distributed.main_first(dist, write)  # the other ranks wait for rank 0's folder (or its error)
        if ckpt is not None:
            shutil.rmtree(ckpt.parent, ignore_errors=True)
        return Run(out)


def fit_meta_mode(meta: MetaModel, config: RunConfig, data: MetaData, base_train: ImageArrays, base: nn.Module,
                  pre: Preprocess, fit: MetaFitConfig, progress: bool = True, mentor_trained: bool = False,
                  views: MetaData | None = None, outliers: MetaData | None = None) -> MetaFitResult:
    """Fit one meta-model the way ``train_run`` does: the run's settings turned into plain data for
    :func:`metaerr_edge.meta.fit_meta` (the one recipe).

    - mentor modes: the mentor trains like a base (the run's schedule, another seed) on
      ``base_train``, the base's own training rows; cross-fit runs give the ``mentor`` head out-of-fold
      mentor probabilities (k mentors, like the base's labels). ``mentor_trained``: ``meta.mentor``
      already holds it.
    - ``target="tcp"`` with held-out labels: the head also learns from the base's own training rows
      (ConfidNet's recipe), never validated on them.
    """
    mentor = None if meta.mentor is None else MentorData(
        base_train.images, base_train.labels, fit_config(config, data.images.shape[1], seed_offset=7),
        oof_folds=config.meta.folds if config.meta.labels == "crossfit" else 0, trained=mentor_trained)
    fit_only = None
    if meta.config.target == "tcp" and config.meta.labels == "heldout":
        fit_only = MetaData(base_train.images, predict_probs(base, base_train.images, pre, device=config.device),
                            base_train.labels)
    return fit_meta(meta, data, pre, fit, mentor=mentor, fit_only=fit_only, views=views, outliers=outliers, progress=progress,
                    desc=f"meta [{meta.config.mode}]")


def _base_source(base_from: str | os.PathLike, config: RunConfig, out: Path) -> Run:
    """The run whose base ``train_run(base_from=...)`` reuses, checked to be the same base recipe."""
    src = Run(base_from)
    if src.path.resolve() == out.resolve():
        raise ConfigError(f"--base-from {src.path} is the output folder itself; write the new run to another folder")
    old = src.config
    same = {"data": old.data == config.data, "base": old.base == config.base, "seed": old.seed == config.seed,
            "error labels": (old.meta.labels, old.meta.folds if old.meta.labels == "crossfit" else 0)
            == (config.meta.labels, config.meta.folds if config.meta.labels == "crossfit" else 0)}  # fmt: skip
    differ = [k for k, ok in same.items() if not ok]
    if differ:
        raise ConfigError(f"--base-from {src.path}: its {', '.join(differ)} settings differ from this run's, so its base is "
                          "not the one this run would train; pass the same data, base, seed and error-label options")
    if "meta_train_probs" not in src.predictions:
        raise ConfigError(f"--base-from {src.path}: the run predates reusable bases (no meta_train_probs in its "
                          "predictions.npz); train it again once, or train this run without --base-from")
    if config.meta.shift_views and config.meta.labels == "crossfit":
        raise ConfigError("--shift-views with cross-fit labels scores each view with the fold model that did not see it, "
                          "and a reused run keeps no fold models; use --error-labels heldout, or train without --base-from")
    return src


def _reuse_mentor(meta: MetaModel, src: Run, config: RunConfig, mode: str) -> bool:
    """Load the mentor of ``src`` into ``meta`` where it is the one this run would train; True if so.
    (Cross-fit ``mentor`` heads need the out-of-fold mentors, which runs do not keep.)"""
    if meta.mentor is None or (mode == "mentor" and config.meta.labels == "crossfit"):
        return False
    same = (src.config.meta.mentor_arch, src.config.meta.mentor_kwargs) == (config.meta.mentor_arch, config.meta.mentor_kwargs)
    for m in src.config.meta.modes if same else ():
        if m in ("mentor", "mentor-features"):
            meta.mentor.load_state_dict(src.meta(m).mentor.state_dict())
            return True
    return False


def _save_torch(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))
