"""How a recipe's global batch is split over processes and gradient accumulation.

``train.batch_size`` is the GLOBAL batch: the samples one optimiser step learns from, whatever the
number of processes. Each process takes ``batch_size / (world x accum_steps)`` samples per forward
pass ("micro-batch"). ``train.accum_steps`` fixes the accumulation; or ``train.device_batch`` caps the
micro-batch and the trainer picks the smallest accumulation that fits under the cap. A combination
that does not divide evenly is refused at start, naming the keys.

    split = batch_split(train, world_size)   # BatchSplit(global_batch=32, world=8, accum_steps=1, micro=4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.configbase import ConfigError


@dataclass(frozen=True)
class BatchSplit:
    global_batch: int  # samples per optimiser step, all processes together
    world: int  # processes
    accum_steps: int  # micro-batches per process per optimiser step
    micro: int  # samples per process per micro-batch

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch} = {self.micro} per process x {self.world} processes x "
            f"{self.accum_steps} accumulation"
        )


def batch_split(train: Any, world: int) -> BatchSplit:
    """The split of ``train.batch_size`` (global) over ``world`` processes; ConfigError when it does not divide."""
    total, accum = int(train.batch_size), int(train.accum_steps)
    cap = getattr(train, "device_batch", None)
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    if cap is None:
        if total % (world * accum):
            raise ConfigError(
                f"train.batch_size={total} (the global batch) does not split evenly over {world} processes x "
                f"train.accum_steps={accum}: pick a train.batch_size that {world * accum} divides, another "
                "train.accum_steps or number of processes, or set train.device_batch (a per-device cap) to "
                "let the trainer choose the accumulation"
            )
        return BatchSplit(total, world, accum, total // (world * accum))
    if accum != 1:
        raise ConfigError(
            f"train.accum_steps={accum} and train.device_batch={cap} both set: give one (train.device_batch "
            "makes the trainer choose the accumulation)"
        )
    if total % world:
        raise ConfigError(
            f"train.batch_size={total} (the global batch) does not split evenly over {world} processes: "
            "pick a train.batch_size that the number of processes divides"
        )
    per_process = total // world
    for accum in range(1, per_process + 1):
        if per_process % accum == 0 and per_process // accum <= cap:
            return BatchSplit(total, world, accum, per_process // accum)
    raise AssertionError("unreachable: a micro-batch of 1 always fits")  # cap >= 1 (validated)
