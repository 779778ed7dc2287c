"""What a training run is asked to do: nested frozen configs, each setting written once.

    RunConfig
      data   DataConfig    which dataset, and how it is split
      base   BaseConfig    the base classifier and its training
      meta   MetaConfig    the MetaErr meta-models: modes, error labels, head, training
      seed, device

Every field's default and help text live here, beside the option value type that parses it
(:mod:`metaerr_edge.options`): ``metaerr-edge train`` and ``demo`` derive their options from these
fields (:func:`add_config_options`), with the defaults shown, and a run folder records the config
(``config.json``). What the settings mean for each stage's own config (``FitConfig``, ``HeadConfig``,
``MetaFitConfig``, ``SplitConfig``) is spelled out once, in :mod:`metaerr_edge.pipeline`. A new
setting is one field here and its use there. Torch-free, and importing no stage: the CLI builds its
parser from these classes without the training stack.

Example:
    >>> cfg = RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(modes=("probs", "mentor"), epochs=5))
    >>> cfg.meta.modes[0], cfg.base.lr
    ('probs', 0.002)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from metaerr_edge.errors import ConfigError
from metaerr_edge.options import (EPOCHS, batch_size, device_name, fold_count, name_list, positive_float, positive_int,
                                  seed, unit_interval, view_count)

META_MODES = ("probs", "image", "image+probs", "mentor", "mentor-features")
AUGMENTATIONS = ("auto", "none", "shift", "shift_flip")
#: Mixed precision of training on CUDA (see FitConfig.amp).
AMP_MODES = ("auto", "bf16", "fp16", "off")
#: What a head can be stacked on (``MetaConfig.skip``): free scores of the base's probabilities.
META_SKIPS = ("none", "auto", "msp", "margin", "gini", "entropy")
#: The registered base architectures, for --help only (the registry needs torch; a test keeps them equal).
ARCH_HELP = "small_cnn, resnet9 (fast-CIFAR residual net), resnet18 (CIFAR stem), mobilenet_v3_small"


def option(default: Any, help: str, *, flag: str | None = None, parse: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, cli: bool = True) -> Any:
    """A config field with its command-line option: ``--<name>`` (or ``flag``) parsed by ``parse``.

    ``cli=False``: a setting of the Python API and config.json only (dicts of keyword arguments,
    head shapes). A dict default is copied per instance.
    """
    meta = {"help": help, "flag": flag, "parse": parse, "choices": tuple(choices) if choices else None, "cli": cli}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_int(owner: str, values: Mapping[str, Any], low: int = 1, high: int | None = None) -> None:
    bad = {k: v for k, v in values.items()
           if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high)}
    if bad:
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise ConfigError(f"these {owner} fields must be integers {bound}: {bad}")


def _check_types(owner: str, config: Any, types: Mapping[str, type | tuple[type, ...]]) -> None:
    bad = {k: type(getattr(config, k)).__name__ for k, t in types.items() if not isinstance(getattr(config, k), t)}
    if bad:
        want = {k: t.__name__ if isinstance(t, type) else " or ".join(x.__name__ for x in t) for k, t in types.items() if k in bad}
        raise ConfigError(f"these {owner} fields have the wrong type: {bad} (expected {want})")


def _check_fraction(owner: str, values: Mapping[str, Any]) -> None:
    bad = {k: v for k, v in values.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0}
    if bad:
        raise ConfigError(f"these {owner} fields must lie strictly between 0 and 1: {bad}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how its training pool is split (fractions are of the pool after ``max_pool``)."""

    dataset: str = option("digits", "a registered source (digits, mnist, fashion-mnist, cifar10), imagefolder:PATH or npz:PATH")
    root: str | None = option(None, "data root for torchvision/ImageFolder datasets (e.g. ../shared/datasets)")
    download: bool = option(False, "let torchvision download the dataset (needs a network)")
    meta_fraction: float = option(0.25, "share of the pool held out for the meta-model (held-out error labels)", cli=False)
    calib_fraction: float = option(0.1, "share of the pool kept for calibrating the threshold", cli=False)
    test_fraction: float = option(0.2, "share of the pool used as test split when the dataset has none", cli=False)
    max_pool: int | None = option(None, "cap the training pool at this many images", parse=positive_int)
    max_test: int | None = option(None, "cap the test split at this many images", parse=positive_int)

    def __post_init__(self) -> None:
        _check_types("DataConfig", self, {"dataset": str, "root": (str, type(None)), "download": bool})
        _check_fraction("DataConfig", {k: getattr(self, k) for k in ("meta_fraction", "calib_fraction", "test_fraction")})
        _check_int("DataConfig", {k: getattr(self, k) for k in ("max_pool", "max_test") if getattr(self, k) is not None})


