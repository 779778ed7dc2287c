"""Data-parallel training with ``torch.distributed``: one process per CPU slot or GPU, launched by torchrun.

``torchrun --nproc_per_node N -m metaerr_edge.cli train ...`` (or ``metaerr-edge train --nproc N``,
which launches exactly that) starts N processes; :func:`init_from_env` joins them into one process
group (``gloo`` on CPU, ``nccl`` on CUDA). From then on every stage of a run is the same code on
every rank:

- training (:func:`metaerr_edge.models.training.fit_classifier`, the meta-model's loop) wraps the
  model in :class:`~torch.nn.parallel.DistributedDataParallel`; all ranks draw the same seeded order
  of the training rows and each takes every N-th row of each global batch (:func:`local_rows`), so
  a global batch is the same rows as in a single process, split N ways;
- inference (:func:`metaerr_edge.models.training.run_batched`: probabilities, error labels, scores)
  scores every N-th row on each rank and gathers the rows back in order (:func:`gather_rows`): no
  row dropped, none counted twice (nothing is padded, so nothing needs de-duplicating);
- rank 0 alone writes the run folder; the others wait for it (:func:`barrier`).

Without torchrun (no ``WORLD_SIZE`` in the environment) :func:`current` is the single process and
every helper here is a no-op, so nothing else changes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from metaerr_edge.errors import ConfigError

T = TypeVar("T")

#: Rank-derived seeds: rank r's augmentation draws use ``seed + RANK_SEED_STRIDE * r``.
RANK_SEED_STRIDE = 104_729


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, how many there are, the backend (None: a single process)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend or "none"}


def current() -> Dist:
    """The process group this process is in (the single process when none is initialised)."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return Dist()
    return Dist(td.get_rank(), td.get_world_size(), td.get_backend(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    """True in a process torchrun started for a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_from_env(device: str) -> Dist:
    """Join the process group torchrun set up (``gloo`` for ``device`` cpu, ``nccl`` for cuda); a no-op without torchrun.

    On CUDA each rank takes the GPU of its ``LOCAL_RANK``. Raises :class:`ConfigError` where the
    backend is missing or there are fewer GPUs than processes per node.
    """
    import torch.distributed as td

    if not launched_by_torchrun():
        return Dist()
    if td.is_initialized():
        return current()
    cuda = str(device).strip().lower().startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    available = td.is_available() and (td.is_nccl_available() if cuda else td.is_gloo_available())
    if not available:
        raise ConfigError(f"this torch {torch.__version__} build has no {backend} backend for distributed training on "
                          f"{'CUDA' if cuda else 'CPU'}; train in one process (without torchrun / --nproc)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: no CUDA GPU is visible to torch {torch.__version__}; "
                              "use --device cpu (gloo) for distributed training on CPU")
        if local_rank >= count:
            raise ConfigError(f"torchrun started more processes per node than the {count} visible GPU(s); "
                              f"pass --nproc {count} or fewer")
        torch.cuda.set_device(local_rank)
    td.init_process_group(backend=backend)
    return current()


def shutdown() -> None:
    """Leave the process group (every rank, at the end of a command)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def rank_device(device: str) -> str:
    """The device this rank trains on: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    dist = current()
    name = str(device).strip().lower()
    if dist.enabled and name in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{dist.local_rank}"
    return device


def local_rows(batch: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's part of a global batch: every ``world_size``-th row from ``rank`` on."""
    return batch[dist.rank :: dist.world_size] if dist.enabled else batch


def shard(n: int, dist: Dist) -> np.ndarray:
    """The rows ``0..n-1`` this rank scores: ``rank, rank + N, ...`` (sizes differ by at most one, nothing padded)."""
    return np.arange(dist.rank, n, dist.world_size) if dist.enabled else np.arange(n)


def gather_rows(local: np.ndarray | None, n: int, dist: Dist) -> np.ndarray | None:
    """Every rank's :func:`shard` results back into one array of ``n`` rows, in row order, on every rank.

    ``local`` is None on a rank whose shard is empty (``n < world_size``); the result is None only
    when every shard is.
    """
    if not dist.enabled:
        return local
    import torch.distributed as td

    parts: list[Any] = [None] * dist.world_size
    td.all_gather_object(parts, local)
    first = next((part for part in parts if part is not None), None)
    if first is None:
        return None
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for r, part in enumerate(parts):
        if part is not None:
            out[r :: dist.world_size] = part
    return out


def broadcast(value: T, dist: Dist, src: int = 0) -> T:
    """``value`` of rank ``src`` on every rank (any picklable object)."""
    if not dist.enabled:
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, src=src)
    return box[0]


def barrier(dist: Dist) -> None:
    """Wait until every rank is here."""
    if dist.enabled:
        import torch.distributed as td

        td.barrier()


def sync_buffers(module: torch.nn.Module, dist: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: after training, all ranks hold one model."""
    if not dist.enabled:
        return
    import torch.distributed as td

    for buf in module.buffers():
        td.broadcast(buf, src=0)


def wrap(module: torch.nn.Module, dist: Dist, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when there is more than one rank (else itself).

    ``find_unused``: some trainable parameters may take no part in a step (a meta-model head whose
    mode skips a branch); DDP then looks for them after each backward pass.
    """
    if not dist.enabled:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # A 1-channel conv's weight gradient comes back with channels-last strides: for a dimension of
    # size 1 that is the same memory layout as the bucket's, so DDP's performance warning says nothing.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)

    ids = [device.index if device.index is not None else dist.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused,
                                   gradient_as_bucket_view=True)  # grads live in DDP's buckets: no copy, no stride mismatch


def main_first(dist: Dist, action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 and tell every rank how it went: its value, or its error raised on every rank.

    For what only one process may do (writing the run folder): if rank 0 fails, the others fail
    with the same message instead of waiting in the next collective.
    """
    if not dist.enabled:
        return action()
    outcome: tuple[str, Any] = ("ok", None)
    if dist.is_main:
        try:
            outcome = ("ok", action())
        except Exception as exc:  # re-raised below, on every rank
            outcome = ("error", exc)
    status, value = broadcast(outcome if dist.is_main else None, dist)
    if status == "error":
        raise value if dist.is_main else _as_error(value)
    return value


@contextlib.contextmanager
def main_holds(dist: Dist, make: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
    """Enter ``make()`` (a lock) on rank 0 only, for the whole block; every rank raises if entering it failed."""
    with contextlib.ExitStack() as stack:
        outcome: tuple[str, Any] = ("ok", None)
        if dist.is_main:
            try:
                stack.enter_context(make())
            except Exception as exc:  # re-raised below, on every rank
                outcome = ("error", exc)
        status, value = broadcast(outcome if dist.is_main else None, dist)
        if status == "error":
            raise value if dist.is_main else _as_error(value)
        yield


def _as_error(exc: BaseException) -> Exception:
    """Rank 0's error as raised on another rank: the same message, a ConfigError where it was one."""
    return type(exc)(*exc.args) if isinstance(exc, ConfigError) else ConfigError(f"rank 0 failed: {exc}")
