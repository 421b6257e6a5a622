"""One training step of Interaction Hotspots vs Afformer at the same batch: seconds and memory.

A step is forward + backward + optimiser update (Hotspots: Adam over its 109 M trainable parameters, the
backbone frozen; Afformer: AdamW over all of it, supervised OPRA head, 7 heatmaps + actions). Each
(model, repeat) runs in a fresh subprocess, so the peak resident set size (``ru_maxrss``) is that model's
alone; the fastest of the repeats is reported (the CPU is shared). Both models see the same batch of
``--frames`` demonstration frames and one target / inactive image at their paper input size unless
``--size`` sets one for both (Hotspots needs a multiple of 8, Afformer of 32). CUDA, when present: the
same step on the GPU with ``torch.cuda.max_memory_allocated``.

    python -m benchmarks.hotspots [--batch 2] [--frames 4] [--size 96] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODELS = ("hotspots", "afformer")


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def build(model: str, size: int):
    import torch

    torch.manual_seed(0)
    if model == "hotspots":
        from maskahand.core.config import HotspotsConfig
        from maskahand.hotspots.model import HotspotsModel

        net = HotspotsModel(HotspotsConfig(num_verbs=7, image_size=size))  # random backbone: timing only
        params = [p for p in net.parameters() if p.requires_grad]
        return net, torch.optim.Adam(params, lr=1e-4, weight_decay=5e-4)
    from maskahand.afformer.model import build_model
    from maskahand.core.config import AfformerConfig

    net = build_model(AfformerConfig(num_heatmaps=7, num_actions=7, image_size=size))
    groups = net.param_groups(3e-4, 0.05)
    return net, torch.optim.AdamW(groups)


def step(model: str, net, opt, batch: int, frames: int, size: int, device) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    video = (torch.rand(batch, frames, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    image = (torch.rand(batch, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    verbs = torch.randint(0, 7, (batch,), generator=g).to(device)
    if model == "hotspots":
        lengths = torch.full((batch,), frames)
        loss = net(video, lengths, verbs, inactive=image).total
    else:
        target = torch.rand(batch, 1, size, size, generator=g).to(device)
        loss = net.loss(net(video.float() / 255, image.float() / 255), target, verbs).total
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def worker(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (224 if args.worker == "hotspots" else 256)
    net, opt = build(args.worker, size)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    start = time.perf_counter()
    step(args.worker, net, opt, args.batch, args.frames, size, "cpu")
    seconds = time.perf_counter() - start
    return {
        "device": "cpu",
        "model": args.worker,
        "batch": args.batch,
        "frames": args.frames,
        "size": size,
        "threads": torch.get_num_threads(),
        "params_m": round(params / 1e6, 2),
        "trainable_m": round(trainable / 1e6, 2),
        "seconds": seconds,
        "peak_rss_gb": peak_rss_gb(),
    }


def gpu_rows(args: argparse.Namespace) -> list[dict]:
    import torch

    rows = []
    for model in MODELS:
        size = args.size or (224 if model == "hotspots" else 256)
        net, opt = build(model, size)
        net.cuda().train()
        torch.cuda.reset_peak_memory_stats()
        for i in range(3):
            if i == 1:
                torch.cuda.synchronize()
                start = time.perf_counter()
            step(model, net, opt, args.batch, args.frames, size, "cuda")
        torch.cuda.synchronize()
        rows.append(
            {
                "device": torch.cuda.get_device_name(),
                "model": model,
                "batch": args.batch,
                "size": size,
                "seconds": (time.perf_counter() - start) / 2,
                "max_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
            }
        )
        del net, opt
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hotspots", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=96, help="input side for both (0: paper sizes 224 / 256)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0
    runs = []
    for _ in range(args.repeats):
        for model in MODELS:
            cmd = [sys.executable, "-m", "benchmarks.hotspots", "--worker", model, "--batch", str(args.batch)]
            cmd += ["--frames", str(args.frames), "--size", str(args.size), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark worker failed ({model}):\n{proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for model in MODELS:
        same = [r for r in runs if r["model"] == model]
        best = dict(min(same, key=lambda r: r["seconds"]))
        best["all_seconds"] = [round(r["seconds"], 2) for r in same]
        best["peak_rss_gb"] = max(r["peak_rss_gb"] for r in same)
        rows.append(best)
    print(
        f"\n{'model':<10} {'params M':>9} {'trainable M':>12} {'size':>5} {'s/step':>8} {'peak RSS GB':>12}  runs"
    )
    for r in rows:
        print(
            f"{r['model']:<10} {r['params_m']:>9.1f} {r['trainable_m']:>12.1f} {r['size']:>5} {r['seconds']:>8.2f} "
            f"{r['peak_rss_gb']:>12.2f}  {r['all_seconds']}"
        )
    h, a = rows
    print(
        f"batch {args.batch} x {args.frames} frames, CPU {h['threads']} thread(s): Hotspots/Afformer time "
        f"x{h['seconds'] / a['seconds']:.2f}, peak memory x{h['peak_rss_gb'] / a['peak_rss_gb']:.2f}"
    )
    try:
        import torch

        if torch.cuda.is_available():
            for r in gpu_rows(args):
                print(json.dumps(r))
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