@dataclass(frozen=True)
class BaseConfig:
    """The base classifier: its architecture and how it is trained."""

    arch: str = option("small_cnn", f"base architecture: {ARCH_HELP}")
    arch_kwargs: dict = option({}, "keyword arguments of the architecture, e.g. {'width': 32}", cli=False)
    epochs: int = option(10, "base-model epochs", parse=EPOCHS)
    batch_size: int = option(128, "training batch size", parse=batch_size)
    lr: float = option(2e-3, "learning rate", parse=positive_float)
    augment: str = option("auto", "training augmentation; auto: shift_flip for RGB, shift for gray", choices=AUGMENTATIONS,
                          cli=False)

    def __post_init__(self) -> None:
        _check_types("BaseConfig", self, {"arch": str, "arch_kwargs": dict, "augment": str})
        _check_int("BaseConfig", {"epochs": self.epochs, "batch_size": self.batch_size})
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"augment must be one of {list(AUGMENTATIONS)}, got {self.augment!r}")


@dataclass(frozen=True)
class MetaConfig:
    """The MetaErr meta-models: which input modes, where their error labels come from, head and training."""

    modes: tuple[str, ...] = option(("probs",), f"comma list of {', '.join(META_MODES)}; the first is deployed",
                                    flag="--meta-modes", parse=name_list)
    labels: str = option("crossfit", "where the meta-model's error labels come from: k-fold cross-fitting or a held-out "
                         "split", flag="--error-labels", choices=("crossfit", "heldout"))
    folds: int = option(5, "cross-fitting folds, >= 2", parse=fold_count)
    epochs: int = option(30, "meta-model epochs", flag="--meta-epochs", parse=EPOCHS)
    target: str = option("auto", "meta-model target: the error label (BCE), the base's true-class probability, or "
                         "auto: tcp for mentor-features, error otherwise", flag="--meta-target",
                         choices=("auto", "error", "tcp"))
    mentor_arch: str = option("small_cnn", f"mentor network of the mentor modes: {ARCH_HELP}")
    mentor_kwargs: dict = option({}, "keyword arguments of the mentor architecture", cli=False)
    hidden: int = option(64, "width of the head's hidden layers", cli=False)
    image_width: int = option(16, "width of the image encoder of the image modes", cli=False)
    skip: str = option("auto", "stack the head on a free score: its logit = logit(score) + MLP, the untrained head "
                       "being the score (msp, margin, gini, entropy; auto: the best on the head's training rows)",
                       flag="--meta-skip", choices=META_SKIPS)
    shift_views: int = option(0, "corrupted views of each meta-train image (validation corruption families, random "
                              "severity), labelled by calling the base: the meta-model also learns failure under "
                              "shift; 0 = clean images only", parse=view_count)
    outliers: float = option(0.0, "synthetic outliers (training outlier families: pixel- and tile-shuffled meta-train "
                             "images) per meta-train image, each labelled a failure: the meta-model also learns that "
                             "an image of no class is one; 0 = none, at most 1", parse=unit_interval)

    def __post_init__(self) -> None:
        _check_types("MetaConfig", self, {"labels": str, "target": str, "mentor_arch": str, "mentor_kwargs": dict, "skip": str})
        if self.skip not in META_SKIPS:
            raise ConfigError(f"meta skip must be one of {list(META_SKIPS)}, got {self.skip!r}")
        # "probs,mentor" (as on the command line) or a sequence; a bare string is not split into letters
        modes = tuple(m.strip() for m in self.modes.split(",")) if isinstance(self.modes, str) else tuple(self.modes)
        object.__setattr__(self, "modes", modes)  # a list from JSON or the API is kept as a tuple
        bad = [m for m in modes if m not in META_MODES]
        if bad or not modes:
            raise ConfigError(f"meta modes {list(modes)}: each must be one of {list(META_MODES)}")
        if len(set(modes)) != len(modes):
            raise ConfigError(f"meta modes {list(modes)} name a mode more than once")
        if self.labels not in ("crossfit", "heldout"):
            raise ConfigError(f"labels must be 'crossfit' or 'heldout', got {self.labels!r}")
        if self.target not in ("auto", "error", "tcp"):
            raise ConfigError(f"meta target must be 'auto', 'error' or 'tcp', got {self.target!r}")
        _check_int("MetaConfig", {"folds": self.folds}, low=2)
        _check_int("MetaConfig", {"epochs": self.epochs, "hidden": self.hidden, "image_width": self.image_width})
        _check_int("MetaConfig", {"shift_views": self.shift_views}, low=0, high=16)
        if isinstance(self.outliers, bool) or not isinstance(self.outliers, (int, float)) or not 0.0 <= self.outliers <= 1.0:
            raise ConfigError(f"MetaConfig.outliers must be a number in [0, 1] (outliers per meta-train image), got {self.outliers!r}")
        object.__setattr__(self, "outliers", float(self.outliers))

    def target_of(self, mode: str) -> str:
        """``target="auto"``: "tcp" for mentor-features (its best recipe in benchmarks/README.md), else "error"."""
        return self.target if self.target != "auto" else ("tcp" if mode == "mentor-features" else "error")


