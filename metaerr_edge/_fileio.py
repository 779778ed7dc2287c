"""Files the package writes: atomic writes, and JSON that is always valid JSON.

Torch-free (standard library and numpy only), so the runtime-only install can use it.

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: write to a temporary file beside the
  target, flush it to disk, then ``os.replace`` it in: the target never holds a partial file,
  and the new file gets the permissions the umask gives (not ``mkstemp``'s 0600).
- :func:`dumps_json` / :func:`write_json`: ``NaN`` and ``Infinity`` are not JSON, so non-finite
  floats are written as ``null`` and the top-level object gains a ``"null_values"`` field that
  names each one and says why it is null.
- :func:`path_lock`: one writer per target. A non-blocking ``flock`` on the hidden sibling
  ``.<name>.lock``; a second writer gets :class:`~metaerr_edge.errors.ConfigError` at once. The
  kernel drops the lock when its process dies (``kill -9`` included), so no lock is ever stale.
- :func:`replace_folder`: write a folder whole (a run). Files go into a fresh hidden folder beside
  the target, which then replaces the target in one ``renameat2(RENAME_EXCHANGE)`` (two renames
  where the kernel or file system lacks it; :func:`recover_folder` undoes a crash between them).
- :func:`replace_files`: write a set of files in a folder (a report) so that a failure leaves the
  previous set, never a mix of old and new members.
- :func:`write_manifest` / :func:`verify_manifest`: ``manifest.json`` (file -> sha256), written last;
  a folder whose files do not match it is refused.
- :func:`cache_dir`: the one cache root (``$METAERR_EDGE_CACHE``, else ``$XDG_CACHE_HOME/metaerr-edge``,
  else ``~/.cache/metaerr-edge``), for decoded images and TensorRT engines.
- Temporaries are named ``.<target name>.<12 hex>.tmp`` and ``flock``-ed by their writer while it
  lives; the next write of the same target removes the ones no live process holds (what a
  ``kill -9`` left). Every file and folder is created with the permissions the umask gives.

Example:
    >>> dumps_json({"auroc": float("nan")}, reasons={"auroc": "no errors in the split"})
    '{"auroc": null, "null_values": {"auroc": "NaN: no errors in the split"}}'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

try:  # POSIX; elsewhere writers are not locked and only day-old temporaries count as stale
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

NULL_FIELD = "null_values"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "metaerr-edge/manifest/1"

_log = logging.getLogger(__name__)
_UMASK_GUARD = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` sets it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_GUARD:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a new file gets under the current umask (0644 under 022, 0600 under 077)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike[str], *, keep_mode: bool = False) -> Iterator[Path]:
    """Yield a temporary file beside ``path`` to fill; when the block succeeds it is flushed to disk
    and renamed onto ``path``. The one way this package writes a file.

    On any failure (``KeyboardInterrupt`` included) the temporary file is removed and ``path`` is
    left as it was; an ``OSError`` (disk full, read-only) names ``path``, not the temporary.
    Temporaries of ``path`` that an earlier, killed writer left are removed first (ours is
    flock-ed while we write it, so no other writer takes it for stale). The file gets what the
    umask gives, or with ``keep_mode`` the mode of the file it replaces.

    Example:
        >>> with atomic_target("model.onnx") as tmp:
        ...     tmp.write_bytes(data)
    """
    path = writable_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reraise_naming(exc, path)
    remove_stale_temps(path)
    tmp, fd = new_temp_file(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if keep_mode and path.exists() else file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        reraise_naming(exc, path, tmp)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)


def writable_file(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` replaces, refused with a ConfigError where that would be wrong.

    A symlink is written through (its target is replaced, the link stays); a folder, a trailing
    slash, a device, a FIFO or a socket is refused (``-o /dev/null`` must not replace /dev/null);
    so is a file of a run folder that its ``manifest.json`` lists (writing it would break the run).
    """
    from metaerr_edge.errors import ConfigError

    text = os.fspath(path)
    if not text:
        raise ConfigError("the output path is empty; pass a file path")
    if text.endswith(("/", os.sep)):
        raise ConfigError(f"{text!r} ends with a slash, which names a folder; pass a file path such as "
                          f"{text.rstrip('/' + os.sep)}/out{Path(text.rstrip('/')).suffix or ''}")
    target = Path(text)
    if target.is_symlink():
        target = target.resolve()
    if target.is_dir():
        raise ConfigError(f"{path} is a folder; pass a file path inside it, e.g. {target / ('out' + target.suffix)}")
    if target.exists() and not target.is_file():
        raise ConfigError(f"{path} exists and is not a regular file (a device, FIFO or socket); writing it would "
                          "replace it. Pass the path of a regular file")
    manifest = target.parent / MANIFEST
    if target.name == MANIFEST and target.exists():  # a manifest is written once, last, into a fresh folder
        raise ConfigError(f"{path} is a run folder's {MANIFEST}; writing it would break the run. Choose another path")
    if manifest.is_file() and target.name != MANIFEST:
        try:
            listed = target.name in json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            listed = False
        if listed:
            raise ConfigError(f"{path} is a file of the run folder {target.parent} (listed in its {MANIFEST}); "
                              "writing it would break the run. Choose another path")
    return target


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[str], Any] | bytes | bytearray | memoryview) -> Path:
    """Fill a temporary file beside ``path``, then rename it onto ``path`` (:func:`atomic_target`).

    ``write`` is the content (bytes-like), or ``write(tmp_path)`` fills the file itself (an
    exporter, ``torch.save``); a failure leaves ``path`` as it was.
    """
    with atomic_target(path) as tmp:
        if callable(write):
            write(str(tmp))
        else:
            tmp.write_bytes(memoryview(write))
    return Path(path)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` into ``path``, atomically (the exact name: no ``.npz`` appended)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)

    return atomic_write_bytes(path, write)


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


# --- temporaries, locks, folders written whole -------------------------------------------------

_STALE_AGE_UNLOCKED_S = 86400.0  # without flock (Windows) only a day-old temporary counts as stale
_OURS = re.compile(r"\..+\.(?:lock|[0-9a-f]{12}\.(?:tmp|old|bak)|[a-z0-9_]{8}\.tmp)\Z", re.S)
_HELD: dict[str, list] = {}  # lock file -> [fd, owning thread, depth]: re-entrant within a thread
_HELD_GUARD = threading.Lock()


def reraise_naming(exc: OSError, path: str | os.PathLike[str], *temps: str | os.PathLike[str]) -> NoReturn:
    """Raise ``exc`` again, re-made to name ``path`` where it named nothing or one of ``temps``.

    A full disk reports no file name, and a temporary's name means nothing to the user: the CLI's
    one line should say which output could not be written.
    """
    hidden = [str(t) for t in temps]
    name = None if exc.filename is None else str(exc.filename)
    ours = name is None or any(name == t or name.startswith(t + os.sep) for t in hidden)
    if exc.errno is None or not ours:
        raise exc
    raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


def temp_name(path: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<12 hex>.<kind>`` (tmp, old or bak)."""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.{kind}"


def _temp_pattern(name: str) -> re.Pattern[str]:
    # ours, and tempfile.mkstemp's (8 characters) that earlier versions wrote
    return re.compile(rf"\.{re.escape(name)}\.(?:[0-9a-f]{{12}}\.(tmp|old|bak)|[a-z0-9_]{{8}}\.(tmp))\Z", re.S)


def _flock(fd: int, *, block: bool) -> bool | None:
    """Lock ``fd``: True, False when another open file holds it, None when the file system cannot lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return None
        raise
    return True


def _hold(fd: int, path: Path) -> bool:
    """flock our new temporary; False if a cleaner removed it between its creation and the lock."""
    _flock(fd, block=True)
    try:
        mine, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def new_temp_file(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """Create an empty temporary file beside ``path`` (umask permissions), locked while the returned fd is open.

    Returns ``(tmp_path, fd)``; the caller closes ``fd`` once ``tmp_path`` is renamed or removed.
    """
    path = Path(path)
    for _ in range(64):
        tmp = temp_name(path)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            reraise_naming(exc, path, tmp)
        if _hold(fd, tmp):
            return tmp, fd
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _new_temp_dir(path: Path) -> tuple[Path, int]:
    """Like :func:`new_temp_file`, a folder (``os.mkdir`` follows the umask, unlike ``mkdtemp``'s 0700)."""
    for _ in range(64):
        tmp = temp_name(path)
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        except OSError as exc:
            reraise_naming(exc, path, tmp)
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        if _hold(fd, tmp):
            return tmp, fd
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` that no live writer holds (what ``kill -9`` left); returns them.

    A ``.old`` folder (a whole folder kept for :func:`recover_folder`) only goes once ``path`` exists.
    Never raises: cleaning up must not fail the write it precedes.
    """
    path = Path(path)
    pattern, removed = _temp_pattern(path.name), []
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.match(e.name)]
    except OSError:
        return removed
    exists = os.path.lexists(path)
    for entry in entries:
        match = pattern.match(entry.name)
        if (match.group(1) or match.group(2)) == "old" and not exists:
            continue
        with contextlib.suppress(OSError):
            if _remove_if_unheld(entry):
                removed.append(Path(entry.path))
    if removed:
        _log.debug("removed stale temporaries of %s: %s", path, [p.name for p in removed])
    return removed


def _remove_if_unheld(entry: os.DirEntry) -> bool:
    if entry.is_symlink():
        os.unlink(entry.path)
        return True
    if fcntl is None:
        if time.time() - entry.stat().st_mtime < _STALE_AGE_UNLOCKED_S:
            return False
        shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else os.unlink(entry.path)
        return True
    fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if _flock(fd, block=False) is not True:  # a live writer holds it (or we cannot tell)
            return False
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
        return True
    finally:
        os.close(fd)


def _canonical(target: str | os.PathLike[str]) -> Path:
    """Absolute, with symlinked folders resolved (a file's own name is kept: ``os.replace`` replaces a link)."""
    p = Path(os.path.abspath(target))
    return p.resolve() if p.is_dir() else p.parent.resolve() / p.name


def lock_file(target: str | os.PathLike[str]) -> Path:
    """The lock of ``target``: the hidden sibling ``.<name>.lock``, removed by its holder on release."""
    p = _canonical(target)
    return p.parent / f".{p.name or 'root'}.lock"


@contextlib.contextmanager
def path_lock(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Be the only writer of ``target`` (a file or a folder) while the block runs.

    Non-blocking: a second writer (another process, or another thread) gets a
    :class:`~metaerr_edge.errors.ConfigError` naming the target and the holder at once. Re-entrant
    within a thread. The kernel drops the lock when its holder dies, so a crash leaves none behind.

    Example:
        >>> with path_lock("model.onnx"):
        ...     ...  # read, change, write model.onnx
    """
    lock = lock_file(target)
    key, me = str(lock), threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[1] == me:
            held[2] += 1
    if held is not None and held[1] == me:
        try:
            yield lock
        finally:
            with _HELD_GUARD:
                held[2] -= 1
        return
    if held is not None:
        raise _busy(target, lock, "another thread of this process")
    fd, state = _open_locked(lock, target)
    if state is False:
        try:
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "pid unknown"
        except OSError:
            holder = "pid unknown"
        os.close(fd)
        raise _busy(target, lock, holder)
    if state is None and fcntl is not None:
        _log.warning("%s: this file system cannot lock %s; nothing stops a second writer", target, lock)
    with _HELD_GUARD:
        _HELD[key] = [fd, me, 1]
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_line().encode("utf-8", "replace"), 0)
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        if state is True:  # unlinked while still held: a waiter that opened it sees a stale inode and retries
            with contextlib.suppress(OSError):
                os.unlink(lock)
        os.close(fd)  # releases the flock


def _open_locked(lock: Path, target: str | os.PathLike[str]) -> tuple[int, bool | None]:
    """Open (creating) ``lock`` and try to flock it: (fd, True) held, (fd, False) held by another,
    (fd, None) the file system cannot lock. A lock file its holder unlinked on release (it is
    removed then, so none piles up) is opened again: holding the flock of a deleted inode locks nothing.
    """
    for _ in range(100):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            reraise_naming(exc, target, lock)
        try:
            state = _flock(fd, block=False)
            if state is not True:
                return fd, state
            mine, there = os.fstat(fd), os.stat(lock)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
            return fd, True
        os.close(fd)
    return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666), False


def _holder_line() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else "python"
    program = "metaerr-edge" if program in ("__main__.py", "metaerr-edge") else program
    command = " ".join([program, *sys.argv[1:]])[:200]
    return f"pid {os.getpid()}, `{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"


def _busy(target: str | os.PathLike[str], lock: Path, holder: str) -> Exception:
    from metaerr_edge.errors import ConfigError

    return ConfigError(
        f"{target} is being written by another metaerr-edge process ({holder}); two writers at once would "
        f"mix their files. Wait for it to finish (or stop it), or write to another path. The lock is {lock}; "
        "it is released the moment that process ends, so there is nothing to delete")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAMEAT2: list = []


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    if not _RENAMEAT2:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _RENAMEAT2.append(getattr(libc, "renameat2", None))  # glibc >= 2.28
    fn = _RENAMEAT2[0]
    if fn is None:
        return False
    import ctypes

    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # this kernel or file system cannot exchange: two renames instead
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, real: Path) -> Path | None:
    """Put folder ``new`` at ``real``; returns what to delete afterwards (the previous folder) or None."""
    if not os.path.lexists(real):
        os.rename(new, real)
    elif _exchange(new, real):
        pass  # ``new`` now holds the previous folder: the caller removes it
    else:
        old = temp_name(real, "old")
        try:
            os.rename(real, old)
            os.rename(new, real)  # a crash between the two: recover_folder() puts ``old`` back
        except BaseException:
            if not os.path.lexists(real) and os.path.lexists(old):
                os.rename(old, real)
            raise
        _fsync_dir(real.parent)
        return old
    _fsync_dir(real.parent)
    return None


def _olds(real: Path) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(real.name)}\.[0-9a-f]{{12}}\.old\Z", re.S)
    try:
        found = [Path(e.path) for e in os.scandir(real.parent) if pattern.match(e.name) and e.is_dir()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _restore_old(real: Path) -> bool:
    if os.path.lexists(real):
        return False
    olds = _olds(real)
    if not olds:
        return False
    os.rename(olds[-1], real)
    _fsync_dir(real.parent)
    _log.warning("%s: a writer was killed while replacing this folder; its previous content is back", real)
    return True


def recover_folder(target: str | os.PathLike[str]) -> bool:
    """Put back a folder whose writer was killed between the two renames of its swap; True if it did.

    Only needed where ``RENAME_EXCHANGE`` is missing (the swap is then two renames): the previous
    folder waits as ``.<name>.<hex>.old`` and the target is absent. Takes the target's lock, so a
    writer still at work gets its :class:`~metaerr_edge.errors.ConfigError` instead.
    """
    real = _canonical(target)
    if os.path.lexists(real) or not _olds(real):
        return False
    with path_lock(real):
        return _restore_old(real)


def check_replaceable(target: str | os.PathLike[str], owned: Callable[[str], bool],
                      writer: str = "this command") -> None:
    """Refuse, before any work, a target that :func:`replace_folder` must not replace.

    That is an existing file, the current folder (or one holding it), or a folder holding entries
    ``owned`` does not claim (they would be deleted with the folder). Raises ``ConfigError``.
    """
    from metaerr_edge.errors import ConfigError

    real = _canonical(target)
    if os.path.lexists(real) and not real.is_dir():
        raise ConfigError(f"{target} is an existing file; {writer} writes a folder. Pass a folder path")
    with contextlib.suppress(OSError):
        cwd = Path.cwd().resolve()
        if real == cwd or real in cwd.parents:
            raise ConfigError(f"{target} is the current folder (or holds it); {writer} replaces its folder whole. "
                              f"Pass a folder inside it, e.g. {Path(target) / 'run'}")
    if not real.is_dir():
        return
    foreign = sorted(n for n in os.listdir(real) if not owned(n) and not _OURS.match(n))
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise ConfigError(f"{target} holds entries {writer} did not write ({shown}); it replaces the folder whole, "
                          "so they would be deleted. Move them out first, or write into a new folder")


@contextlib.contextmanager
def replace_folder(target: str | os.PathLike[str], *, owned: Callable[[str], bool] = lambda name: True,
                   writer: str = "this command") -> Iterator[Path]:
    """Write a folder whole: yield an empty hidden folder beside ``target``; on success it becomes ``target``.

    Under :func:`path_lock`. The previous ``target`` (checked by :func:`check_replaceable`) is
    replaced in one ``RENAME_EXCHANGE`` (or two renames, see :func:`recover_folder`) and removed.
    On any failure, ``KeyboardInterrupt`` included, ``target`` is left as it was and the temporary
    folder is removed; one that ``kill -9`` left is removed by the next write.

    Example:
        >>> with replace_folder("runs/a") as tmp:
        ...     write_json(tmp / "config.json", {...})
        ...     write_manifest(tmp)
    """
    real = _canonical(target)
    with path_lock(real):
        _restore_old(real)
        remove_stale_temps(real)
        check_replaceable(target, owned, writer)
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reraise_naming(exc, target)
        tmp, fd = _new_temp_dir(real)
        garbage: Path | None = None
        try:
            try:
                yield tmp
                _fsync_dir(tmp)
                garbage = _swap_in(tmp, real)
            except OSError as exc:
                reraise_naming(exc, target, tmp)
        finally:
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)  # ours unfinished, or (after an exchange) the previous folder
            if garbage is not None:
                shutil.rmtree(garbage, ignore_errors=True)


@contextlib.contextmanager
def replace_files(folder: str | os.PathLike[str], names: Iterable[str]) -> Iterator[Path]:
    """Write the set of files ``names`` in ``folder`` together: never a mix of an old and a new set.

    Yields an empty staging folder inside ``folder``; write the new set's files there. On success
    each staged file replaces its namesake, and a member of ``names`` not staged is removed (an old
    ``bench_device.png`` does not outlive its set). A failure while writing (a full disk) leaves the
    previous set; one while moving the files in rolls the previous set back. Under
    :func:`path_lock` of ``folder``; files follow the umask.

    Example:
        >>> with replace_files("out", ["a.json", "a.md"]) as stage:
        ...     write_json(stage / "a.json", doc)
        ...     atomic_write_text(stage / "a.md", text)
    """
    from metaerr_edge.errors import ConfigError

    folder, members = Path(folder), list(dict.fromkeys(names))
    with path_lock(folder):
        if os.path.lexists(folder) and not folder.is_dir():
            raise ConfigError(f"{folder} is an existing file; pass a folder to write {', '.join(members)} into")
        created = not os.path.lexists(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reraise_naming(exc, folder)
        remove_stale_temps(folder / "staged")
        for name in members:
            if (folder / name).is_dir():
                raise ConfigError(f"{folder / name} is a folder, where a file of this output goes; move it away")
            remove_stale_temps(folder / name)
        stage, fd = _new_temp_dir(folder / "staged")  # .staged.<hex>.tmp
        done = False
        try:
            try:
                yield stage
                written = sorted(n for n in os.listdir(stage) if not n.startswith("."))
                unknown = sorted(set(written) - set(members))
                if unknown:
                    raise ValueError(f"staged {unknown}, which are not among the set's files {members}")
                _commit_files(stage, folder, members, written)
                done = True
            except OSError as exc:
                reraise_naming(exc, folder, stage)
        finally:
            os.close(fd)
            shutil.rmtree(stage, ignore_errors=True)
            if created and not done:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # nothing new: not even the folder (only if still empty)


def _commit_files(stage: Path, folder: Path, members: list[str], written: list[str]) -> None:
    backups: dict[str, Path] = {}
    placed: list[str] = []
    for name in written:  # every writer's bytes on disk (a full disk shows here, before anything moves)
        with open(stage / name, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(stage / name, file_mode())  # whichever writer staged it (mkstemp makes 0600)
    try:
        for name in members:  # keep the previous set until the new one is in
            dst = folder / name
            if os.path.lexists(dst):
                bak = temp_name(dst, "bak")
                try:
                    os.link(dst, bak, follow_symlinks=False)
                except OSError:  # no hard links here (FAT, some FUSE): move it aside instead
                    os.replace(dst, bak)
                backups[name] = bak
        for name in members:
            dst = folder / name
            if name in written:
                os.replace(stage / name, dst)
                placed.append(name)
            elif os.path.lexists(dst):
                os.unlink(dst)
    except BaseException:
        for name in members:
            dst = folder / name
            with contextlib.suppress(OSError):
                if name in backups and os.path.lexists(dst) and os.path.samefile(backups[name], dst):
                    os.unlink(backups[name])  # not replaced yet (rename() between two links is a no-op)
                elif name in backups:
                    os.replace(backups[name], dst)
                elif name in placed:
                    os.unlink(dst)
        raise
    for bak in backups.values():
        with contextlib.suppress(OSError):
            os.unlink(bak)
    _fsync_dir(folder)


# --- manifests ---------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike[str], **fields: Any) -> Path:
    """Write ``manifest.json`` (each regular, non-hidden file -> sha256 and size) last into ``folder``.

    Example:
        >>> write_manifest(tmp, writer="metaerr_edge.pipeline.train_run")
    """
    folder = Path(folder)
    files = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".") and entry.name != MANIFEST:
            files[entry.name] = {"sha256": file_sha256(entry.path), "bytes": entry.stat().st_size}
    return write_json(folder / MANIFEST, {"schema": MANIFEST_SCHEMA, **fields, "files": files})


def verify_manifest(folder: str | os.PathLike[str], *, owned: Callable[[str], bool] | None = None,
                    fix: str = "write it again") -> dict[str, Any] | None:
    """Check ``folder`` against its ``manifest.json``; returns the manifest, or None where there is none.

    Raises :class:`~metaerr_edge.errors.DataError` naming each listed file that is missing or whose
    size or sha256 differs, and each file ``owned`` claims that the manifest does not list.
    """
    from metaerr_edge.errors import DataError

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        listed = {str(k): (str(v["sha256"]), int(v["bytes"])) for k, v in doc["files"].items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is unreadable or malformed ({type(exc).__name__}: {exc}), so the folder "
                        f"cannot be checked; {fix}") from exc
    problems = []
    for name, (sha, size) in sorted(listed.items()):
        p = folder / name
        if not p.is_file():
            problems.append(f"{name} is missing")
            continue
        got_size = p.stat().st_size
        got = file_sha256(p) if got_size == size else None
        if got != sha:
            problems.append(f"{name} is not the file written with it ({got_size} bytes"
                            + (f", sha256 {got[:12]}" if got else "") + f"; expected {size} bytes, sha256 {sha[:12]})")
    if owned is not None:
        problems += [f"{n} is not listed in it" for n in sorted(os.listdir(folder))
                     if n != MANIFEST and n not in listed and owned(n)]
    if problems:
        raise DataError(f"{folder} does not match its {MANIFEST} (written last, once the folder was complete): "
                        f"{'; '.join(problems)}. Its files come from different writes or were changed since; {fix}")
    return doc


CACHE_ENV = "METAERR_EDGE_CACHE"
CACHE_NAME = "metaerr-edge"  # the distribution's name: one spelling for every cache


def cache_dir(*parts: str) -> Path:
    """The package's cache folder, or ``parts`` inside it; the path only, nothing is created.

    The root is ``$METAERR_EDGE_CACHE`` when set, else ``$XDG_CACHE_HOME/metaerr-edge`` (an
    absolute ``XDG_CACHE_HOME`` only, as the XDG spec says), else ``~/.cache/metaerr-edge``.
    Everything in it only saves time: deleting it is always safe.

    Example:
        >>> cache_dir("tensorrt")
        PosixPath('/home/me/.cache/metaerr-edge/tensorrt')
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        root = str(base / CACHE_NAME)
    return Path(root).joinpath(*parts)
