"""Readers: webdataset pipelines that yield typed :class:`ClipSample` / :class:`MaskAHandSample`.

Shards are split first by distributed rank, then by DataLoader worker, so with ``resampled=False``
every sample is read exactly once per epoch across all ranks and workers. When there are fewer
shards than ranks x workers, every consumer reads all shards and keeps every n-th sample instead
(reading a tar is cheap next to decoding, which only happens for kept samples), so no rank runs dry.
With ``shuffle > 0`` the shard order changes per epoch with a seed shared by all ranks, so the split
stays a partition, and samples pass a buffer of that size seeded from (seed, epoch, rank, worker): the same
seed and epoch give the same order. ``resampled=True`` draws shards with replacement forever (training by
iterations); each rank and worker draws from its own deterministic stream. Call
``dataset.set_epoch(e)`` before each epoch so that shard order and resampling streams change between
epochs (also inside DataLoader workers, which get a fresh copy of the dataset every epoch).

``open_shards > 1`` keeps that many of a consumer's shards open at once and interleaves their samples
(each next sample from an open shard drawn with a generator seeded from (seed, epoch, rank, worker), or
from (seed, epoch) alone where consumers split by sample, as they must all read the same stream): with
one shard per video, a consumer's stream then mixes that many videos instead of walking one video at a
time. ``shuffle_shards`` reshuffles the shard order per epoch without a sample buffer (default: with one).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.utils.data
import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..core import storage
from ..runtime.distributed import rank_world
from .codec import decode_raw_sample
from .schema import (
    SCHEMAS,
    ClipSample,
    MaskAHandSample,
    Sample,
    SampleKind,
    SchemaError,
    validate_sample,
)

log = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]


def list_shards(urls_or_dir: str | Path | Iterable[str | Path]) -> list[str]:
    """A directory -> its finished ``*.tar`` shards, sorted; a file, brace pattern or list -> expanded.

    A stage's output folder whose shards live in ``shards/`` (as ``mine`` writes them) is accepted too.
    An object-store URL (``s3://bucket/clips``, a ``*.tar`` URL, a glob or a brace pattern) works the same.
    """
    if isinstance(urls_or_dir, str) and storage.is_url(urls_or_dir):
        return _list_url_shards(urls_or_dir)
    if isinstance(urls_or_dir, (str, Path)):
        p = Path(urls_or_dir)
        if p.is_dir() and not any(p.glob("*.tar")) and (p / "shards").is_dir():
            p = p / "shards"
        if p.is_dir():
            urls = sorted(str(q) for q in p.glob("*.tar"))
            if not urls:
                raise FileNotFoundError(f"{p}: no *.tar shards in this directory")
            return urls
        if "://" not in str(p) and not str(p).startswith("pipe:") and "{" not in str(p) and not p.exists():
            raise FileNotFoundError(f"{p}: no such shard or directory")
        urls = wds.shardlists.expand_urls(str(urls_or_dir))
    else:
        urls = [str(u) for u in urls_or_dir]
    if not urls:
        raise FileNotFoundError(f"no shards given ({urls_or_dir!r})")
    return urls


def _list_url_shards(url: str) -> list[str]:
    if "{" in url:
        return list(wds.shardlists.expand_urls(url))
    if any(c in url for c in "*?["):
        urls = [u for u in storage.glob(url) if u.endswith(".tar")]
    elif url.endswith(".tar"):
        if not storage.exists(url):
            raise storage.ObjectNotFoundError(url, "no such shard")
        return [url]
    else:
        urls = storage.glob(storage.join(url, "*.tar")) or storage.glob(storage.join(url, "shards", "*.tar"))
    if not urls:
        raise storage.ObjectNotFoundError(url, "no *.tar shards under this URL")
    return sorted(urls)


def open_shards(
    sources: Iterable[dict[str, Any]], handler: Callable[[Exception], bool] = wds.reraise_exception
) -> Iterator[dict[str, Any]]:
    """webdataset's url_opener, with object-store URLs streamed through fsspec (webdataset has no ``s3://``
    handler); local paths and ``pipe:`` URLs go to webdataset's own opener as before."""
    for source in sources:
        url = source["url"]
        try:
            if storage.is_url(url):
                stream = storage.open_input(url, "rb", block_size=SHARD_BLOCK)
            else:
                stream = wds.gopen(url)
            source.update(stream=stream)
            yield source
        except Exception as exn:
            exn.args = (*exn.args, url)
            if handler(exn):
                continue
            break


# Read-ahead of a shard streamed from an object store: a few requests per shard, a bounded buffer.
SHARD_BLOCK = 8 << 20