SECTIONS: dict[str, type] = {"data": DataConfig, "base": BaseConfig, "meta": MetaConfig}


@dataclass(frozen=True)
class RunConfig:
    """Everything ``metaerr-edge train`` needs; every field has a default that works on digits."""

    data: DataConfig = field(default_factory=DataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    seed: int = option(0, "seed of splits, initial weights and data order", parse=seed)
    device: str = option("cpu", "cpu, cuda, cuda:N or auto", parse=device_name)
    amp: str = option("auto", "mixed precision of base and mentor training on CUDA: bf16, fp16 (with loss scaling), off, "
                      "or auto: bf16 where the GPU supports it; CPU training is always float32", choices=AMP_MODES)

    def __new__(cls, *args: Any, **kwargs: Any) -> "RunConfig":
        flat = sorted(k for k in kwargs if k in _FLAT)
        if flat:  # the flat keywords of earlier versions: say where each went, not a bare TypeError
            where = ", ".join(f"{k} -> {_FLAT[k][0]}={SECTIONS[_FLAT[k][0]].__name__}({_FLAT[k][1]}=...)" for k in flat)
            raise ConfigError(f"RunConfig takes its settings in sections now: {where} "
                              "(or RunConfig.from_dict with the flat keys of an old config.json)")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"RunConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        _check_int("RunConfig", {"seed": self.seed}, low=0, high=2**31 - 1)
        if self.amp not in AMP_MODES:
            raise ConfigError(f"RunConfig.amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        if not isinstance(self.device, str):
            raise ConfigError(f"RunConfig.device must be a name (cpu, cuda, cuda:N, auto), got {self.device!r}")
        # Whether the architectures are registered and the device exists is checked where they are
        # used (pipeline.check_config, first thing in train_run): a run trained on a GPU still opens here.

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "RunConfig":
        """A config from :meth:`to_dict` (or from a run folder written before configs were nested)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"a RunConfig is read from a JSON object, got {type(raw).__name__}")
        raw = _unflatten(dict(raw)) if not any(isinstance(raw.get(s), Mapping) for s in SECTIONS) else dict(raw)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown RunConfig field(s) {unknown}; known: {sorted(known)}")
        for name, section in SECTIONS.items():
            if name in raw:
                raw[name] = _section(section, raw[name], f"RunConfig.{name}")
        return cls(**raw)


def _section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown {where} field(s) {unknown}; known: {sorted(known)}")
    return cls(**{**_LEGACY_DEFAULTS.get(cls.__name__, {}), **raw})


#: What a field meant in a config written before the field existed, where that differs from today's
#: default (a run trained before stacked heads had none, whatever the default is now).
_LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"MetaConfig": {"skip": "none"}}


#: Where each key of a flat (pre-nesting) config.json went.
_FLAT = {"dataset": ("data", "dataset"), "root": ("data", "root"), "download": ("data", "download"),
         "meta_fraction": ("data", "meta_fraction"), "calib_fraction": ("data", "calib_fraction"),
         "test_fraction": ("data", "test_fraction"), "max_pool": ("data", "max_pool"), "max_test": ("data", "max_test"),
         "arch": ("base", "arch"), "arch_kwargs": ("base", "arch_kwargs"), "epochs": ("base", "epochs"),
         "batch_size": ("base", "batch_size"), "lr": ("base", "lr"), "augment": ("base", "augment"),
         "meta_modes": ("meta", "modes"), "labels": ("meta", "labels"), "folds": ("meta", "folds"),
         "meta_epochs": ("meta", "epochs"), "meta_target": ("meta", "target"), "mentor_arch": ("meta", "mentor_arch"),
         "mentor_kwargs": ("meta", "mentor_kwargs"), "meta_hidden": ("meta", "hidden"),
         "meta_image_width": ("meta", "image_width")}  # fmt: skip


def _unflatten(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FLAT:
            section, name = _FLAT[key]
            out.setdefault(section, {})[name] = value
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- command-line options


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _cli_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """``(path, field)`` of every command-line field of ``cls``, sections included ("base.epochs")."""
    out = []
    for f in fields(cls):
        if f.name in SECTIONS and cls is RunConfig:
            out += _cli_fields(SECTIONS[f.name], f"{prefix}{f.name}.")
        elif f.metadata.get("cli"):
            out.append((prefix + f.name, f))
    return out


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


#: Named MetaErr recipes, by what they cost and buy: field path -> value, applied by ``--preset``
#: (an option given explicitly wins). Chosen from the benchmark's calibration numbers (validation
#: corruption families on the calibration split; benchmarks/README.md, attempts log).
PRESETS: dict[str, dict[str, Any]] = {
    "cheap": {"meta.modes": ("probs",), "meta.skip": "auto", "meta.shift_views": 0},
    "robust": {"meta.modes": ("mentor-features",), "meta.skip": "none", "meta.shift_views": 2},
}
PRESET_HELP = {
    "cheap": "the probabilities head stacked on the best free score (what train does by default): never below "
             "that score on meta-validation, a few graph nodes (+10%% latency at batch 1 on a small CNN, ~0 on resnet9)",
    "robust": "mentor-features (a small mentor network's features and posterior) trained on clean and two "
              "corrupted views per image: the best failure score under the benchmark's test corruptions (never "
              "below chance there), though below MSP out of distribution, for the mentor's latency (+7-9%% on "
              "resnet9, 2.1x on a small CNN)",
}


def _remember(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, "_given", set(getattr(namespace, "_given", ())) | {dest})


class _Given(argparse._StoreAction):
    """Store the value and remember that the option was given (a ``--preset`` leaves it alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _remember(namespace, self.dest)


class _GivenFlag(argparse._StoreTrueAction):
    """``store_true`` that remembers it was given (as :class:`_Given`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _remember(namespace, self.dest)


def add_preset_option(parser: argparse.ArgumentParser) -> None:
    """``--preset NAME``: a named recipe of :data:`PRESETS`; options given explicitly win over it."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named MetaErr recipe; options given explicitly override it. " +
                             "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))  # fmt: skip


def add_config_options(parser: argparse.ArgumentParser, only: Sequence[str] | None = None,
                       defaults: Mapping[str, Any] | None = None, helps: Mapping[str, str] | None = None) -> None:
    """Add one option per command-line field of :class:`RunConfig`, help and default from the field.

    ``only``: field paths to add (default: all), e.g. ``("base.epochs", "seed")``. ``defaults`` and
    ``helps`` override a field's default or help for this command (``demo`` trains every mode).
    The option's ``dest`` is its flag without dashes (``--meta-epochs`` -> ``meta_epochs``).
    """
    chosen = [(p, f) for p, f in _cli_fields(RunConfig) if only is None or p in only]
    missing = sorted(set(only or ()) - {p for p, _ in chosen})
    if missing:
        raise ValueError(f"not command-line fields of RunConfig: {missing}")
    for path, f in chosen:
        default = (defaults or {}).get(path, _default(f))
        help_text = (helps or {}).get(path, f.metadata["help"])
        if f.type in ("bool", bool):
            parser.add_argument(_flag(f), action=_GivenFlag, help=help_text)
            continue
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(_flag(f), action=_Given, type=f.metadata["parse"], choices=f.metadata["choices"], default=default,
                            help=f"{help_text} (default: {shown})" if default is not None else help_text)


def config_from_args(args: argparse.Namespace, **overrides: Any) -> RunConfig:
    """The :class:`RunConfig` the parsed options ask for (fields without an option keep their default;
    with ``--preset``, its fields take the preset's value unless their option was given)."""
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    given = getattr(args, "_given", set())
    for path, f in _cli_fields(RunConfig):
        dest = _flag(f).lstrip("-").replace("-", "_")
        if not hasattr(args, dest):
            continue
        section, _, name = path.rpartition(".")
        value = preset[path] if path in preset and dest not in given else getattr(args, dest)
        (values[section] if section else top)[name] = value
    sections = {name: SECTIONS[name](**vals) for name, vals in values.items()}
    return RunConfig(**sections, **top, **overrides)
