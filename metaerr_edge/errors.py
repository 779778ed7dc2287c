"""The exception tree. Every error says what was expected, what came, and how to fix it."""

from __future__ import annotations


class MetaErrError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MetaErrError, ValueError):
    """A name, option or value the caller passed is not valid (unknown dataset, bad fraction...)."""


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
