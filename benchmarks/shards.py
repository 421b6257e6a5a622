"""Measure frame encodings for shards on real footage: bytes per sample and decoded samples/s per core.

    python -m benchmarks.shards --data ../shared/data      (also: make bench-shards)

Clips: up to 32 frames sampled at 5 fps from every shared video (and the EPIC frame folder), stored
like ``mine`` stores them (longer side 480) and like ``synth`` stores them (256 x 256). Candidates:
one JPEG per frame (the shard format), one H.264 MP4 per clip (PyAV/libx264, two CRFs), and a raw
uint8 ``.npy`` blob. Decoding runs on one thread; PSNR is against the raw frames. Also compares the
two heatmap encodings (16-bit PNG vs float16 ``.npy``) on blurred hand-box heatmaps, and the two
target encodings (lossless PNG, the default, vs JPEG q90) on MaskAHand targets rendered from the
same footage: bytes per target and per sample (K = 4), decode rate, and the difference to the render.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from maskahand.shards.codec import (
    decode_heatmap,
    decode_image_bytes,
    decode_jpeg_bytes,
    encode_heatmap,
    encode_jpegs,
    encode_pngs,
)

CLIP_LENGTH = 32
FPS = 5.0


def _resize(img: np.ndarray, max_side: int | None, square: int | None) -> np.ndarray:
    if square is not None:
        return cv2.resize(img, (square, square), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    size = (max(2, round(w * scale)) // 2 * 2, max(2, round(h * scale)) // 2 * 2)  # even: yuv420p needs it
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def read_clip(path: Path, max_side: int | None = 480, square: int | None = None) -> np.ndarray:
    """Up to 32 RGB frames (N,H,W,3) sampled at 5 fps from a video file or a frame folder."""
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = sorted(path.glob("*.jpg"))
        step = max(1, round(10 / FPS))  # the shared EPIC folder holds every 6th frame of 60 fps
        for f in files[::step][:CLIP_LENGTH]:
            frames.append(_resize(cv2.imread(str(f))[:, :, ::-1], max_side, square))
    else:
        with av.open(str(path)) as container:
            next_t = None
            for frame in container.decode(video=0):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if next_t is None:
                    next_t = t
                if t + 1e-6 < next_t:
                    continue
                next_t += 1.0 / FPS
                frames.append(_resize(frame.to_ndarray(format="rgb24"), max_side, square))
                if len(frames) >= CLIP_LENGTH:
                    break
    return np.stack(frames)


def encode_mp4(frames: np.ndarray, crf: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(5))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        stream.codec_context.thread_count = 1
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def decode_mp4(data: bytes) -> torch.Tensor:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


def encode_jpeg_members(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    return encode_jpegs(torch.from_numpy(frames).permute(0, 3, 1, 2), quality)


def decode_jpeg_members(members: list[bytes]) -> torch.Tensor:
    return torch.stack([decode_jpeg_bytes(m) for m in members])


def encode_npy(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames.transpose(0, 3, 1, 2))
    return buf.getvalue()


def decode_npy(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _decode_all(dec: Callable[[object], object], encoded: list) -> list:
    return [dec(e) for e in encoded]


def _rate(fn: Callable[[], object], n_items: int, min_seconds: float) -> float:
    fn()  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return runs * n_items / elapsed


def bench_frames(clips: list[np.ndarray], min_seconds: float) -> list[dict[str, object]]:
    raw = [torch.from_numpy(c).permute(0, 3, 1, 2) for c in clips]
    candidates: dict[
        str, tuple[Callable[[np.ndarray], object], Callable[[object], torch.Tensor], Callable]
    ] = {
        "jpeg-per-frame q90": (encode_jpeg_members, decode_jpeg_members, lambda e: sum(len(m) for m in e)),
        "mp4 h264 crf18": (lambda c: encode_mp4(c, 18), decode_mp4, len),
        "mp4 h264 crf23": (lambda c: encode_mp4(c, 23), decode_mp4, len),
        "npy uint8": (encode_npy, decode_npy, len),
    }
    rows = []
    for name, (enc, dec, size) in candidates.items():
        encoded = [enc(c) for c in clips]
        decoded = [dec(e) for e in encoded]
        rows.append(
            {
                "encoding": name,
                "bytes_per_sample": round(sum(size(e) for e in encoded) / len(clips)),
                "decoded_samples_per_s_per_core": round(
                    _rate(partial(_decode_all, dec, encoded), len(clips), min_seconds), 2
                ),
                "encoded_samples_per_s_per_core": round(
                    _rate(partial(_decode_all, enc, clips), len(clips), min_seconds), 2
                ),
                "psnr_db": round(float(np.mean([psnr(r, d) for r, d in zip(raw, decoded)])), 2),
                "exact_frames": all(tuple(r.shape) == tuple(d.shape) for r, d in zip(raw, decoded)),
            }
        )
    return rows


def bench_reader(clips: list[np.ndarray], min_seconds: float) -> dict[str, object]:
    """The whole read path on shards the real writer made: tar -> JSON + JPEG members -> ClipSample."""
    from maskahand.shards.reader import clip_dataset
    from maskahand.shards.schema import CLIP_SCHEMA, ClipSample, make_key
    from maskahand.shards.writer import ShardWriter

    with tempfile.TemporaryDirectory() as tmp:
        with ShardWriter(tmp, "bench", kind="clip") as writer:
            for i, c in enumerate(clips):
                t, h, w = c.shape[:3]
                meta = {
                    "schema": CLIP_SCHEMA,
                    **{"video_id": f"bench{i}", "video_path": f"bench{i}.mp4", "fps": FPS},
                    **{"frame_indices": list(range(t)), "timestamps": [k / FPS for k in range(t)]},
                    **{"width": w, "height": h, "source_width": w, "source_height": h},
                    **{"detections": [[] for _ in range(t)], "interacting": [], "rule": "bench"},
                    "detector": {"name": "none", "version": "0"},
                }
                frames = torch.from_numpy(c).permute(0, 3, 1, 2).contiguous()
                writer.write(ClipSample(make_key(f"bench{i}", 0), frames, meta))
        size = sum(info.bytes for info in writer.finished)
        rate = _rate(lambda: list(clip_dataset(tmp, on_error="raise")), len(clips), min_seconds)
    return {
        "path": "ShardWriter -> clip_dataset (tar + json + jpeg -> ClipSample)",
        "tar_bytes_per_sample": round(size / len(clips)),
        "samples_per_s_per_core": round(rate, 2),
    }


def box_heatmap(size: int, box: tuple[int, int, int, int], kernel: int = 85) -> torch.Tensor:
    """A hand-box heatmap as synth makes it: a filled box blurred with the paper's kernel, max 1."""
    m = np.zeros((size, size), np.float32)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1.0
    m = cv2.GaussianBlur(m, (kernel, kernel), 0)
    return torch.from_numpy(m / m.max())