def tar_samples(handler: Callable[[Exception], bool] = wds.reraise_exception) -> Callable[..., Any]:
    """Pipeline stage like ``wds.tarfile_to_samples``, opening shards with :func:`open_shards`."""

    def stage(sources: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        files = tar_file_expander(open_shards(sources, handler), handler=handler)
        return group_by_keys(files, handler=handler)

    return stage


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values win; else :func:`maskahand.runtime.distributed.rank_world` (the process group's,
    else torchrun's environment, else (0, 1))."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        return rank, world_size

    return rank_world()


def worker_and_count() -> tuple[int, int]:

    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _ShardList(IterableDataset):
    """Source stage: the shard URLs of this rank and worker for one epoch (or resampled forever)."""

    def __init__(
        self,
        urls: list[str],
        shuffle: bool,
        resampled: bool,
        split_by_node: bool,
        split_by_worker: bool,
        rank: int | None,
        world_size: int | None,
        seed: int,
        open_shards: int = 1,
    ):
        self.open_shards = open_shards
        self.urls, self.shuffle, self.resampled = urls, shuffle, resampled
        self.split_by_node, self.split_by_worker = split_by_node, split_by_worker
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = -1
        self.fixed_epoch: int | None = None
        self.sample_split: tuple[int, int] | None = None  # (me, consumers) when splitting by sample

    def set_epoch(self, epoch: int) -> None:
        self.fixed_epoch = epoch

    def __iter__(self) -> Iterator[dict[str, str]]:
        # DataLoader workers iterate a fresh copy each epoch, so a self-incremented counter would
        # restart at 0 every epoch there: set_epoch() from the training loop is what varies the order.
        self.epoch = self.fixed_epoch if self.fixed_epoch is not None else self.epoch + 1
        rank, world = rank_and_world(self.rank, self.world_size)
        worker, workers = worker_and_count()
        if self.resampled:
            rng = random.Random(f"{self.seed}/{rank}/{worker}/{self.epoch}")
            while True:
                yield {"url": rng.choice(self.urls)}
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(urls)  # same order on every rank
        if not self.split_by_node:
            rank, world = 0, 1
        if not self.split_by_worker:
            worker, workers = 0, 1
        consumers = world * workers
        if len(urls) < consumers:
            self.sample_split = (rank * workers + worker, consumers)
        else:
            self.sample_split = None
            urls = urls[rank::world][worker::workers]
        for url in urls:
            yield {"url": url}

    def shuffle_stage(self, bufsize: int) -> Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]:
        """Stage: a shuffle buffer of ``bufsize`` seeded from (seed, epoch, rank, worker)."""

        def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            it = iter(samples)
            first = next(it, None)  # pulling one sample runs __iter__, which fixes this epoch
            if first is None:
                return
            rank, _ = rank_and_world(self.rank, self.world_size)
            worker, _ = worker_and_count()
            rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}/samples")
            yield from buffer_shuffle(itertools.chain([first], it), bufsize, rng)

        return stage

    def interleave(self, read: Callable[[Iterable[dict[str, str]]], Iterable[dict[str, Any]]]) -> Any:
        """Stage on the shard URLs: ``read`` (URLs -> raw samples) applied to ``open_shards`` shards at a time,
        their samples interleaved in a seeded random order; a finished shard's place goes to the next one."""
        if self.open_shards <= 1:
            return read

        def stage(urls: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
            pending = iter(urls)
            first = next(pending, None)  # pulling one URL runs __iter__, which fixes epoch and split
            if first is None:
                return
            pending = itertools.chain([first], pending)
            rank, _ = rank_and_world(self.rank, self.world_size)
            worker, _ = worker_and_count()
            # consumers that split by sample must all see the same stream: no rank/worker in the seed then
            me = "" if self.sample_split is not None else f"/{rank}/{worker}"
            rng = random.Random(f"{self.seed}/{self.epoch}{me}/interleave")
            open_: list[Iterator[dict[str, Any]]] = []
            while True:
                while len(open_) < self.open_shards:
                    url = next(pending, None)
                    if url is None:
                        break
                    open_.append(iter(read(iter([url]))))
                if not open_:
                    return
                j = rng.randrange(len(open_))
                sample = next(open_[j], None)
                if sample is None:
                    del open_[j]
                else:
                    yield sample

        return stage

    def keep_mine(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Stage after tar reading: in sample-split mode keep only this consumer's raw samples."""
        for i, sample in enumerate(samples):
            split = self.sample_split  # set by __iter__ before the first sample arrives
            if split is None or i % split[1] == split[0]:
                yield sample


def buffer_shuffle(samples: Iterable[Any], bufsize: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``bufsize`` items (<= 1: unchanged), drawing from ``rng`` only,
    so a seeded ``rng`` gives a reproducible order."""
    if bufsize <= 1:
        yield from samples
        return
    buf: list[Any] = []
    for s in samples:
        buf.append(s)
        if len(buf) >= bufsize:
            j = rng.randrange(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def make_handler(on_error: OnError) -> Callable[[Exception], bool]:
    """``skip``: log the corrupt sample/shard and go on (long runs survive one bad file); ``raise``: stop."""
    if on_error == "raise":
        return wds.reraise_exception
    if on_error != "skip":
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")

    def skip(exn: Exception) -> bool:
        log.warning("skipping unreadable sample: %s: %s", type(exn).__name__, exn)
        return True

    return skip


def _typed(kind: SampleKind, validate: bool) -> Callable[[dict[str, Any]], Sample]:
    expected = ClipSample if kind == "clip" else MaskAHandSample

    def decode(raw: dict[str, Any]) -> Sample:
        sample = decode_raw_sample(raw)
        if not isinstance(sample, expected):
            raise SchemaError(
                f"expected a {SCHEMAS[kind]} sample", key=raw.get("__key__"), shard=raw.get("__url__")
            )
        if validate:
            validate_sample(sample, shard=raw.get("__url__"))
        return sample

    return decode


def shard_dataset(
    urls_or_dir: str | Path | Iterable[str | Path],
    kind: SampleKind,
    shuffle: int = 0,
    resampled: bool = False,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    on_error: OnError = "skip",
    validate: bool = True,
    open_shards: int = 1,
    shuffle_shards: bool | None = None,
) -> wds.DataPipeline:
    """Pipeline of typed samples of ``kind``; ``shuffle`` is the sample shuffle buffer (0: in order).

    ``open_shards``: shards read at once per consumer, samples interleaved; ``shuffle_shards``: a new
    shard order every epoch (default: when ``shuffle`` > 0).

    ``validate`` checks every decoded sample against its schema (a bad one is an error for
    ``on_error``); the check costs far less than the JPEG decoding.
    """
    if shuffle < 0 or open_shards < 1:
        raise ValueError("shuffle must be >= 0 and open_shards >= 1")
    handler = make_handler(on_error)
    shard_list = _ShardList(
        list_shards(urls_or_dir),
        shuffle > 0 if shuffle_shards is None else shuffle_shards,
        resampled,
        split_by_node,
        split_by_worker,
        rank,
        world_size,
        seed,
        open_shards,
    )
    read_tars = tar_samples(handler)
    stages: list[Any] = [shard_list, shard_list.interleave(read_tars), shard_list.keep_mine]
    if shuffle > 0:
        stages.append(shard_list.shuffle_stage(shuffle))
    stages.append(wds.map(_typed(kind, validate), handler=handler))
    pipeline = wds.DataPipeline(*stages)
    pipeline.set_epoch = shard_list.set_epoch  # call before each epoch (shard order, resampling streams)
    return pipeline


def clip_dataset(urls_or_dir: str | Path | Iterable[str | Path], **kwargs: Any) -> wds.DataPipeline:
    """Typed :class:`ClipSample` pipeline (frames uint8 (T,3,H,W)); see :func:`shard_dataset`."""
    return shard_dataset(urls_or_dir, "clip", **kwargs)


def maskahand_dataset(urls_or_dir: str | Path | Iterable[str | Path], **kwargs: Any) -> wds.DataPipeline:
    """Typed :class:`MaskAHandSample` pipeline (frames, targets uint8; heatmaps float32)."""
    return shard_dataset(urls_or_dir, "maskahand", **kwargs)


def collate_samples(samples: list[Sample]) -> dict[str, Any]:
    """DataLoader ``collate_fn``: one batch from samples of one kind; clips of different lengths mix.

    The batch is a dict:

    - ``key``, ``meta``: lists, one entry per sample;
    - ``frames``: uint8 (B, T_max, 3, H, W). Clips shorter than the longest (short videos give clips
      of fewer than 32 frames) are padded with zero frames after their last frame;
    - ``num_frames``: int64 (B,), the real length of each clip (always present);
    - maskahand samples also: ``targets`` uint8 (B, K, 3, S, S) and ``heatmaps`` float32 (B, K, S, S).

    This is the padded form :class:`maskahand.afformer.model.Afformer` takes:
    ``model(batch["frames"], image, num_frames=batch["num_frames"])`` never encodes the padded frames
    and masks them out of the attention, so each sample's result equals running it alone. (The
    authors' loader concatenates the frames of a batch and passes per-sample counts instead.) All
    samples must share H, W (and K, S): a mismatch there is an error naming the keys.
    """
    if not samples:
        raise ValueError("collate_samples got an empty batch")

    kinds = {type(s).__name__ for s in samples}
    if len(kinds) != 1:
        raise ValueError(f"cannot batch samples of different kinds {sorted(kinds)}")
    batch: dict[str, Any] = {"key": [s.key for s in samples], "meta": [s.meta for s in samples]}
    lengths = [int(s.frames.shape[0]) for s in samples]
    shapes = {tuple(s.frames.shape[1:]) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"cannot batch frames of different sizes {sorted(shapes)} (keys {batch['key']})")
    frames = samples[0].frames.new_zeros((len(samples), max(lengths), *shapes.pop()))
    for i, s in enumerate(samples):
        frames[i, : lengths[i]] = s.frames
    batch["frames"] = frames
    batch["num_frames"] = torch.tensor(lengths, dtype=torch.long)
    names = ["targets", "heatmaps"] if isinstance(samples[0], MaskAHandSample) else []
    for name in names:
        tensors = [getattr(s, name) for s in samples]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(
                f"cannot stack {name} of different shapes {sorted(shapes)} (keys {batch['key']})"
            )
        batch[name] = torch.stack(tensors)
    return batch
