"""Reading clip shards for synthesis, with JPEG decoding on the GPU when synthesis runs there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from ..core import storage
from ..runtime.distributed import resolve_device as resolve
from ..shards.codec import DecodeError, decode_jpeg_bytes, decode_meta, frame_members
from ..shards.schema import ClipSample, validate_clip_meta


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit ``cuda`` without a GPU is an error."""

    return resolve(name, key="synth.device")


def decode_frames(blobs: list[bytes], device: torch.device, where: str) -> torch.Tensor:
    """JPEG bytes -> uint8 (T,3,H,W) on ``device``; nvJPEG batch decode on CUDA, libjpeg on the CPU."""
    if device.type != "cuda":
        return torch.stack([decode_jpeg_bytes(b, f"{where} frame {t}") for t, b in enumerate(blobs)])

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        frames = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise DecodeError(f"{where}: not decodable on {device} ({e})") from None
    return torch.stack(frames)


def read_clip_shard(path: str | Path, device: torch.device) -> Iterator[ClipSample]:
    """Clip samples of one shard in stored order, frames decoded onto ``device`` and meta validated.

    Errors name the shard and the sample: a corrupt input shard stops its task with a clear message.
    """
    # deferred: webdataset at import
    import webdataset as wds

    # deferred: webdataset at import
    from ..shards.reader import tar_samples

    if storage.is_url(str(path)):  # an object-store shard, streamed
        if not storage.exists(str(path)):
            raise storage.ObjectNotFoundError(str(path), "clip shard does not exist")
        shown = storage.redact(str(path))
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: clip shard does not exist")
        shown = str(path)
    pipeline = wds.DataPipeline(wds.SimpleShardList([str(path)]), tar_samples(wds.reraise_exception))
    for raw in pipeline:
        key = raw.get("__key__", "?")
        where = f"{shown}: sample {key}"
        meta = decode_meta(raw, where)
        try:
            names = frame_members(raw)
        except DecodeError as e:
            raise DecodeError(f"{where}: {e}") from None
        frames = decode_frames([raw[n] for n in names], device, where)
        t, _, h, w = frames.shape
        validate_clip_meta(meta, t, h, w, key=key, shard=shown)
        yield ClipSample(key=key, frames=frames, meta=meta)
