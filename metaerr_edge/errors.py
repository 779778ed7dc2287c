"""The exception tree. Every error says what was expected, what came, and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class MetaErrError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MetaErrError, ValueError):
    """A name, option or value the caller passed is not valid (unknown dataset, bad fraction...)."""


class UnknownName(ConfigError):
    """A name that is not in a registry (dataset, base, failure score, selector, backend).

    The message lists the choices; ``kind``, ``name`` and ``choices`` carry them for code.

    Example:
        >>> str(UnknownName("failure score", "x", ["msp", "entropy"]))
        "unknown failure score 'x'; expected one of ['msp', 'entropy']"
    """

    def __init__(self, kind: str, name: object, choices: Sequence[str]) -> None:
        self.kind, self.name, self.choices = kind, name, tuple(choices)
        super().__init__(f"unknown {kind} {name!r}; expected one of {list(self.choices)}")

    def __reduce__(self):  # pickle by the fields, not the formatted message
        return type(self), (self.kind, self.name, self.choices)


class UnknownParameter(ConfigError):
    """A registered entry was given options it does not take; the message lists those it does.

    Example:
        >>> str(UnknownParameter("selector", "confidence", ["bogus"], ["threshold"]))
        "selector 'confidence' takes options ['threshold'], got unknown ['bogus']"
    """

    def __init__(self, kind: str, name: str, unknown: Iterable[str], accepted: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.unknown, self.accepted = tuple(sorted(unknown)), tuple(sorted(accepted))
        takes = f"takes options {list(self.accepted)}" if self.accepted else "takes no options"
        super().__init__(f"{kind} {name!r} {takes}, got unknown {list(self.unknown)}")

    def __reduce__(self):
        return type(self), (self.kind, self.name, self.unknown, self.accepted)


class DataError(MetaErrError, ValueError):
    """A dataset root, file layout or split is missing, malformed or empty."""


class InputError(MetaErrError, ValueError):
    """Images handed to a model or session do not match its input contract."""


class ContractError(MetaErrError, ValueError):
    """A model file is corrupt, truncated, or carries no (or an invalid) metaerr-edge contract."""


class ParityError(MetaErrError):
    """Two runtimes disagree on the same inputs beyond the stated tolerance."""


class BackendUnavailable(MetaErrError, RuntimeError):
    """A runtime backend cannot run here (library missing, no GPU, provider not active)."""


class MissingDependency(MetaErrError, ImportError):
    """An optional library is not installed; the message names the pip extra that brings it."""


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise :class:`MissingDependency` with the install hint.

    Example:
        >>> ort = require("onnxruntime", "metaerr-edge", "running the fused graph")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only where the module is absent
        hint = f"pip install {extra!r}"
        raise MissingDependency(
            f"{purpose} needs the Python module '{module}', which is not importable here "
            f"({exc}). Install it with: {hint}"
        ) from exc
