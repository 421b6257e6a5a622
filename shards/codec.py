"""Member encodings of a sample inside a shard (plain WebDataset: ``KEY.SUFFIX`` tar members).

| member | holds | encoding |
|---|---|---|
| ``KEY.json`` | meta | UTF-8 JSON, sorted keys (byte-stable) |
| ``KEY.000.jpg`` ... | frame t of T | baseline JPEG, 4:2:0 (chosen by measurement: ``benchmarks.shards``) |
| ``KEY.t00.png`` ... | target k of K (maskahand) | 8-bit RGB PNG: lossless (``shards.target_format``) |
| ``KEY.h00.png`` ... | heatmap k of K (maskahand) | 16-bit grayscale PNG of round(h * 65535) |

Targets are stored losslessly by default: a decoded target equals ``synth.recipe.replay``'s render
exactly. JPEG would shift the noise-filled regions by tens of grey levels and smooth away their fine
detail, so the model would train on other images than the recipe makes; a PNG target costs ~4x the
bytes of a q90 JPEG and decodes ~5x slower (``benchmarks.shards``). ``shards.target_format=jpeg``
writes ``KEY.t00.jpg`` members (q ``jpeg_quality``) as older shards hold; readers accept both.

Heatmaps are smooth blurred boxes: a 16-bit PNG keeps them to 7.6e-6 (half a step of 1/65535),
far below float16's 4.9e-4 step near 1.0, and deflate shrinks the mostly-flat maps to a few kB where a
float16 ``.npy`` always costs 2 bytes per pixel. Every encoder here is deterministic, so the same
tensors always give the same bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg, decode_png, encode_jpeg, encode_png

from .schema import (
    KIND_OF_SCHEMA,
    ClipSample,
    MaskAHandSample,
    Sample,
    SchemaError,
)

HEATMAP_SCALE = 65535.0
_FRAME_RE = re.compile(r"^(\d{3})\.jpg$")
_TARGET_RE = re.compile(r"^t(\d{2})\.(?:jpg|png)$")
TARGET_FORMATS = ("png", "jpeg")
PNG_LEVEL = 1  # zlib level: higher levels save ~2% on noisy targets and encode several times slower
_HEATMAP_RE = re.compile(r"^h(\d{2})\.png$")


class DecodeError(ValueError):
    """A member of a sample cannot be decoded."""


def dumps_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def encode_jpegs(images: torch.Tensor, quality: int) -> list[bytes]:
    """uint8 (N,3,H,W) RGB -> one JPEG per image."""
    return [encode_jpeg(img.contiguous(), quality=quality).numpy().tobytes() for img in images.cpu()]


def decode_jpeg_bytes(data: bytes, name: str = "jpeg") -> torch.Tensor:
    """JPEG bytes -> uint8 (3,H,W) RGB; :class:`DecodeError` if they are not a decodable JPEG."""
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DecodeError(f"{name}: not a decodable JPEG ({e})") from None


def encode_pngs(images: torch.Tensor) -> list[bytes]:
    """uint8 (N,3,H,W) RGB -> one lossless 8-bit PNG per image."""
    return [
        encode_png(img.contiguous(), compression_level=PNG_LEVEL).numpy().tobytes() for img in images.cpu()
    ]


def decode_image_bytes(data: bytes, name: str) -> torch.Tensor:
    """A PNG or JPEG member (by its name's suffix) -> uint8 (3,H,W) RGB; :class:`DecodeError` otherwise."""
    if not name.endswith(".png"):
        return decode_jpeg_bytes(data, name)
    try:
        return decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DecodeError(f"{name}: not a decodable PNG ({e})") from None


def encode_heatmap(heatmap: torch.Tensor) -> bytes:
    """float (H,W) in [0, 1] -> 16-bit grayscale PNG."""
    q = (heatmap.detach().cpu().double().clamp(0, 1) * HEATMAP_SCALE).round().numpy().astype(np.uint16)
    ok, buf = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("OpenCV failed to encode a heatmap PNG")
    return buf.tobytes()


def decode_heatmap(data: bytes, name: str = "heatmap") -> torch.Tensor:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 2:
        raise DecodeError(f"{name}: not a 16-bit grayscale PNG")
    return torch.from_numpy(img.astype(np.float32) / HEATMAP_SCALE)


def encode_sample(sample: Sample, jpeg_quality: int, target_format: str = "png") -> list[tuple[str, bytes]]:
    """(member suffix, bytes) pairs in the order they are written to the tar."""
    members = [("json", dumps_json(sample.meta))]
    members += [(f"{t:03d}.jpg", b) for t, b in enumerate(encode_jpegs(sample.frames, jpeg_quality))]
    if isinstance(sample, MaskAHandSample):
        if target_format == "png":
            members += [(f"t{k:02d}.png", b) for k, b in enumerate(encode_pngs(sample.targets))]
        elif target_format == "jpeg":
            encoded = encode_jpegs(sample.targets, jpeg_quality)
            members += [(f"t{k:02d}.jpg", b) for k, b in enumerate(encoded)]
        else:
            raise ValueError(f"unknown target_format {target_format!r} (expected one of {TARGET_FORMATS})")
        members += [(f"h{k:02d}.png", encode_heatmap(h)) for k, h in enumerate(sample.heatmaps)]
    return members


def _numbered(raw: dict[str, Any], pattern: re.Pattern[str]) -> list[str]:
    found = sorted((int(m.group(1)), name) for name in raw if (m := pattern.match(name)))
    if [i for i, _ in found] != list(range(len(found))):
        raise DecodeError(f"members {[n for _, n in found]} are not numbered 0..N-1 without gaps")
    return [name for _, name in found]


def decode_meta(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``.json`` member of a raw sample, parsed; :class:`DecodeError` naming ``where`` otherwise."""
    if "json" not in raw:
        raise DecodeError(f"{where}: no .json member")
    try:
        return json.loads(raw["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(f"{where}: .json is not valid JSON ({e})") from None


def frame_members(raw: dict[str, Any]) -> list[str]:
    """Names of the frame members (``000.jpg``, ``001.jpg``, ...) of a raw sample, in order."""
    names = _numbered(raw, _FRAME_RE)
    if not names:
        raise DecodeError("no frame members (000.jpg ...)")
    return names


def decode_raw_sample(raw: dict[str, Any]) -> Sample:
    """A WebDataset raw sample (``__key__``, ``json``, ``000.jpg``..., bytes values) -> typed sample."""
    key = raw.get("__key__", "?")
    where = f"{raw.get('__url__', '?')}: sample {key}"
    meta = decode_meta(raw, where)
    if not isinstance(meta, dict) or meta.get("schema") not in KIND_OF_SCHEMA:
        raise SchemaError(
            f"unknown schema {meta.get('schema') if isinstance(meta, dict) else meta!r}", key=key
        )
    try:
        frame_names = frame_members(raw)
        frames = _stack([decode_jpeg_bytes(raw[n], n) for n in frame_names], "frames")
        if KIND_OF_SCHEMA[meta["schema"]] == "clip":
            return ClipSample(key=key, frames=frames, meta=meta)
        target_names = _numbered(raw, _TARGET_RE)
        heatmap_names = _numbered(raw, _HEATMAP_RE)
        if not target_names or len(target_names) != len(heatmap_names):
            raise DecodeError(f"{len(target_names)} target members and {len(heatmap_names)} heatmap members")
        targets = _stack([decode_image_bytes(raw[n], n) for n in target_names], "targets")
        heatmaps = _stack([decode_heatmap(raw[n], n) for n in heatmap_names], "heatmaps")
    except DecodeError as e:
        raise DecodeError(f"{where}: {e}") from None
    return MaskAHandSample(key=key, frames=frames, targets=targets, heatmaps=heatmaps, meta=meta)


def _stack(items: list[torch.Tensor], name: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) != 1:
        raise DecodeError(f"{name} have different sizes {sorted(shapes)}")
    return torch.stack(items)