def bench_heatmaps(min_seconds: float) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(4):
        x1, y1 = (int(v) for v in rng.integers(0, 180, 2))
        maps.append(
            box_heatmap(256, (x1, y1, x1 + int(rng.integers(30, 76)), y1 + int(rng.integers(30, 76))))
        )

    def npy_enc(h: torch.Tensor) -> bytes:
        buf = io.BytesIO()
        np.save(buf, h.numpy().astype(np.float16))
        return buf.getvalue()

    def npy_dec(b: bytes) -> torch.Tensor:
        return torch.from_numpy(np.load(io.BytesIO(b)).astype(np.float32))

    rows = []
    for name, enc, dec in (("png 16-bit", encode_heatmap, decode_heatmap), ("npy float16", npy_enc, npy_dec)):
        encoded = [enc(h) for h in maps]
        err = max(float((dec(e) - h).abs().max()) for e, h in zip(encoded, maps))
        rate = _rate(partial(_decode_all, dec, encoded), len(maps), min_seconds)
        rows.append(
            {
                "encoding": name,
                "bytes_per_heatmap": round(sum(len(e) for e in encoded) / len(maps)),
                "max_abs_error": float(f"{err:.3g}"),
                "heatmaps_per_s_per_core": round(rate),
            }
        )
    return rows


