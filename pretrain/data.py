"""Batches for MaskAHand pretraining: shards -> deterministic shuffle -> resumable skip -> batches.

Each rank and DataLoader worker reads its own part of the shards (``shards.maskahand_dataset`` splits
by rank, then worker). Inside a worker, raw (undecoded) samples pass a shuffle buffer seeded from
(seed, epoch, rank, worker), then the first samples of a resumed epoch are dropped BEFORE decoding,
then samples are decoded, trimmed to ``num_frames`` and batched in the worker. The DataLoader hands
out workers' batches round-robin, so batch ``b`` of an epoch is batch ``b // W`` of worker ``b % W``:
a resume asks each worker to skip its share. (If workers run dry at different times at the end of
an epoch, that mapping is off by the missing batches: exact resume is guaranteed for ``workers <= 1``
and for checkpoints taken before any worker has run dry.)

Clips of different lengths share a batch: frames are zero-padded to the longest clip and
``num_frames`` (B,) says how many are real (Afformer masks the padding).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from maskahand.shards.reader import buffer_shuffle, rank_and_world, worker_and_count

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


class _ShuffleSkip:
    """Pipeline stage on raw samples: seeded shuffle buffer, then drop the first ``skip`` samples."""

    def __init__(self, bufsize: int, seed: int, epoch: int, skip_batches: int, batch_size: int):
        self.bufsize, self.seed, self.epoch = bufsize, seed, epoch
        self.skip_batches, self.batch_size = skip_batches, batch_size

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, _ = rank_and_world()
        worker, workers = worker_and_count()
        stream = buffer_shuffle(
            samples, self.bufsize, random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
        )
        # round-robin: worker w produced batches w, w + W, ... of the epoch
        mine = len(range(worker, self.skip_batches, workers))
        to_skip = mine * self.batch_size
        for i, s in enumerate(stream):
            if i >= to_skip:
                yield s


class EpochBatches(IterableDataset):
    """One epoch of one rank's batches, built inside each DataLoader worker."""

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
    ):
        self.make_dataset, self.epoch, self.skip = make_dataset, epoch, skip
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.prepare, self.collate = prepare, collate
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds = self.make_dataset(rank=self.rank, world_size=self.world_size, seed=self.seed)
        ds.set_epoch(self.epoch)
        stages = ds.pipeline
        # raw-sample stage before the reader's final decode stage: skipping costs no decoding
        stages.insert(
            len(stages) - 1, _ShuffleSkip(self.shuffle, self.seed, self.epoch, self.skip, self.batch_size)
        )
        batch: list[Any] = []
        for sample in ds:
            sample = self.prepare(sample)
            if sample is None:
                continue
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate(batch)
                batch = []
        # the last partial batch is dropped: every step sees batch_size samples per rank


def epoch_loader(dataset: EpochBatches, workers: int, pin_memory: bool) -> Iterable[dict[str, Any]]:
    if workers == 0:
        return dataset
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2,
    )
