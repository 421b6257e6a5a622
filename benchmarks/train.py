"""Training speed and memory: seconds per step and peak memory of one pretraining step, and the data
reader's samples/s alone (it must outrun the model).

Each (precision, activation checkpointing) case runs in a fresh subprocess so its peak memory is its
own: on the CPU the process's peak resident set (``ru_maxrss``) minus the resident set before the
first step; on CUDA ``torch.cuda.max_memory_allocated``. A step is forward + KL loss + backward +
AdamW update with the trainer's precision and parameter groups (paper model, 256 x 256, action-
agnostic head). The reader is timed on MaskAHand shards made by the real recipe (T frames of 256 x 256).

    python -m benchmarks.train [--batch 1] [--frames 32] [--steps 2] [--device cpu|cuda]
    python -m benchmarks.train --device cuda --batch 8 32 --precision bf16     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def rss_bytes() -> int:
    import os

    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def one_case(args: argparse.Namespace) -> dict:
    """Runs in the subprocess: build, warm up, time ``steps`` steps of one configuration."""
    import resource

    import torch

    from maskahand.afformer import build_model
    from maskahand.afformer.actckpt import enable_activation_checkpointing
    from maskahand.afformer.param_groups import afformer_param_groups
    from maskahand.core.config import AfformerConfig, OptimConfig
    from maskahand.runtime.precision import Precision
    from maskahand.trainer.optim import build_optimizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = AfformerConfig(max_kv_thw=[max(32, args.frames), 32, 32])
    model = build_model(cfg).to(device)
    if args.ckpt:
        enable_activation_checkpointing(model)
    precision = args.precision[0]
    optim = OptimConfig(precision=precision)
    prec = Precision(precision, device)
    opt = build_optimizer(afformer_param_groups(model, optim), optim, device)
    b, t, s = args.batch[0], args.frames, 256
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (b, t, 3, s, s), dtype=torch.uint8, generator=g).to(device)
    image = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g).to(device)
    heat = torch.rand(b, 1, s, s, generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with prec.autocast():
            out = model(video, image)
        loss = model.loss(out, heat).heatmap
        prec.scaler.scale(loss).backward()
        prec.scaler.step(opt)
        prec.scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    base = rss_bytes()
    step()  # warm-up (allocations, kernel choice)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    result = {"device": args.device, "precision": prec.name, "activation_checkpointing": args.ckpt}
    result.update({"batch": b, "frames": t, "s_per_step": round(dt, 3), "samples_per_s": round(b / dt, 3)})
    if device.type == "cuda":
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_rss_gib"] = round(peak / 2**30, 3)
        result["step_added_rss_gib"] = round((peak - base) / 2**30, 3)
    return result


def make_shards(out: Path, clips: int, frames: int) -> Path:
    """MaskAHand shards at 256 x 256 with ``frames`` frames per clip, by the real recipe."""
    import torch

    from maskahand.core.config import ShardWriterConfig, SynthConfig
    from maskahand.shards.schema import CLIP_SCHEMA, ClipSample
    from maskahand.shards.writer import ShardWriter
    from maskahand.synth.pipeline import synthesize_clips

    if any(out.glob("*.tar")):
        return out
    g = torch.Generator().manual_seed(0)
    h, w = 270, 480
    samples = []
    for i in range(clips):
        # smooth frames (a real video compresses like this, noise would not)
        small = torch.randint(0, 256, (frames, 3, h // 16, w // 16), generator=g).float()
        video = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear").to(torch.uint8)
        det = [[{"box": [100.0, 80.0, 180.0, 160.0], "state": "contact", "score": 0.995}]] * frames
        meta = {
            "schema": CLIP_SCHEMA, "video_id": f"v{i}.mp4", "video_path": f"/v/v{i}.mp4", "fps": 5.0,
            "frame_indices": list(range(frames)), "timestamps": [t / 5 for t in range(frames)],
            "width": w, "height": h, "source_width": w, "source_height": h, "detections": det,
            "interacting": list(range(frames)), "rule": {"contact_score": 0.99}, "detector": {"name": "bench"},
        }  # fmt: skip
        samples.append(ClipSample(key=f"bench_{i:04d}", frames=video, meta=meta))
    made, _ = synthesize_clips(samples, SynthConfig(variants=4, device="cpu"), "bench-000000.tar")
    with ShardWriter(out, "maskahand", ShardWriterConfig(max_samples=8), kind="maskahand") as wr:
        for s in made:
            wr.write(s)
    return out


def reader_rate(shards: Path, batch: int, frames: int, workers: int) -> dict:
    """Samples/s of the pretraining reader alone (decode, trim, pad, batch), one epoch."""
    import torch

    from maskahand.core.config import PretrainRecipe
    from maskahand.core.configbase import load_config
    from maskahand.pretrain.task import PretrainTask
    from maskahand.runtime.distributed import DistInfo
    from maskahand.trainer import TrainContext

    recipe = load_config(
        PretrainRecipe,
        None,
        [f"train.batch_size={batch}", f"train.num_frames={frames}", f"train.workers={workers}"],
    )
    task = PretrainTask(recipe, shards=[str(shards)])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    task.setup(TrainContext(info, shards, recipe.optim, recipe.train, None))
    t0 = time.perf_counter()
    n = sum(len(b["key"]) for b in task.train_batches(0, 0))
    dt = time.perf_counter() - t0
    return {
        "workers": workers,
        "batch": batch,
        "frames": frames,
        "samples": n,
        "samples_per_s": round(n / dt, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="outputs/bench-train")
    p.add_argument("--reader-workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(args)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"steps": [], "reader": []}
    for batch in args.batch:
        for precision in args.precision:
            for ckpt in (False, True):
                cmd = [sys.executable, "-m", "benchmarks.train", "--case", "--device", args.device,
                       "--batch", str(batch), "--frames", str(args.frames), "--steps", str(args.steps),
                       "--precision", precision, "--threads", str(args.threads)] + (["--ckpt"] if ckpt else [])  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    results["steps"].append(
                        {"batch": batch, "precision": precision, "ckpt": ckpt, "error": True}
                    )
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(r), flush=True)
                results["steps"].append(r)
    shards = make_shards(out / "shards", clips=16, frames=args.frames)
    for workers in args.reader_workers:
        r = reader_rate(shards, 4, args.frames, workers)
        print(json.dumps(r), flush=True)
        results["reader"].append(r)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