def render_targets(clips: list[np.ndarray], variants: int = 4) -> list[torch.Tensor]:
    """MaskAHand targets (default recipe, 256 x 256) from the middle frame of each clip: a hand box in
    the lower middle of the frame stands in for a detection (the encoding does not care where)."""
    from maskahand.core.config import SynthConfig
    from maskahand.synth import recipe as rc

    cfg = SynthConfig()
    targets = []
    for i, clip in enumerate(clips):
        frame = torch.from_numpy(clip[len(clip) // 2]).permute(2, 0, 1).contiguous()
        h, w = frame.shape[-2:]
        hand = {"box": [0.3 * w, 0.45 * h, 0.55 * w, 0.85 * h], "state": "contact", "score": 0.995}
        meta = {"width": w, "height": h, "frame_indices": [0], "interacting": [0], "detections": [[hand]]}
        for v in range(variants):
            target, _ = rc.replay(rc.sample_params(cfg, f"clip{i}", meta, v), frame)
            targets.append(target)
    return targets


def bench_targets(clips: list[np.ndarray], min_seconds: float, variants: int = 4) -> list[dict[str, object]]:
    targets = render_targets(clips, variants)
    rows = []
    for name, enc, suffix in (
        ("png (lossless, default)", lambda t: encode_pngs(t[None])[0], ".png"),
        ("jpeg q90 (before)", lambda t: encode_jpegs(t[None], 90)[0], ".jpg"),
    ):
        encoded = [enc(t) for t in targets]
        decoded = [decode_image_bytes(e, "t" + suffix) for e in encoded]
        diff = torch.stack([(d.float() - t.float()).abs() for d, t in zip(decoded, targets)])
        rate = _rate(
            partial(_decode_all, partial(decode_image_bytes, name="t" + suffix), encoded),
            len(encoded),
            min_seconds,
        )
        enc_rate = _rate(partial(_decode_all, enc, targets), len(targets), min_seconds)
        per_target = sum(len(e) for e in encoded) / len(encoded)
        rows.append(
            {
                "encoding": name,
                "bytes_per_target": round(per_target),
                f"target_bytes_per_sample_k{variants}": round(per_target * variants),
                "decoded_targets_per_s_per_core": round(rate, 1),
                "encoded_targets_per_s_per_core": round(enc_rate, 1),
                "max_abs_diff_to_render": int(diff.max()),
                "mean_abs_diff_to_render": round(float(diff.mean()), 3),
                "exact": bool(diff.max() == 0),
            }
        )
    return rows


def sources(data: Path) -> list[Path]:
    videos = sorted(
        p for p in (data / "videos").iterdir() if p.suffix in {".mp4", ".mkv", ".webm", ".avi", ".mov"}
    )
    frames = (
        sorted(p for p in (data / "frames").iterdir() if p.is_dir()) if (data / "frames").is_dir() else []
    )
    return videos + frames


def _table(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="shared data folder (videos/, frames/)")
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum timing per candidate")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "videos").is_dir():
        ap.error(f"{data}/videos not found (pass --data)")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    srcs = sources(data)
    result: dict[str, object] = {"sources": [p.name for p in srcs]}
    for label, kwargs in (
        ("clip frames, longer side 480 (mine)", {"max_side": 480}),
        ("256x256 (synth)", {"square": 256}),
    ):
        clips = [read_clip(p, **kwargs) for p in srcs]
        n = sum(len(c) for c in clips)
        print(f"\n== {label}: {len(clips)} clips, {n} frames ({n / len(clips):.1f} per clip), 1 thread")
        rows = bench_frames(clips, args.seconds)
        print(_table(rows))
        reader = bench_reader(clips, args.seconds)
        print(_table([reader]))
        result[label] = {"encodings": rows, "reader": reader}
    print("\n== MaskAHand targets 256x256 (default recipe on the clip frames at 480, 4 per clip), 1 thread")
    rows = bench_targets([read_clip(p, max_side=480) for p in srcs], args.seconds)
    print(_table(rows))
    result["targets"] = rows
    print("\n== heatmaps 256x256 (blurred hand boxes, kernel 85)")
    rows = bench_heatmaps(args.seconds)
    print(_table(rows))
    result["heatmaps"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
