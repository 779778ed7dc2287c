"""Files the package writes: atomic writes, and JSON that is always valid JSON.

Torch-free (standard library and numpy only), so the runtime-only install can use it.

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: write to a temporary file beside the
  target, flush it to disk, then ``os.replace`` it in: the target never holds a partial file,
  and the new file gets the permissions the umask gives (not ``mkstemp``'s 0600).
- :func:`dumps_json` / :func:`write_json`: ``NaN`` and ``Infinity`` are not JSON, so non-finite
  floats are written as ``null`` and the top-level object gains a ``"null_values"`` field that
  names each one and says why it is null.

Example:
    >>> dumps_json({"auroc": float("nan")}, reasons={"auroc": "no errors in the split"})
    '{"auroc": null, "null_values": {"auroc": "NaN: no errors in the split"}}'
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

NULL_FIELD = "null_values"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it onto ``path``.

    On any failure (``KeyboardInterrupt`` included) the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    if path.is_dir():
        from metaerr_edge.errors import ConfigError

        raise ConfigError(f"{path} is a folder; pass a file path inside it, e.g. {path / 'out.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_safe(obj: Any, reasons: Mapping[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """``obj`` with numpy scalars/arrays as Python values and non-finite floats as ``None``.

    Returns ``(clean, nulls)``: ``nulls`` maps the dotted path of every value made ``None`` to why
    (``"NaN: ..."``, ``"Infinity: ..."``); ``reasons`` may give the why for a path or for its last key.
    """
    reasons = dict(reasons or {})
    nulls: dict[str, str] = {}

    def why(path: str, value: float) -> str:
        kind = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        last = path.rsplit(".", 1)[-1]
        detail = reasons.get(path) or reasons.get(last) or "the value is undefined or unbounded on this data"
        return f"{kind}: {detail}"

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            nulls[path] = why(path, value)
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Path):
            return str(value)
        return value

    return clean(obj, ""), nulls


def dumps_json(obj: Any, *, indent: int | None = None, reasons: Mapping[str, str] | None = None) -> str:
    """Strict JSON text of ``obj``: non-finite floats become ``null``, explained under ``"null_values"``."""
    clean, nulls = json_safe(obj, reasons)
    if nulls and isinstance(clean, dict):
        clean[NULL_FIELD] = nulls
    return json.dumps(clean, indent=indent, allow_nan=False, default=str)


def loads_json(text: str) -> Any:
    """Parse :func:`dumps_json` output, turning each ``null`` listed in ``"null_values"`` back into its float.

    Example:
        >>> loads_json(dumps_json({"auroc": float("nan")}))
        {'auroc': nan}
    """
    obj = json.loads(text)
    if not isinstance(obj, dict) or not isinstance(obj.get(NULL_FIELD), dict):
        return obj
    nulls = obj.pop(NULL_FIELD)
    for path, why in nulls.items():
        value = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(str(why).split(":")[0])
        keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        if value is None or not keys:
            continue
        parent = obj
        try:
            for key in keys[:-1]:
                parent = parent[key]
            if parent[keys[-1]] is None:
                parent[keys[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # a path that no longer exists: leave the document as it is
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
               reasons: Mapping[str, str] | None = None) -> Path:
    """Write :func:`dumps_json` of ``obj`` to ``path`` atomically."""
    return atomic_write_text(path, dumps_json(obj, indent=indent, reasons=reasons) + "\n")
