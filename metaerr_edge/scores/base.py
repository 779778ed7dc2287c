"""One interface for every failure score, MetaErr and baselines alike, and the registry listing them.

A scorer has ``fit(ctx)`` (may be a no-op) and ``score(ctx, split) -> float array`` where higher means
"more likely wrong". ``ScoreContext`` gives it what it may look at: the frozen base model, its
probabilities per split, the images and labels of a split. Fitting uses only splits that are not
``test`` (most use ``calib``; TrustScore and ConfidNet use the base's training data).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from metaerr_edge.data.labels import error_labels
from metaerr_edge.data.splits import SPLIT_NAMES
from metaerr_edge.errors import ConfigError, DataError, UnknownParameter
from metaerr_edge.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from metaerr_edge.pipeline import Run


class ScoreContext:
    """Cached access to a run's base model, splits and probabilities for scorers.

    Example:
        >>> ctx = ScoreContext(load_run("runs/digits"))
        >>> ctx.probs("test").shape
    """

    def __init__(self, run: "Run", seed: int = 0, meta_runs: Mapping[str, "Run"] | None = None) -> None:
        """``meta_runs``: other runs on the same base and splits (``train_run(base_from=run)``) whose
        meta-models are scored here too, as ``metaerr[MODE@NAME]``; checked to share the base."""
        self.run = run
        self.seed = seed
        self.meta_runs = dict(meta_runs or {})
        for name, other in self.meta_runs.items():
            _check_same_base(run, other, name)
        self._probs: dict[str, np.ndarray] = {}
        self._extra: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._fitting: str | None = None

    def add_split(self, name: str, images: np.ndarray, labels: np.ndarray) -> None:
        """Score another set of images too (a corrupted or OOD copy of the test split): scorers see it
        as split ``name``, the base's probabilities on it are computed once. Fitting never reads it
        (:meth:`fit`). A label of -1 (an image of no class: OOD) is always an error of the base."""
        if name in (*SPLIT_NAMES, "pool") or name in self._extra:
            raise ConfigError(f"split {name!r} exists already (a run split or an added one); give the added set "
                              "another name")
        if len(images) != len(labels):
            raise DataError(f"split {name!r}: {len(images)} images but {len(labels)} labels")
        labels = np.asarray(labels, np.int64)
        if labels.size and (labels.min() < -1 or labels.max() >= self.num_classes):
            raise DataError(f"split {name!r}: labels must be class indices 0..{self.num_classes - 1} or -1 (no class)")
        self._extra[name] = (images, labels)

    def fit(self, scorer: "Scorer") -> "Scorer":
        """``scorer.fit(self)``, refusing any read of the test split or an added split meanwhile:
        what is reported is never what is fitted on (the project's first rule, enforced here)."""
        self._fitting = scorer.name
        try:
            return scorer.fit(self)
        finally:
            self._fitting = None

    def _check_readable(self, name: str) -> None:
        if self._fitting is not None and (name == "test" or name in self._extra):
            raise ConfigError(f"failure score {self._fitting!r} read split {name!r} while fitting; a score fits on the "
                              "calibration and training splits only (what is reported is never fitted on)")

    def meta_run(self, mode: str | None) -> tuple["Run", str]:
        """``(run, mode)`` of a metaerr ``mode`` spec: ``"probs"`` (this run), ``"probs@NAME"``
        (``meta_runs[NAME]``) or None (this run's deployed mode)."""
        if mode is None:
            return self.run, self.run.config.meta.modes[0]
        mode, _, name = str(mode).partition("@")
        if not name:
            return self.run, mode
        if name not in self.meta_runs:
            raise ConfigError(f"metaerr[{mode}@{name}]: no meta run named {name!r}; this context has "
                              f"{sorted(self.meta_runs) or 'none'} (pass meta_runs={{'{name}': load_run(...)}})")
        return self.meta_runs[name], mode

    @property
    def base(self):
        return self.run.base

    @property
    def preprocess(self):
        return self.run.preprocess

    @property
    def num_classes(self) -> int:
        return len(self.run.classes)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self._check_readable(name)
        return self._extra[name] if name in self._extra else self.run.split(name)

    def labels(self, name: str) -> np.ndarray:
        self._check_readable(name)
        if name in ("calib", "test"):
            return self.run.predictions[f"{name}_labels"]
        return self.split(name)[1]

    def probs(self, name: str) -> np.ndarray:
        """The deployed base model's softmax on a split (cached; calib/test come from the run folder)."""
        self._check_readable(name)
        if name in ("calib", "test"):
            return self.run.predictions[f"{name}_probs"]
        if name not in self._probs:
            from metaerr_edge.models import predict_probs

            self._probs[name] = predict_probs(self.base, self.split(name)[0], self.preprocess, device=self.run.config.device)
        return self._probs[name]

    def is_error(self, name: str) -> np.ndarray:
        return error_labels(self.probs(name), self.labels(name))

    @cached_property
    def train_split(self) -> str:
        """The split the deployed base model trained on."""
        return "pool" if self.run.config.meta.labels == "crossfit" else "base_train"


def _check_same_base(run: "Run", other: "Run", name: str) -> None:
    same = other.config.data == run.config.data and other.splits_sha256 == run.splits_sha256
    if not (same and other.base_sha256 == run.base_sha256):
        raise ConfigError(f"meta run {name!r} ({other.path}) has another base or other data than {run.path}; "
                          "only a run trained with base_from= this run (the same base and splits) can be compared here")


class Scorer(abc.ABC):
    """Base class: implement ``score`` (and override ``fit`` if the score has parameters).

    ``PARAMS`` names the options a scorer takes, with their defaults; ``self.params`` holds them
    with the caller's values filled in, and any other option is an :class:`UnknownParameter`.
    The class's signature is keyword-only ``PARAMS`` (what :func:`create_score` checks against).

    Example:
        >>> @register_score("top2")
        ... class Top2(Scorer):
        ...     PARAMS = {"k": 2}
        ...     def score(self, ctx, split): ...
        >>> Top2(k=3).params
        {'k': 3}
    """

    name: str = "scorer"
    white_box: bool = False  # True when the score reads the base's hidden features or weights
    PARAMS: ClassVar[Mapping[str, Any]] = {}
    params: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in cls.PARAMS.items()])

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise UnknownParameter("failure score", self.name, unknown, self.PARAMS)
        self.params = {**self.PARAMS, **params}

    def fit(self, ctx: ScoreContext) -> "Scorer":
        return self

    @abc.abstractmethod
    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        """Failure scores of ``split`` (higher = more likely wrong)."""


def _load_builtin() -> None:
    import importlib

    for mod in ("softmax", "metaerr", "temperature", "free", "mc_dropout", "trustscore", "confidnet"):
        try:
            importlib.import_module(f"metaerr_edge.scores.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"metaerr_edge.scores.{mod}":
                raise


#: The failure scores; the built-in modules are imported on the first lookup.
SCORES: Registry[type[Scorer]] = Registry("failure score", loader=_load_builtin, name_attr="name")
register_score = SCORES.register


def available_scores() -> list[str]:
    """Every registered failure score, in registration order (built-ins first)."""
    return list(SCORES.available())


def create_score(name: str, **params: Any) -> Scorer:
    """Build a scorer by name; unknown names and options raise a :class:`ConfigError` listing the choices.

    Example:
        >>> create_score("metaerr", mode="probs").params
        {'mode': 'probs'}
    """
    return SCORES.create(name, **params)
