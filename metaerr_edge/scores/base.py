"""One interface for every failure score, MetaErr and baselines alike, and the registry listing them.

A scorer has ``fit(ctx)`` (may be a no-op) and ``score(ctx, split) -> float array`` where higher means
"more likely wrong". ``ScoreContext`` gives it what it may look at: the frozen base model, its
probabilities per split, the images and labels of a split. Fitting uses only splits that are not
``test`` (most use ``calib``; TrustScore and ConfidNet use the base's training data).
"""

from __future__ import annotations

import abc

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from metaerr_edge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from metaerr_edge.pipeline import Run


class ScoreContext:
    """Cached access to a run's base model, splits and probabilities for scorers.

    Example:
        >>> ctx = ScoreContext(load_run("runs/digits"))
        >>> ctx.probs("test").shape
    """

    def __init__(self, run: "Run", seed: int = 0) -> None:
        self.run = run
        self.seed = seed
        self._probs: dict[str, np.ndarray] = {}

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
        return self.run.split(name)

    def labels(self, name: str) -> np.ndarray:
        if name in ("calib", "test"):
            return self.run.predictions[f"{name}_labels"]
        return self.split(name)[1]

    def probs(self, name: str) -> np.ndarray:
        """The deployed base model's softmax on a split (cached; calib/test come from the run folder)."""
        if name in ("calib", "test"):
            return self.run.predictions[f"{name}_probs"]
        if name not in self._probs:
            from metaerr_edge.models import predict_probs

            self._probs[name] = predict_probs(self.base, self.split(name)[0], self.preprocess, device=self.run.config.device)
        return self._probs[name]

    def is_error(self, name: str) -> np.ndarray:
        return (self.probs(name).argmax(1) != self.labels(name)).astype(np.int64)

    @cached_property
    def train_split(self) -> str:
        """The split the deployed base model trained on."""
        return "pool" if self.run.config.labels == "crossfit" else "base_train"


class Scorer(abc.ABC):
    """Base class: implement ``score`` (and override ``fit`` if the score has parameters)."""

    name: str = "scorer"
    white_box: bool = False  # True when the score reads the base's hidden features or weights
    params: dict[str, Any]

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, ctx: ScoreContext) -> "Scorer":
        return self

    @abc.abstractmethod
    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        """Failure scores of ``split`` (higher = more likely wrong)."""


_SCORES: dict[str, Callable[..., Scorer]] = {}


def register_score(name: str):
    """Class decorator adding a scorer under ``name`` (the name tables and the CLI use)."""

    def wrap(cls):
        if name in _SCORES:
            raise ConfigError(f"failure score {name!r} is registered twice")
        cls.name = name
        _SCORES[name] = cls
        return cls

    return wrap


def available_scores() -> list[str]:
    _load_builtin()
    return list(_SCORES)


def create_score(name: str, **params: Any) -> Scorer:
    """Build a scorer by name, e.g. ``create_score("msp")`` or ``create_score("metaerr", mode="probs")``."""
    _load_builtin()
    if name not in _SCORES:
        raise ConfigError(f"unknown failure score {name!r}; expected one of {list(_SCORES)}")
    return _SCORES[name](**params)


def _load_builtin() -> None:
    import importlib

    for mod in ("softmax", "metaerr", "temperature", "mc_dropout", "trustscore", "confidnet"):
        try:
            importlib.import_module(f"metaerr_edge.scores.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"metaerr_edge.scores.{mod}":
                raise
