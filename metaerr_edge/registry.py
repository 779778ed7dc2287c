"""One registry shape for every pluggable list in the package.

Data sources, base models, failure scores, pseudo-label selectors and runtime backends are each a
:class:`Registry`: entries are added with a decorator, listed with :meth:`Registry.available`, and
built by name with :meth:`Registry.create`, which checks the options against the factory's signature
(a dataclass's fields are its ``__init__`` parameters). An unknown name raises
:class:`~metaerr_edge.errors.UnknownName` listing the choices; an unknown option raises
:class:`~metaerr_edge.errors.UnknownParameter` listing the options the entry takes. Both are
:class:`~metaerr_edge.errors.ConfigError`, so the CLI shows them as one line.

This module imports the standard library only: the torch-free runtime package uses it.

Example:
    >>> SCORES: Registry[type[Scorer]] = Registry("failure score")
    >>> @SCORES.register("msp")
    ... class MSP(Scorer): ...
    >>> SCORES.available()
    ('msp',)
    >>> SCORES.create("msp", foo=1)
    Traceback (most recent call last):
    UnknownParameter: failure score 'msp' takes no options, got unknown ['foo']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from metaerr_edge.errors import ConfigError, UnknownName, UnknownParameter

T = TypeVar("T")
V = TypeVar("V")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered row: its name, the registered object and the metadata given to ``register``."""

    name: str
    value: T
    meta: Mapping[str, Any]


class Registry(Generic[T]):
    """A named list of factories of one kind, with option checking and a typed unknown-name error.

    Args:
        kind: what an entry is, for messages (``"failure score"``, ``"backend"``).
        loader: called once, before the first lookup, to import the modules that register the
            built-in entries (so importing the registry stays cheap).
        positional: how many leading positional arguments every call of an entry gets from its
            caller (a base gets ``in_channels, num_classes, image_size``); they are not options.
        factory: the callable to call for an entry (default: the registered object itself; a
            backend class is opened with ``cls.open``).
        name_attr: if set, ``register`` sets this attribute of each registered object to its name.

    Example:
        >>> BASES: Registry[Callable[..., nn.Module]] = Registry("base architecture", positional=3)
        >>> @BASES.register("tiny")
        ... def tiny(in_channels, num_classes, image_size, width=8): ...
        >>> BASES.params("tiny")
        ('width',)
        >>> net = BASES.create("tiny", 1, 10, (28, 28), width=16)
    """

    def __init__(self, kind: str, *, loader: Callable[[], object] | None = None, positional: int = 0,
                 factory: Callable[[T], Callable[..., Any]] | None = None, name_attr: str | None = None) -> None:
        self.kind = kind
        self._loader = loader
        self._positional = positional
        self._factory = factory
        self._name_attr = name_attr
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[V], V]:
        """Decorator adding an entry under ``name`` with optional metadata (``entry(name).meta``).

        Registering a second, different object under a taken name raises :class:`ConfigError`
        (registering the very same object with the same metadata again is a no-op).

        Example:
            >>> @BACKENDS.register("onnxruntime", auto_priority=20)
            ... class OrtCpuBackend(Backend): ...
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} must be registered under a non-empty name, got {name!r}")

        def decorate(value: V) -> V:
            old = self._entries.get(name)
            if old is not None and (old.value is not value or dict(old.meta) != meta):
                raise ConfigError(f"{self.kind} {name!r} is registered twice ({old.value!r} and {value!r})")
            if self._name_attr is not None:
                setattr(value, self._name_attr, name)
            self._entries[name] = Entry(name, value, MappingProxyType(dict(meta)))  # type: ignore[arg-type]
            return value

        return decorate

    def available(self) -> tuple[str, ...]:
        """The registered names, in registration order.

        Example:
            >>> SCORES.available()[:2]
            ('msp', 'entropy')
        """
        return tuple(self._loaded())

    def entries(self) -> tuple[Entry[T], ...]:
        """Every entry (name, object, metadata), in registration order."""
        return tuple(self._loaded().values())

    def entry(self, name: str) -> Entry[T]:
        """The entry registered under ``name``; an unknown name raises :class:`UnknownName`.

        Example:
            >>> BACKENDS.entry("onnxruntime").meta["auto_priority"]
            20
        """
        entries = self._loaded()
        if not isinstance(name, str) or name not in entries:
            raise UnknownName(self.kind, name, tuple(entries))
        return entries[name]

    def get(self, name: str) -> T:
        """The object registered under ``name`` (a class or a factory function).

        Example:
            >>> SELECTORS.get("confidence")
            <class 'metaerr_edge.semisup.selectors.ConfidenceSelector'>
        """
        return self.entry(name).value

    def params(self, name: str) -> tuple[str, ...] | None:
        """The options ``create(name, ...)`` accepts, or None when the factory takes any (``**kwargs``).

        Options are the factory's parameters that can be passed by keyword, less the ``positional``
        leading ones the caller always passes.

        Example:
            >>> SCORES.params("trustscore")
            ('k', 'alpha', 'max_per_class')
        """
        factory = self._callable(name)
        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):  # no introspectable signature: nothing to check against
            return None
        skip, names = self._positional, []
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                return None
            if skip and p.kind in _POSITIONAL:
                skip -= 1
            elif p.kind in _BY_KEYWORD:
                names.append(p.name)
        return tuple(names)

    def create(self, name: str, *args: Any, **params: Any) -> Any:
        """Call the entry's factory with the caller's ``args`` and checked options ``params``.

        Raises:
            UnknownName: ``name`` is not registered (the message lists the choices).
            UnknownParameter: an option the factory does not take (the message lists those it does).

        Example:
            >>> SELECTORS.create("confidence", threshold=0.9)
            ConfidenceSelector(threshold=0.9)
        """
        accepted = self.params(name)
        if accepted is not None and not set(params) <= set(accepted):
            raise UnknownParameter(self.kind, name, set(params) - set(accepted), accepted)
        return self._callable(name)(*args, **params)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._loaded()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def _callable(self, name: str) -> Callable[..., Any]:
        value = self.get(name)
        return self._factory(value) if self._factory is not None else value  # type: ignore[return-value]

    def _loaded(self) -> dict[str, Entry[T]]:
        loader, self._loader = self._loader, None  # once: the loader's imports register entries here
        if loader is not None:
            try:
                loader()
            except BaseException:
                self._loader = loader
                raise
        return self._entries
