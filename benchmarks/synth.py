"""Benchmark: batched MaskAHand synthesis vs a per-sample CPU implementation in the authors' style.

    python -m benchmarks.synth --data ../shared/data          (make bench-synth)

Inputs are real: frames of the shared videos sampled at 5 fps (stored size, max side 480) and hand
boxes from the mediapipe detector. Reported, in one run on one machine:

1. targets/s of target synthesis (masked, warped, cropped target + blurred heatmap): ours batched on
   the CPU vs the per-sample baseline (torchvision ``RandomPerspective`` on a concatenated image + mask
   tensor, Python loops over boxes for masking, nonzero-bounding-box crop, one sample at a time), as a
   ratio; on CUDA also ours at batch 64 and 256.
2. the stage's time split for whole samples: JPEG decode of the clip frames, synthesis (targets plus the
   frames resized once per clip), JPEG/PNG encode of the output sample.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from maskahand.core.config import SynthConfig
from maskahand.shards.schema import ClipSample

VIDEOS = ("hands_pillow.mp4", "hands_teddy.mp4", "ego4d_stirring.mp4")


def load_clips(data: Path, clip_length: int = 32) -> list[ClipSample]:
    """Real clips: frames at 5 fps (max side 480) with mediapipe hand boxes; frames with hands interact."""
    from maskahand.core.config import DetectorConfig, VideoConfig
    from maskahand.detector import build_detector
    from maskahand.video import open_video

    detector = build_detector(DetectorConfig(backend="mediapipe", device="cpu"))
    clips = []
    for name in VIDEOS:
        reader = open_video(data / "videos" / name, VideoConfig(fps=5, max_side=480))
        frames = [f.image for f in reader]
        hands = detector.detect(frames)
        for start in range(0, max(1, len(frames) - clip_length + 1), clip_length):
            part = torch.stack(frames[start : start + clip_length])
            dets = [
                [{"box": list(h.box), "state": h.state, "score": float(h.score)} for h in hs]
                for hs in hands[start : start + clip_length]
            ]
            meta = {
                "video_id": name,
                "width": part.shape[-1],
                "height": part.shape[-2],
                "frame_indices": list(range(start, start + part.shape[0])),
                "detections": dets,
                "interacting": [i for i, d in enumerate(dets) if d],
                "rule": {"contact_score": 0.99, "unknown_rule": "score", "unknown_score": 0.0},
            }
            clips.append(ClipSample(key=f"{Path(name).stem}_{start}", frames=part, meta=meta))
    return clips


# --------------------------------------------------------------------------------------------------
# The per-sample baseline: how the authors' training DataLoader builds one target at a time.


def baseline_target(
    frame: torch.Tensor, boxes: list[list[float]], cfg: SynthConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.transforms import RandomPerspective, Resize
    from torchvision.transforms.functional import gaussian_blur

    image = frame.clone()
    h, w = image.shape[-2:]
    handmap = torch.zeros(1, h, w, dtype=torch.uint8)
    for x1, y1, x2, y2 in boxes:
        handmap[0, int(y1) : math.ceil(y2), int(x1) : math.ceil(x2)] = 255
    for x1, y1, x2, y2 in boxes:
        # the authors' rule: each side moves out by U(0, r-1) * sqrt(area)
        grow = (cfg.hand_mask_scale - 1) * torch.rand(4) * math.sqrt((x2 - x1) * (y2 - y1))
        mx1, my1 = max(0, int(x1 - grow[0])), max(0, int(y1 - grow[1]))
        mx2, my2 = min(w, math.ceil(x2 + grow[2])), min(h, math.ceil(y2 + grow[3]))
        image[:, my1:my2, mx1:mx2].random_(0, 256)
        bw, bh = mx2 - mx1, my2 - my1
        for _ in range(cfg.random_masks):
            rx = int(torch.randint(0, w - bw + 1, (1,)))
            ry = int(torch.randint(0, h - bh + 1, (1,)))
            image[:, ry : ry + bh, rx : rx + bw].random_(0, 256)
    warped = RandomPerspective(cfg.distortion_scale, p=1.0)(torch.cat([image, handmap]))
    image, handmap = warped[:3], warped[3:]
    valid = image.sum(dim=0).nonzero()
    (i1, j1), (i2, j2) = valid.min(dim=0).values.tolist(), valid.max(dim=0).values.tolist()
    resize = Resize((cfg.output_size, cfg.output_size), antialias=True)
    target = resize(image[:, i1 : i2 + 1, j1 : j2 + 1])
    gt = resize((handmap[:, i1 : i2 + 1, j1 : j2 + 1] > 0).float())
    return target, gaussian_blur(gt, [cfg.blur_kernel, cfg.blur_kernel])[0]


# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_batched(frames, params, batch: int, device: torch.device, repeats: int = 1) -> float:
    """targets/s of ``render`` over all params in batches (frames already decoded on ``device``)."""
    from maskahand.synth.recipe import render_grouped

    frames = [f.to(device) for f in frames]
    render_grouped(frames[:2], params[:2], batch)  # warm-up (kernels, kornia caches)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        render_grouped(frames, params, batch)
    _sync(device)
    return repeats * len(params) / (time.perf_counter() - start)


def bench_baseline(frames, params, cfg: SynthConfig) -> float:
    baseline_target(frames[0], params[0]["hand_boxes"], cfg)
    start = time.perf_counter()
    for f, p in zip(frames, params):
        baseline_target(f, p["hand_boxes"], cfg)
    return len(params) / (time.perf_counter() - start)


def stage_split(clips: list[ClipSample], cfg: SynthConfig, device: torch.device) -> dict[str, float]:
    """Seconds per clip of JPEG decode, synthesis and encode, as the pipeline does them on ``device``."""
    from maskahand.shards.codec import encode_jpegs, encode_sample
    from maskahand.synth.clipio import decode_frames
    from maskahand.synth.pipeline import synthesize_clips

    encoded = [encode_jpegs(c.frames, 90) for c in clips]
    decode_frames(encoded[0][:2], device, "warm-up")
    synthesize_clips(clips[:1], cfg, "bench.tar")
    _sync(device)
    t0 = time.perf_counter()
    decoded = [
        ClipSample(c.key, decode_frames(blobs, device, c.key), c.meta) for c, blobs in zip(clips, encoded)
    ]
    _sync(device)
    t1 = time.perf_counter()
    samples, _ = synthesize_clips(decoded, cfg, "bench.tar")  # ends with the results on the CPU
    t2 = time.perf_counter()
    for s in samples:
        encode_sample(s, 90, "png")  # lossless targets (the default shards.target_format)
    t3 = time.perf_counter()
    n = len(clips)
    return {
        "decode_s_per_clip": (t1 - t0) / n,
        "synth_s_per_clip": (t2 - t1) / n,
        "encode_s_per_clip": (t3 - t2) / n,
    }


def report_split(name: str, split: dict[str, float], variants: int) -> float:
    total = sum(split.values())
    share = (split["decode_s_per_clip"] + split["encode_s_per_clip"]) / total
    print(
        f"stage split on {name}, per clip ({variants} targets): decode {split['decode_s_per_clip']:.4f}s, "
        f"synth {split['synth_s_per_clip']:.4f}s, encode (CPU) {split['encode_s_per_clip']:.4f}s "
        f"-> JPEG/PNG share {share:.0%}, {variants / total:.1f} targets/s for the whole stage"
    )
    return share


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--targets", type=int, default=128, help="targets per measurement")
    ap.add_argument("--batch", type=int, default=64, help="CPU batch size of ours")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, same for both")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskahand.synth.recipe import sample_params

    cfg = SynthConfig(batch_size=args.batch, device="cpu")
    t0 = time.perf_counter()
    clips = [c for c in load_clips(args.data) if c.meta["interacting"]]
    if not clips:
        raise SystemExit(f"{args.data}: no clip with detected hands")
    print(
        f"loaded {len(clips)} real clips in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{c.key} {tuple(c.frames.shape[-2:])}" for c in clips)
    )

    frames, params = [], []
    variant = 0
    while len(params) < args.targets:
        for c in clips:
            p = sample_params(cfg, c.key, c.meta, variant)
            frames.append(c.frames[p["frame"]])
            params.append(p)
        variant += 1
    frames, params = frames[: args.targets], params[: args.targets]

    results: dict[str, Any] = {
        "targets": len(params),
        "threads": args.threads,
        "output_size": cfg.output_size,
    }
    cpu = torch.device("cpu")
    baseline = bench_baseline(frames, params, cfg)
    ours = bench_batched(frames, params, args.batch, cpu)
    results.update(
        baseline_cpu_targets_per_s=baseline, ours_cpu_targets_per_s=ours, speedup_cpu=ours / baseline
    )
    print(
        f"CPU ({args.threads} thread): baseline per-sample {baseline:.1f} targets/s | ours batch {args.batch} "
        f"{ours:.1f} targets/s | ratio {ours / baseline:.2f}x"
    )

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        for batch in (64, 256):
            n = max(batch, len(params))
            reps = -(-n // len(params))
            rate = bench_batched(frames, params, batch, gpu, repeats=max(1, reps))
            results[f"ours_cuda_b{batch}_targets_per_s"] = rate
            print(f"CUDA batch {batch}: {rate:.1f} targets/s | ratio vs CPU baseline {rate / baseline:.1f}x")
    else:
        print("CUDA: not available, GPU branch skipped")

    sample_clips = clips[: max(1, min(len(clips), 4))]
    split = stage_split(sample_clips, SynthConfig(batch_size=args.batch, device="cpu"), cpu)
    results["cpu_split"] = split
    results["cpu_jpeg_share_of_stage"] = report_split("cpu", split, cfg.variants)
    if torch.cuda.is_available():
        gpu_clips = [ClipSample(c.key, c.frames.cuda(), c.meta) for c in sample_clips]
        split = stage_split(
            gpu_clips, SynthConfig(batch_size=args.batch, device="cuda"), torch.device("cuda")
        )
        results["cuda_split"] = split
        results["cuda_jpeg_share_of_stage"] = report_split("cuda (nvJPEG decode)", split, cfg.variants)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
