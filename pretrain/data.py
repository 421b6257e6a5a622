"""Batches for MaskAHand pretraining: shards -> deterministic shuffle -> resumable skip -> mixed batches.

Each rank and DataLoader worker reads its own part of the shards (``shards.maskahand_dataset`` splits
by rank, then worker), with the shard order reshuffled every epoch (the same on every rank) and
``train.open_shards`` shards open at once, their samples interleaved. Inside a worker, raw
(undecoded) samples pass a shuffle buffer seeded from (seed, epoch, rank, worker), then the first raw
samples of a resumed epoch are dropped BEFORE decoding, then samples are decoded and prepared (a sample
may be left out: a clip without an interacting hand, a corrupt sample skipped). Workers hand out single
samples; the batch is made in the training process from the workers in turn, so one batch holds the
videos of every worker (with per-video shards, a batch made in one worker would hold that worker's few
videos only).

Exact resume: every sample carries its :class:`Position` (epoch, worker, workers, raw samples the worker
had read when it made the sample), and each worker ends its epoch with an end marker. The loader hands out
samples in turn, worker by worker, passing over workers that have ended (the DataLoader's own order, but
able to start at any worker). The task keeps the last position of each worker that training consumed and
saves it; a resumed epoch asks each worker to skip exactly its own raw samples and starts with the worker
after the last one consumed. Samples left out and workers that ran dry early cost nothing. Without that
record (an older checkpoint, another ``train.workers``) the skip is estimated from the batch count,
round-robin: exact only if no sample was left out and no worker ran dry.

Clips of different lengths share a batch: frames are zero-padded to the longest clip and
``num_frames`` (B,) says how many are real (Afformer masks the padding).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..shards.reader import buffer_shuffle, rank_and_world, worker_and_count

log = logging.getLogger(__name__)


def uniform_indices(total: int, wanted: int) -> list[int]:
    """``wanted`` frame positions spread uniformly over ``total`` (all of them when total <= wanted)."""
    if total <= wanted:
        return list(range(total))
    if wanted == 1:
        return [total // 2]
    return [round(i * (total - 1) / (wanted - 1)) for i in range(wanted)]


def pad_collate(samples: Sequence[Any], fields: Sequence[str] = ("targets", "heatmaps")) -> dict[str, Any]:
    """Samples with ``frames`` (T_i,3,H,W) -> ``frames`` (B,T_max,3,H,W) zero-padded, ``num_frames`` (B,),
    ``key``/``meta`` lists, and each of ``fields`` stacked (same shape across the batch)."""
    if not samples:
        raise ValueError("empty batch")
    t_max = max(s.frames.shape[0] for s in samples)
    first = samples[0].frames
    frames = first.new_zeros((len(samples), t_max, *first.shape[1:]))
    for i, s in enumerate(samples):
        if s.frames.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"sample {s.key}: frames {tuple(s.frames.shape[1:])} differ from {tuple(first.shape[1:])} "
                f"(sample {samples[0].key}) in one batch"
            )
        frames[i, : s.frames.shape[0]] = s.frames
    batch: dict[str, Any] = {
        "key": [s.key for s in samples],
        "meta": [s.meta for s in samples],
        "frames": frames,
        "num_frames": torch.tensor([s.frames.shape[0] for s in samples], dtype=torch.long),
    }
    for name in fields:
        batch[name] = torch.stack([getattr(s, name) for s in samples])
    return batch


WORKER_DONE = "worker_done"  # key of the marker a worker yields after its last sample of the epoch


class Position(NamedTuple):
    """Where one sample came from: its epoch, the DataLoader worker (of ``workers``) that made it, and how
    many raw samples that worker had read in this epoch when it handed the sample out."""

    epoch: int
    worker: int
    workers: int
    raw_read: int


class _ShuffleSkip:
    """Pipeline stage on raw samples: seeded shuffle buffer, then drop the first ``skip`` raw samples;
    ``read`` counts the raw samples read so far (skipped ones included)."""

    def __init__(self, bufsize: int, seed: int, epoch: int, skip: int):
        self.bufsize, self.seed, self.epoch, self.skip = bufsize, seed, epoch, skip
        self.read = 0

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, _ = rank_and_world()
        worker, _ = worker_and_count()
        stream = buffer_shuffle(
            samples, self.bufsize, random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
        )
        for s in stream:
            self.read += 1
            if self.read > self.skip:
                yield s


class EpochBatches(IterableDataset):
    """One epoch of one rank's samples, made inside each DataLoader worker; :func:`epoch_loader` batches them.

    ``raw_skips``: raw samples each worker skips (the saved positions of a resumed epoch); without them,
    ``skip`` batches are skipped, estimated round-robin (see the module docstring).
    """

    def __init__(
        self,
        make_dataset: Any,
        epoch: int,
        skip: int,
        batch_size: int,
        shuffle: int,
        seed: int,
        prepare: Any,
        collate: Any,
        rank: int,
        world_size: int,
        raw_skips: Sequence[int] | None = None,
    ):
        self.make_dataset, self.epoch, self.skip = make_dataset, epoch, skip
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.prepare, self.collate = prepare, collate
        self.rank, self.world_size = rank, world_size
        self.raw_skips = list(raw_skips) if raw_skips is not None else None

    def _raw_skip(self, worker: int, workers: int) -> int:
        if self.raw_skips is not None:
            if len(self.raw_skips) != workers:
                raise ValueError(f"{len(self.raw_skips)} saved worker positions for {workers} workers")
            return self.raw_skips[worker]
        # round-robin: worker w made samples w, w + W, ... of the epoch
        return len(range(worker, self.skip * self.batch_size, workers))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = worker_and_count()
        ds = self.make_dataset(rank=self.rank, world_size=self.world_size, seed=self.seed)
        ds.set_epoch(self.epoch)
        stages = ds.pipeline
        # raw-sample stage before the reader's final decode stage: skipping costs no decoding
        cursor = _ShuffleSkip(self.shuffle, self.seed, self.epoch, self._raw_skip(worker, workers))
        stages.insert(len(stages) - 1, cursor)
        for sample in ds:
            sample = self.prepare(sample)
            if sample is None:
                continue
            yield {"sample": sample, "position": Position(self.epoch, worker, workers, cursor.read)}
        yield {WORKER_DONE: worker}


class PositionRecord:
    """The last :class:`Position` training consumed from each worker in the current epoch (per rank).

    ``note`` each batch as training takes it; ``state_dict`` goes into checkpoints; ``resume`` answers a
    resumed ``train_batches(epoch, skip)``: each worker's raw samples to skip and the worker to start with.
    """

    def __init__(self) -> None:
        self.epoch, self.batches, self.raw, self.last = -1, 0, [0], -1

    def note(self, positions: Sequence[Position]) -> None:
        """One batch training took: the positions of its samples, in the order they were handed out."""
        if positions[0].epoch != self.epoch:
            self.epoch, self.batches, self.raw = positions[0].epoch, 0, [0] * positions[0].workers
        self.batches += 1
        for pos in positions:
            self.raw[pos.worker] = pos.raw_read
            self.last = pos.worker

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "raw": list(self.raw), "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.raw, self.last = [int(r) for r in state["raw"]], int(state["last"])

    def resume(
        self, epoch: int, skip: int, workers: int, batch_size: int = 1
    ) -> tuple[list[int] | None, int]:
        """(raw samples each worker skips, or None to estimate from ``skip`` batches of ``batch_size``;
        the first worker's turn)."""
        if skip == 0:
            return None, 0
        if (self.epoch, self.batches, len(self.raw)) == (epoch, skip, workers):
            return list(self.raw), (self.last + 1) % workers
        log.warning(
            "resuming epoch %d after %d batches without a matching per-worker record (saved: epoch %d, %d "
            "batches, %d workers): skipping by batch count, exact only if no sample was left out and no "
            "DataLoader worker ran dry",
            epoch,
            skip,
            self.epoch,
            self.batches,
            len(self.raw),
        )
        return None, (skip * batch_size) % workers


def epoch_loader(
    dataset: EpochBatches, workers: int, pin_memory: bool = False, first_worker: int = 0
) -> Iterator[dict[str, Any]]:
    """The epoch's batches of ``dataset.batch_size``, made in this process from the workers' samples taken in
    turn from ``first_worker`` (``workers`` 0: samples made in this process too). Each batch carries
    ``positions``, one :class:`Position` per sample. The last partial batch is dropped, so every step sees
    ``batch_size`` samples per rank. ``pin_memory`` is accepted for compatibility; batches are collated
    here and handed to the device as they are."""
    if workers == 0:
        return _batched(_in_turn(iter(dataset), 1, 0), dataset)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        # samples, not batches, travel: keep about two batches' worth in flight across the workers
        prefetch_factor=max(2, -(-2 * dataset.batch_size // workers)),
    )
    return _batched(_in_turn(iter(loader), workers, first_worker), dataset)


def _batched(items: Iterator[dict[str, Any]], dataset: EpochBatches) -> Iterator[dict[str, Any]]:
    group: list[dict[str, Any]] = []
    for item in items:
        group.append(item)
        if len(group) == dataset.batch_size:
            batch = dataset.collate([x["sample"] for x in group])
            batch["positions"] = [x["position"] for x in group]
            yield batch
            group = []


def _in_turn(source: Iterator[dict[str, Any]], workers: int, turn: int) -> Iterator[dict[str, Any]]:
    """Reorder the loader's round-robin stream to start at worker ``turn``; a worker's end marker takes it
    out of the turns. Holds at most about one item per worker (the loader itself goes round-robin)."""
    pending: list[deque[dict[str, Any]]] = [deque() for _ in range(workers)]
    done = [False] * workers
    while not all(done):
        if done[turn]:
            turn = (turn + 1) % workers
            continue
        if not pending[turn]:
            item = next(source, None)
            if item is None:
                raise RuntimeError(f"DataLoader worker {turn} stopped without its end-of-epoch marker")
            w = item[WORKER_DONE] if WORKER_DONE in item else item["position"].worker
            pending[w].append(item)
            continue
        item = pending[turn].popleft()
        if WORKER_DONE in item:
            done[turn] = True
        else:
            yield item
        turn = (turn + 1) % workers
