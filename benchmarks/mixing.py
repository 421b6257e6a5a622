"""How many source videos a pretraining batch mixes: ``data/videos_per_batch`` over one epoch.

    python -m benchmarks.mixing            (also: make bench-mixing)

Builds two synthetic collections with the real shard writer, one shard series per video as ``mine``
writes them (tiny 16 x 16 frames, so the reader's order, not decoding, is what is measured):

- 4 long videos x 300 clips, global batch 16 (goal: mean >= 3.5 distinct videos per batch);
- 200 videos x 50 clips, global batch 32 (goal: mean >= 24).

Each is read by the real pretraining reader (``PretrainTask.train_batches``, default ``train.*``
settings: 4 DataLoader workers, shuffle buffer 200, ``train.open_shards``, one process) for one epoch,
and, as the baseline, the way the reader worked before (shards in order, one open at a time, each
DataLoader worker making whole batches through its 200-sample buffer).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from maskahand.core.config import PretrainRecipe, ShardWriterConfig
from maskahand.core.configbase import load_config
from maskahand.shards.reader import buffer_shuffle, list_shards, maskahand_dataset
from maskahand.shards.schema import MASKAHAND_SCHEMA, MaskAHandSample, make_key
from maskahand.shards.writer import ShardWriter

SIZE = 16  # frames, targets and model.image_size: nothing is resized


def tiny_sample(video: str, index: int) -> MaskAHandSample:
    g = torch.Generator().manual_seed(index)
    frames = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    heat = torch.zeros(1, SIZE, SIZE)
    heat[0, 4:8, 4:8] = 1.0
    meta = {
        "schema": MASKAHAND_SCHEMA,
        "clip_key": make_key(video, index * 16),
        "video_id": video,
        "size": SIZE,
        "targets": [
            {
                "frame": 0,
                "hand_boxes": [[4.0, 4.0, 8.0, 8.0]],
                "mask_boxes": [[4.0, 4.0, 8.0, 8.0]],
                "homography": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                "crop": [0.0, 0.0, float(SIZE), float(SIZE)],
                "seed": index,
            }
        ],
    }
    return MaskAHandSample(make_key(video, index * 16), frames, frames[:1].clone(), heat, meta)


def write_video_collection(out: Path, videos: int, clips: int, cfg: ShardWriterConfig | None = None) -> Path:
    """``videos`` x ``clips`` tiny MaskAHand samples, each video in its own shard series (as ``mine`` writes:
    a new shard per video, rolled at the writer's limits)."""
    for v in range(videos):
        with ShardWriter(out, f"video{v:04d}", cfg or ShardWriterConfig(), kind="maskahand") as w:
            for c in range(clips):
                w.write(tiny_sample(f"video{v:04d}.mp4", c))
    return out


def recipe(batch: int, *overrides: str) -> PretrainRecipe:
    return load_config(
        PretrainRecipe,
        None,
        [f"train.batch_size={batch}", f"model.image_size={SIZE}", "train.num_frames=2", *overrides],
    )


def videos_per_batch_now(shards: Path, batch: int, *overrides: str, world: int = 1) -> list[int]:
    """Distinct videos in every global batch of epoch 0, read by the pretraining reader on ``world`` ranks."""
    from maskahand.pretrain.task import PretrainTask
    from maskahand.runtime.distributed import DistInfo
    from maskahand.trainer import TrainContext

    r = recipe(batch, *overrides)
    streams = []
    for rank in range(world):
        task = PretrainTask(r, shards=[str(shards)])
        info = DistInfo(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
        task.setup(TrainContext(dist=info, out_dir=shards, optim=r.optim, train=r.train, autocast_dtype=None))
        streams.append((task, iter(task.train_batches(0, 0))))
    counts = []
    while True:
        parts = [next(it, None) for _, it in streams]
        if any(p is None for p in parts):  # the engine ends the epoch when any rank runs dry
            return counts
        counts.append(len({meta["video_id"] for p in parts for meta in p["meta"]}))


def videos_per_batch_before(shards: Path, batch: int, workers: int = 4, buffer: int = 200) -> list[int]:
    """The reader before: shards split over workers in order, read one at a time, batches made per worker
    from its 200-sample buffer, handed out round-robin."""
    urls = list_shards(shards)
    per_worker = []
    for w in range(workers):
        ds = maskahand_dataset(urls[w::workers], split_by_node=False, split_by_worker=False, validate=False)
        ids = [s.meta["video_id"] for s in ds]
        ids = list(buffer_shuffle(ids, buffer, random.Random(f"0/0/0/{w}")))
        per_worker.append([len(set(ids[i : i + batch])) for i in range(0, len(ids) - batch + 1, batch)])
    return [c for group in zip(*per_worker) for c in group] + [
        c for lst in per_worker for c in lst[min(map(len, per_worker)) :]
    ]


def summary(counts: list[int]) -> dict[str, Any]:
    return {
        "batches": len(counts),
        "mean": round(statistics.fmean(counts), 2) if counts else 0.0,
        "min": min(counts) if counts else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--work", help="folder for the synthetic shards (default: a temporary one)")
    args = ap.parse_args(argv)
    cases = [("4 videos x 300 clips", 4, 300, 16, 3.5), ("200 videos x 50 clips", 200, 50, 32, 24.0)]
    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name, videos, clips, batch, goal in cases:
            t0 = time.perf_counter()
            shards = write_video_collection(Path(tmp) / f"v{videos}", videos, clips)
            t1 = time.perf_counter()
            now = summary(videos_per_batch_now(shards, batch))
            t2 = time.perf_counter()
            before = summary(videos_per_batch_before(shards, batch))
            row = {
                "collection": name,
                "shards": len(list_shards(shards)),
                "global_batch": batch,
                "now": now,
                "before": before,
                "goal": goal,
                "met": now["mean"] >= goal,
                "write_s": round(t1 - t0, 1),
                "read_s": round(t2 - t1, 1),
            }
            results.append(row)
            print(
                f"{name} ({row['shards']} shards), batch {batch}: videos/batch mean {now['mean']} "
                f"(min {now['min']}, {now['batches']} batches) vs before {before['mean']} (min "
                f"{before['min']}); goal >= {goal}: {'met' if row['met'] else 'NOT met'}",
                flush=True,
            )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
