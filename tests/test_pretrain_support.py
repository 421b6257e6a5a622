"""Helpers for the pretrain/trainer tests (no tests here): small real shards and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import torch

from maskahand.core.config import ShardWriterConfig, SynthConfig
from maskahand.shards.schema import CLIP_SCHEMA, ClipSample
from maskahand.shards.writer import ShardWriter

H, W = 48, 64
SIZE = 64  # model.image_size of the tiny configuration

TINY = [
    "model.hidden=32",
    "model.heads=1",
    f"model.image_size={SIZE}",
    "model.max_q_thw=[1,16,16]",
    "model.max_kv_thw=[4,8,8]",
    "train.num_frames=4",
    "train.batch_size=2",
    "train.workers=0",
    "train.shuffle=4",
    "train.device=cpu",
    "train.log_every=1",
    "train.image_every=0",
    "optim.precision=fp32",
]


def clip_sample(key: str, seed: int, frames: int, box: list[float], pos: int = 0) -> ClipSample:
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (frames, 3, H, W), dtype=torch.uint8, generator=g)
    x1, y1, x2, y2 = (int(v) for v in box)
    video[:, :, y1:y2, x1:x2] = torch.tensor([220, 160, 120], dtype=torch.uint8)[:, None, None]  # a "hand"
    detections: list[list[dict]] = [[] for _ in range(frames)]
    detections[pos] = [{"box": box, "state": "contact", "score": 0.995}]
    meta = {
        "schema": CLIP_SCHEMA,
        "video_id": f"video{seed % 3}.mp4",
        "video_path": f"/videos/video{seed % 3}.mp4",
        "fps": 5.0,
        "frame_indices": [6 * t for t in range(frames)],
        "timestamps": [t / 5 for t in range(frames)],
        "width": W,
        "height": H,
        "source_width": W,
        "source_height": H,
        "detections": detections,
        "interacting": [pos],
        "rule": {"contact_score": 0.99, "unknown_rule": "score", "unknown_score": 0.9},
        "detector": {"name": "test", "version": "1"},
    }
    return ClipSample(key=key, frames=video, meta=meta)


def make_clips(n: int, seed: int = 0) -> list[ClipSample]:
    """``n`` clips of 3 or 4 frames (mixed lengths) with one hand box each."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for i in range(n):
        x1 = int(torch.randint(0, W - 16, (1,), generator=g))
        y1 = int(torch.randint(0, H - 16, (1,), generator=g))
        box = [float(x1), float(y1), float(x1 + 14), float(y1 + 14)]
        clips.append(clip_sample(f"clip{seed:02d}_{i:03d}", seed * 1000 + i, 3 + i % 2, box, pos=i % 3))
    return clips


def write_clip_shards(out: Path, n: int, per_shard: int = 4, seed: int = 0) -> Path:
    with ShardWriter(out, "clips", ShardWriterConfig(max_samples=per_shard), kind="clip") as w:
        for c in make_clips(n, seed):
            w.write(c)
    return out


def write_maskahand_shards(out: Path, n: int, per_shard: int = 4, seed: int = 0, variants: int = 2) -> Path:
    """Real MaskAHand shards: our clips through the synthesis recipe, written by the shard writer."""
    from maskahand.synth.pipeline import synthesize_clips

    cfg = SynthConfig(
        variants=variants, output_size=SIZE, blur_kernel=15, batch_size=8, device="cpu", seed=seed
    )
    samples, skipped = synthesize_clips(make_clips(n, seed), cfg, "clips-000000.tar")
    assert not skipped
    with ShardWriter(out, "maskahand", ShardWriterConfig(max_samples=per_shard), kind="maskahand") as w:
        for s in samples:
            w.write(s)
    return out
