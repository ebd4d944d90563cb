"""What the handlers need to behave under ``torchrun``: who writes, and sharing Python objects.

Without an initialised ``torch.distributed`` process group every function is the single-process
identity, so the same handlers and bundle expressions serve one process and many.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

__all__ = ["is_distributed", "is_main_process", "rank_and_world", "gather_objects", "broadcast_object"]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes files and MLflow runs."""
    return not is_distributed() or dist.get_rank() == 0


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` in a single process."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process). A collective: all ranks call it."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process). A collective."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
