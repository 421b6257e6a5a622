"""Rank, world and device, once for every stage: torchrun's environment or a single process.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address); without them
everything runs as rank 0 of 1 and no process group is created. NCCL is used when the process has a
CUDA device, gloo otherwise.

    dist_info = init_distributed("auto")     # DistInfo(rank, world_size, local_rank, device)
    rank, world = rank_world()               # the one way to ask; works before init and after shutdown
    if is_main(): ...                        # the one "am I rank 0?"
    barrier(); gathered = all_gather_object(x); shutdown_distributed()
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _torchrun_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise RuntimeError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def resolve_device(choice: str = "auto", local_rank: int | None = None, key: str = "device") -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else cpu. ``cuda`` without a GPU is an error
    naming ``key`` (the config key the choice came from). With ``local_rank``, cuda means cuda:local_rank."""
    if choice not in ("auto", "cpu", "cuda") and not choice.startswith("cuda:"):
        raise ValueError(f"{key}={choice!r}: expected auto, cpu, cuda or cuda:N")
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if choice == "auto":
            return torch.device("cpu")
        raise RuntimeError(f"{key}={choice} but no CUDA device is available (use auto or cpu)")
    if choice.startswith("cuda:"):
        return torch.device(choice)
    return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())


def init_distributed(device: str = "auto", timeout_s: float = 1800.0, key: str = "device") -> DistInfo:
    """Join torchrun's process group (when launched by it) and pick this process's device.

    Idempotent: a second call returns the same information without re-initialising.
    """
    rank, world, local = _torchrun_env()
    dev = resolve_device(device, local if world > 1 else None, key=key)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world_size) of this process: the process group's when one is up, else torchrun's environment
    (what the group will have: e.g. before ``init_distributed`` or after ``shutdown_distributed``), else
    (0, 1). A process group made without torchrun (``init_process_group`` with a store) wins over the
    environment."""
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world, _ = _torchrun_env()
    return rank, world


def is_main() -> bool:
    """True on rank 0 (see :func:`rank_world`), the one process that logs, prints and writes shared files."""
    return rank_world()[0] == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list in a single process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_max(value: float, device: torch.device | None = None) -> float:
    """Maximum of ``value`` over ranks (e.g. "did any rank run out of data?")."""
    if not is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or _collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    if not is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or _collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
