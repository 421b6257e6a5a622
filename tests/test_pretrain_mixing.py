"""Pretraining batches mix the videos of a collection stored one shard series per video (as ``mine``
writes it): the reader reshuffles shard order per epoch, interleaves ``train.open_shards`` shards per
worker and makes each batch from every worker's samples; ``data/videos_per_batch`` in ``log.jsonl``
counts the distinct videos of each logged step's global batch."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from maskahand.core.config import ShardWriterConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.mixing import (  # noqa: E402
    videos_per_batch_before,
    videos_per_batch_now,
    write_video_collection,
)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    # 4 "long" videos x 64 clips in shards of 32: two shards per video, each walked in order by mine
    return write_video_collection(tmp_path_factory.mktemp("long"), 4, 64, ShardWriterConfig(max_samples=32))


def test_a_batch_of_16_mixes_the_four_videos_of_a_long_video_collection(long_videos, torch_one_thread):
    """The issue's goal at a small scale: 4 videos, global batch 16, default reader settings: mean >= 3.5
    (the reader before made a batch from one worker's one or two shards)."""
    now = videos_per_batch_now(long_videos, 16)
    assert len(now) == 16  # the whole epoch: 256 samples / 16
    assert statistics.fmean(now) >= 3.5, now
    before = videos_per_batch_before(long_videos, 16)
    assert statistics.fmean(before) < 2.5, before  # the collection is the hard case
    # two ranks of 8 (the global batch counts both) mix as well, and every epoch reorders the shards
    two = videos_per_batch_now(long_videos, 16, world=2)
    assert len(two) == 16 and statistics.fmean(two) >= 3.5, two


def test_one_stream_interleaves_its_open_shards(long_videos, torch_one_thread):
    """Without DataLoader workers, and a shuffle buffer (8) too small to mix 64-clip videos, it is
    ``train.open_shards`` that mixes them."""
    assert (
        statistics.fmean(videos_per_batch_now(long_videos, 16, "train.workers=0", "train.shuffle=8")) >= 3.5
    )
    one_open = videos_per_batch_now(
        long_videos, 16, "train.workers=0", "train.shuffle=8", "train.open_shards=1"
    )
    assert statistics.fmean(one_open) < 2.5, one_open


def test_shard_order_changes_per_epoch_the_same_on_every_rank(long_videos):
    from maskahand.shards.reader import maskahand_dataset

    def order(epoch: int, rank: int) -> list[str]:
        ds = maskahand_dataset(
            long_videos, shuffle_shards=True, rank=rank, world_size=2, seed=5, validate=False
        )
        ds.set_epoch(epoch)
        return [s.key for s in ds]

    e0, e1 = [order(0, 0), order(0, 1)], [order(1, 0), order(1, 1)]
    for ranks in (e0, e1):  # the ranks split the shards: together every sample once
        assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) + len(ranks[1]) == 256
    assert e0[0] != e1[0]  # a new shard order each epoch
    assert order(0, 0) == e0[0]  # seeded: the same again


def test_interleaving_keeps_the_split_a_partition_when_ranks_share_shards(long_videos):
    """Fewer shards (8) than ranks (12): every rank reads every shard and keeps every 12th sample, so the
    interleaved stream must be the same on all of them (seeded without rank) for the split to stay exact."""
    from maskahand.shards.reader import maskahand_dataset

    seen: list[str] = []
    for rank in range(12):
        ds = maskahand_dataset(long_videos, open_shards=4, rank=rank, world_size=12, seed=1, validate=False)
        ds.set_epoch(0)
        seen += [s.key for s in ds]
    assert len(seen) == 256 and len(set(seen)) == 256


@pytest.mark.slow
def test_every_logged_step_carries_the_videos_of_its_global_batch(long_videos, tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from test_pretrain_support import TINY

    settings = [o for o in TINY if not o.startswith(("train.batch_size", "train.workers", "train.shuffle"))]
    settings += ["train.batch_size=8", "train.workers=2", "train.max_iters=3", "train.ckpt_every=100"]
    cmd = [
        sys.executable,
        "-m",
        "maskahand.cli",
        "pretrain",
        "--shards",
        str(long_videos),
        "--out",
        str(tmp_path / "run"),
        *settings,
    ]
    proc = subprocess.run(
        cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if x.strip()]
    logged = [r["data/videos_per_batch"] for r in recs if "train/loss" in r]
    # the same reader, read directly: the first three batches of epoch 0
    expected = videos_per_batch_now(long_videos, 8, *[o for o in settings if o.startswith("train.")])[:3]
    assert logged == expected and min(logged) >= 3, (logged, expected)
