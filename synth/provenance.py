"""Re-create a stored MaskAHand sample's targets from its provenance and the clip shards it came from.

A sample's meta names its source: ``clip_shard`` (the clip shard's file name) and ``clip_key`` (the
sample inside it); each entry of ``targets`` holds every random choice of one target. So
``replay_sample(meta, CLIPS)`` needs only the sample and the clip output folder (``mine``'s ``--out``,
or the folder holding the clip shards). Frames are decoded on the CPU: the result equals the stored
targets exactly for shards synthesized on the CPU (nvJPEG may decode a frame a level differently).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import torch

from ..shards.codec import DecodeError, decode_jpeg_bytes, decode_meta
from ..shards.schema import validate_clip_meta
from . import recipe as rc


def clip_shard_path(clips: str | Path, name: str) -> Path:
    """``name`` inside the clip output folder ``clips`` (its ``shards/`` sub-folder for a mine output)."""
    if not isinstance(name, str) or not name.endswith(".tar") or "/" in name or name.startswith("."):
        raise ValueError(f"meta.clip_shard must be a shard file name (NAME.tar), got {name!r}")
    clips = Path(clips)
    for folder in (clips, clips / "shards"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"clip shard {name} is neither in {clips} nor in {clips / 'shards'}")


def read_clip_frames(
    shard: Path, key: str, positions: set[int]
) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
    """The meta of sample ``key`` of a clip shard and its frames at ``positions`` (decoded, CPU)."""
    wanted = {f"{key}.json"} | {f"{key}.{p:03d}.jpg" for p in positions}
    raw: dict[str, bytes] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if member.name in wanted:
                f = tar.extractfile(member)
                raw[member.name] = f.read() if f is not None else b""
    where = f"{shard}: sample {key}"
    if f"{key}.json" not in raw:
        raise KeyError(f"{shard} holds no sample {key!r}")
    meta = decode_meta({"json": raw[f"{key}.json"]}, where)
    missing = sorted(n for n in wanted if n not in raw)
    if missing:
        raise DecodeError(f"{where}: no member(s) {missing}")
    frames = {p: decode_jpeg_bytes(raw[f"{key}.{p:03d}.jpg"], f"{where} frame {p}") for p in positions}
    return meta, frames


def replay_sample(meta: dict[str, Any], clips: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``uint8 (K, 3, S, S)`` and heatmaps ``float32 (K, S, S)`` of a stored sample, re-rendered."""
    for name in ("clip_shard", "clip_key", "targets"):
        if name not in meta:
            raise KeyError(
                f"sample meta has no {name!r}: it was synthesized before provenance named its source"
            )
    shard = clip_shard_path(clips, meta["clip_shard"])
    params = meta["targets"]
    clip_meta, frames = read_clip_frames(shard, meta["clip_key"], {int(p["frame"]) for p in params})
    height, width = next(iter(frames.values())).shape[-2:]
    num_frames = len(clip_meta.get("frame_indices", []))
    validate_clip_meta(clip_meta, num_frames, height, width, key=meta["clip_key"], shard=str(shard))
    chosen = [frames[int(p["frame"])] for p in params]
    targets, heatmaps = rc.render_grouped(chosen, params, batch_size=len(params))
    return torch.stack(targets), torch.stack(heatmaps)
