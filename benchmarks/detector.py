"""Detector throughput: ``python -m benchmarks.detector --data ../shared/data`` (``make bench-detector``).

Frames/s of ``mediapipe`` and ``hircnn`` (random weights: speed does not depend on them) on real
frames resized to a 640-pixel maximum side, batch 1 vs batch 8, on the CPU; when CUDA is present,
also ``hircnn`` at batch 16 in fp16 at the paper's input size (min side 800, max 1333).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from maskahand.core.config import DetectorConfig, VideoConfig

SOURCES = ["videos/hands_pillow.mp4", "videos/ego4d_stirring.mp4", "videos/opra_espresso_vp9.mp4"]


def load_frames(data: Path, count: int, max_side: int | None) -> list[torch.Tensor]:
    """``count`` real frames, cycling over the shared videos (sampled at 5 fps)."""
    from maskahand.video import open_video

    frames: list[torch.Tensor] = []
    for rel in SOURCES:
        path = data / rel
        if not path.exists():
            continue
        for frame in open_video(path, VideoConfig(fps=5.0, max_side=max_side)):
            frames.append(frame.image)
    if not frames:
        raise SystemExit(f"no benchmark videos found under {data} ({', '.join(SOURCES)})")
    return [frames[i % len(frames)] for i in range(count)]


def _sync(det) -> None:
    device = getattr(det, "device", None)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def time_detector(
    cfg: DetectorConfig, frames: list[torch.Tensor], batches: list[int], repeats: int
) -> list[dict]:
    """Best-of-``repeats`` frames/s per batch size; batch sizes alternate so load drift hits them alike."""
    from maskahand.detector import build_detector

    seconds: dict[int, list[float]] = {b: [] for b in batches}
    hands_found = {}
    with build_detector(cfg) as det:
        det.batch_size = max(batches)
        det.detect(frames[: max(batches)])  # warm-up: allocations, graph start-up, cudnn autotune
        _sync(det)
        for _ in range(repeats):
            for batch in batches:
                det.batch_size = batch
                start = time.perf_counter()
                hands = det.detect(frames)
                _sync(det)
                seconds[batch].append(time.perf_counter() - start)
                hands_found[batch] = sum(len(h) for h in hands)
        version = det.version
    return [
        {
            "backend": cfg.backend,
            "version": version,
            "device": cfg.device,
            "batch": b,
            "frames": len(frames),
            "seconds": [round(t, 3) for t in seconds[b]],
            "fps": round(len(frames) / min(seconds[b]), 3),
            "hands_found": hands_found[b],
        }
        for b in batches
    ]


def hircnn_cfg(device: str, min_size: int, max_size: int, amp: bool) -> DetectorConfig:
    cfg = DetectorConfig(backend="hircnn", device=device, amp=amp)
    cfg.hircnn.allow_random_weights = True
    cfg.hircnn.min_size, cfg.hircnn.max_size = min_size, max_size
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="the shared data folder (videos/)")
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--frames", type=int, default=8, help="frames per CPU measurement (hircnn)")
    p.add_argument("--mediapipe-frames", type=int, default=64)
    p.add_argument("--gpu-frames", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per batch size (best is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--skip", nargs="*", default=[], choices=["mediapipe", "hircnn", "gpu"])
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    torch.manual_seed(0)
    results: dict = {
        "host": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "runs": [],
    }
    frames = load_frames(data, max(args.frames, args.mediapipe_frames), args.max_side)
    size = tuple(frames[0].shape[-2:])
    runs = results["runs"]
    if "mediapipe" not in args.skip:
        cfg = DetectorConfig(backend="mediapipe")
        runs += [
            {**r, "max_side": args.max_side}
            for r in time_detector(cfg, frames[: args.mediapipe_frames], [1, 8], args.repeats)
        ]
    if "hircnn" not in args.skip:
        # min/max side 640: torchvision resizes so the long side is 640, as the frames already are
        cfg = hircnn_cfg("cpu", args.max_side, args.max_side, amp=False)
        runs += [
            {**r, "max_side": args.max_side}
            for r in time_detector(cfg, frames[: args.frames], [1, 8], args.repeats)
        ]
    if torch.cuda.is_available() and "gpu" not in args.skip:
        big = load_frames(data, args.gpu_frames, None)
        for amp in (True, False):
            cfg = hircnn_cfg("cuda", 800, 1333, amp=amp)
            runs += [
                {**r, "fp16": amp, "min_size": 800, "max_size": 1333}
                for r in time_detector(cfg, big, [1, 16], args.repeats)
            ]
    for r in runs:
        print(json.dumps(r), file=sys.stderr)
    results["frame_size"] = list(size)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        from maskahand.core.fsutil import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
