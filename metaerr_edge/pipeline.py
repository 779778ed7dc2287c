"""The training job: base + MetaErr into a run folder, and loading it back.

A run folder holds everything later stages need::

    run/config.json          RunConfig (what was asked) + summary (what came out)
    run/splits.npz           the seeded split indices
    run/base.pt              base architecture + weights
    run/meta_<mode>.pt       one meta-model per trained input mode (the first is deployed)
    run/predictions.npz      base probabilities and meta scores on calib and test, labels
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
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaerr_edge.console import warn
from metaerr_edge.data import DatasetArrays, SplitConfig, Splits, load_dataset, make_splits
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge._fileio import atomic_write_bytes, atomic_write_text, dumps_json
from metaerr_edge.fuse.contract import Contract, InputSpec, ThresholdSpec
from metaerr_edge.fuse.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta import (
    META_MODES,
    HeadConfig,
    MetaFitConfig,
    MetaModel,
    crossfit_probs,
    error_labels,
    fit_meta,
    mentor_outputs,
    meta_scores,
)
from metaerr_edge.models import FitConfig, create_base, fit_classifier, predict_probs


#: The files train_run writes (the manifest lists them), and what it owns besides: the manifest and
#: what evaluate and tradeoff add to a run folder (a retraining drops them with the old run).
RUN_FILES = re.compile(r"config\.json|splits\.npz|base\.pt|predictions\.npz|meta_.+\.pt")
RUN_EXTRAS = re.compile(r"manifest\.json|metrics\.json|metrics\.md|risk_coverage\.png|tradeoff")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``metaerr-edge train`` needs; every field has a default that works on digits."""

    dataset: str = "digits"
    root: str | None = None
    download: bool = False
    arch: str = "small_cnn"
    arch_kwargs: dict = field(default_factory=dict)
    meta_modes: tuple[str, ...] = ("probs",)
    labels: str = "crossfit"  # "crossfit" (k-fold out-of-fold) or "heldout"
    folds: int = 5
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    augment: str = "auto"
    meta_epochs: int = 30
    meta_hidden: int = 64
    meta_image_width: int = 16
    mentor_arch: str = "small_cnn"
    mentor_kwargs: dict = field(default_factory=dict)
    meta_target: str = "auto"  # "error" (BCE on error labels), "tcp" (regress the base's true-class prob), "auto"
    meta_fraction: float = 0.25
    calib_fraction: float = 0.1
    test_fraction: float = 0.2
    max_pool: int | None = None
    max_test: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.labels not in ("crossfit", "heldout"):
            raise ConfigError(f"labels must be 'crossfit' or 'heldout', got {self.labels!r}")
        if self.meta_target not in ("auto", "error", "tcp"):
            raise ConfigError(f"meta_target must be 'auto', 'error' or 'tcp', got {self.meta_target!r}")
        bad = [m for m in self.meta_modes if m not in META_MODES]
        if bad or not self.meta_modes:
            raise ConfigError(f"meta_modes {list(self.meta_modes)}: each must be one of {list(META_MODES)}")
        if len(set(self.meta_modes)) != len(self.meta_modes):
            raise ConfigError(f"meta_modes {list(self.meta_modes)} name a mode more than once")
        from metaerr_edge.models import available_bases
        from metaerr_edge.models.training import resolve_device

        for name in (self.arch, self.mentor_arch):
            if name not in available_bases():
                raise ConfigError(f"unknown base architecture {name!r}; expected one of {available_bases()}")
        positive = {"epochs": self.epochs, "meta_epochs": self.meta_epochs, "batch_size": self.batch_size,
                    "meta_hidden": self.meta_hidden, "meta_image_width": self.meta_image_width}
        for key in ("max_pool", "max_test"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        bad = {k: v for k, v in positive.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ConfigError(f"these RunConfig fields must be integers >= 1: {bad}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"folds must be an integer >= 2 (cross-fitting needs two folds), got {self.folds!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 2**31 - 1:
            raise ConfigError(f"seed must be an integer from 0 to 2**31 - 1, got {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        resolve_device(self.device)  # no GPU for --device cuda: one clear error before any data is loaded

    @property
    def split_config(self) -> SplitConfig:
        return SplitConfig(self.meta_fraction, self.calib_fraction, self.test_fraction, self.max_pool, self.max_test, self.seed)

    def fit_config(self, channels: int, seed_offset: int = 0) -> FitConfig:
        augment = self.augment if self.augment != "auto" else ("shift_flip" if channels == 3 else "shift")
        return FitConfig(self.epochs, self.batch_size, self.lr, augment=augment, seed=self.seed + seed_offset, device=self.device)

    def head_config(self, mode: str) -> HeadConfig:
        """``meta_target="auto"``: "tcp" for mentor-features (its best recipe in benchmarks/README.md), else "error"."""
        target = self.meta_target if self.meta_target != "auto" else ("tcp" if mode == "mentor-features" else "error")
        return HeadConfig(mode, self.meta_hidden, self.meta_image_width, mentor_arch=self.mentor_arch,
                          mentor_kwargs=dict(self.mentor_kwargs), target=target)  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown RunConfig field(s) {unknown}; known: {sorted(known)}")
        raw = dict(raw)
        if "meta_modes" in raw:
            raw["meta_modes"] = tuple(raw["meta_modes"])
        return cls(**raw)


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
        return load_dataset(self.config.dataset, self.config.root, self.config.download)

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
        mode = mode or self.config.meta_modes[0]
        if mode not in self.config.meta_modes:
            raise ConfigError(f"this run trained meta modes {list(self.config.meta_modes)}, not {mode!r}")
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
        splits = hashlib.sha256()
        for name, array in sorted(self.splits.to_npz_dict().items()):
            splits.update(name.encode() + b":" + np.ascontiguousarray(array).tobytes())
        weights = hashlib.sha256()  # of the tensors, not the files: torch.save's zip names vary between saves
        for name, module in (("base.pt", self.base), (f"meta_{mode}.pt", self.meta(mode))):
            for key, tensor in sorted(module.state_dict().items()):
                weights.update(f"{name}:{key}:{tuple(tensor.shape)}:{tensor.dtype}:".encode())
                weights.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"dataset": self.config.dataset, "meta_mode": mode, "splits_sha256": splits.hexdigest(),
                "weights_sha256": weights.hexdigest()}

    def contract(self, layout: str = "NCHW", threshold: ThresholdSpec | None = None, mode: str | None = None) -> Contract:
        mode = self.mode(mode)
        return Contract(
            input=self.input_spec(layout), classes=self.classes, threshold=threshold or self.default_threshold(mode),
            base={"arch": self.config.arch, "dataset": self.config.dataset, "accuracy": self.summary.get("test_accuracy")},
            meta={"mode": mode, "labels": self.config.labels, "folds": self.config.folds, "run": self.identity(mode)},
            metrics=self.test_metrics(mode),
        )  # fmt: skip


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder written by :func:`train_run`."""
    return Run(path)


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


def train_run(config: RunConfig, out_dir: str | os.PathLike, progress: bool = True) -> Run:
    """Train the base model and every requested MetaErr mode; write the run folder.

    The folder is written whole: its files go into a hidden folder beside ``out_dir``, with
    ``manifest.json`` last, which then replaces ``out_dir`` in one step
    (:func:`metaerr_edge._fileio.replace_folder`). A failure or ``kill -9`` at any point leaves the
    previous run as it was, never a mix. The lock of ``out_dir`` is taken first: a second training
    into the same folder fails at once with a :class:`ConfigError`, before any work. Retraining
    drops what ``evaluate`` and ``tradeoff`` wrote from the old run (metrics.*, risk_coverage.png,
    tradeoff/); a folder holding anything else (an exported model, notes) is refused, not deleted.

    Example:
        >>> run = train_run(RunConfig(dataset="digits", epochs=5), "runs/digits")
    """
    import secrets

    from metaerr_edge import __version__
    from metaerr_edge._fileio import check_replaceable, path_lock, replace_folder, write_manifest

    t0 = time.perf_counter()
    out = Path(out_dir)
    def owned(name: str) -> bool:
        return RUN_FILES.fullmatch(name) is not None or RUN_EXTRAS.fullmatch(name) is not None

    with path_lock(out):
        check_replaceable(out, owned, "metaerr-edge train")
        data = load_dataset(config.dataset, config.root, config.download)
        splits = make_splits(data, config.split_config)
        mean, std = data.channel_stats()
        pre = Preprocess(mean, std)
        k, (h, w), c = len(data.classes), data.image_size, data.channels
        fit = config.fit_config(c)

        def new_base() -> nn.Module:
            return create_base(config.arch, c, k, (h, w), seed=config.seed, **config.arch_kwargs)

        check_architecture_fits(config.arch, c, k, (h, w), config.arch_kwargs)
        if any(m in ("mentor", "mentor-features") for m in config.meta_modes):
            check_architecture_fits(config.mentor_arch, c, k, (h, w), config.mentor_kwargs, role="mentor")
        pool = splits.arrays(data, "pool")
        calib, test = splits.arrays(data, "calib"), splits.arrays(data, "test")
        # 1. Error labels on data the base did not train on.
        if config.labels == "crossfit":
            meta_x, meta_y = pool.images, pool.labels
            meta_probs, _ = crossfit_probs(new_base, meta_x, meta_y, pre, fit, config.folds, progress, "base fold")
            base = fit_classifier(new_base(), pool.images, pool.labels, pre, fit, progress, "base (all)")
            mentor_train = pool
        else:
            base_tr, meta_tr = splits.arrays(data, "base_train"), splits.arrays(data, "meta_train")
            base = fit_classifier(new_base(), base_tr.images, base_tr.labels, pre, fit, progress, "base")
            meta_x, meta_y = meta_tr.images, meta_tr.labels
            meta_probs = predict_probs(base, meta_x, pre, device=config.device)
            mentor_train = base_tr
        is_error = error_labels(meta_probs, meta_y)
        preds: dict[str, np.ndarray] = {
            "calib_probs": predict_probs(base, calib.images, pre, device=config.device),
            "calib_labels": calib.labels,
            "test_probs": predict_probs(base, test.images, pre, device=config.device),
            "test_labels": test.labels,
            "meta_train_is_error": is_error,
        }
        # 2. One meta-model per input mode.
        meta_results, meta_ckpts = {}, {}
        for i, mode in enumerate(config.meta_modes):
            torch.manual_seed(config.seed + 100 + i)  # the head's initial weights depend on the seed only
            meta = MetaModel(config.head_config(mode), c, k, (h, w))
            result = fit_meta_mode(meta, config, MetaData(meta_x, meta_y, meta_probs, mentor_train, base), pre,
                                   MetaFitConfig(epochs=config.meta_epochs, seed=config.seed + i, device=config.device), progress)  # fmt: skip
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
            "meta": meta_results,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "torch": torch.__version__,
        }
        cfg = {"config": asdict(config), "summary": summary, "classes": list(data.classes), "mean": list(mean),
               "std": list(std), "input_shape": [c, h, w]}  # fmt: skip
        with replace_folder(out, owned=owned, writer="metaerr-edge train") as tmp:
            for mode, ckpt in meta_ckpts.items():
                _save_torch(tmp / f"meta_{mode}.pt", ckpt)
            _save_torch(tmp / "base.pt", {"arch": config.arch, "arch_kwargs": dict(config.arch_kwargs),
                                          "state_dict": base.state_dict()})
            atomic_write_bytes(tmp / "splits.npz", lambda t: _savez(t, splits.to_npz_dict()))
            atomic_write_bytes(tmp / "predictions.npz", lambda t: _savez(t, preds))
            atomic_write_text(tmp / "config.json", dumps_json(cfg, indent=2))
            write_manifest(tmp, writer="metaerr_edge.pipeline.train_run", metaerr_edge=__version__,
                           run_id=secrets.token_hex(8), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return Run(out)


@dataclass(frozen=True)
class MetaData:
    """What a meta-model learns from: rows the base did not train on (images, labels, the base's probs
    there: held-out or out-of-fold), the base's training rows (for a mentor) and the deployed base."""

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    base_train: Any  # ImageArrays
    base: nn.Module


def fit_meta_mode(meta: MetaModel, config: RunConfig, data: MetaData, pre: Preprocess, fit: MetaFitConfig,
                  progress: bool = True, mentor_trained: bool = False):
    """Fit one meta-model (and its mentor, unless ``mentor_trained``) the way ``train_run`` does.

    - mentor modes: the mentor trains like a base on ``data.base_train``; cross-fit runs give the
      ``mentor`` mode out-of-fold mentor probabilities (k mentors, like the base). ``mentor-features``
      reads features, which differ between networks, so its head sees the final mentor's outputs.
    - ``target="tcp"``: the head regresses the base's true-class probability; with held-out labels it
      also learns from the base's own training rows (ConfidNet's recipe), never validated on them.
    """
    c, k = data.images.shape[1], meta.num_classes
    is_error = error_labels(data.probs, data.labels)
    mentor_out = None
    if meta.mentor is not None:
        mfit = config.fit_config(c, seed_offset=7)
        if not mentor_trained:
            if config.labels == "crossfit" and meta.config.mode == "mentor":
                new_mentor = lambda: create_base(config.mentor_arch, c, k, data.images.shape[2:], **config.mentor_kwargs)  # noqa: E731
                mentor_out, _ = crossfit_probs(new_mentor, data.images, data.labels, pre, mfit, config.folds, progress, "mentor fold")
            fit_classifier(meta.mentor, data.base_train.images, data.base_train.labels, pre, mfit, progress, "mentor")
        meta.mentor.requires_grad_(False)
        if meta.feature_dim:
            from metaerr_edge.models.training import to_float

            meta.set_feature_stats(pre(to_float(data.base_train.images)))
        if mentor_out is None:
            mentor_out = mentor_outputs(meta, data.images, pre, device=config.device)
    x, p, err, extra = data.images, data.probs, is_error, {}
    if meta.config.target == "tcp":
        extra["tcp"] = data.probs[np.arange(len(data.labels)), data.labels]
        if config.labels == "heldout":
            bt = data.base_train
            bt_probs = predict_probs(data.base, bt.images, pre, device=config.device)
            x, p = np.concatenate([x, bt.images]), np.concatenate([p, bt_probs])
            err = np.concatenate([err, error_labels(bt_probs, bt.labels)])
            extra["tcp"] = np.concatenate([extra["tcp"], bt_probs[np.arange(len(bt.labels)), bt.labels]])
            extra["train_only"] = np.arange(len(err)) >= len(data.images)
            if mentor_out is not None:
                mentor_out = np.concatenate([mentor_out, mentor_outputs(meta, bt.images, pre, device=config.device)])
    return fit_meta(meta, x, p, err, pre, fit, mentor_out, progress, f"meta [{meta.config.mode}]", **extra)


def _save_torch(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))


def _savez(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to the temp name
        np.savez(fh, **arrays)
