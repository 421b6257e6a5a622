"""Afformer forward+backward cost: efficient (bias-free) vs reference (dense bias) attention, for the
R50-FPN encoder and the ViTDet-B one (``--encoders``; the ViTDet rows use the authors' model settings,
``core/config.py: VITDET_B_MODEL``, at ``--vit-size``: 1024 in their recipe, smaller on a CPU).

CPU: one forward+backward of batch 1 per (frames, mode), each in a fresh subprocess so the peak
resident set size (``resource.getrusage(...).ru_maxrss``, the kernel's high-water mark of the whole
process) belongs to that measurement alone. Reported: wall time, peak RSS, and peak RSS minus the RSS
right before the forward (what the step itself added: activations, attention buffers, gradients).
CUDA (when available): bf16 autocast, samples/s over timed iterations after warm-up, and
``torch.cuda.max_memory_allocated``, for each mode and batch size.

    python -m benchmarks.model [--frames 8 32] [--threads 1] [--encoders r50_fpn vitdet_b] [--vit-size 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from maskahand.core.cli_util import add_config_option, load_recipe
from maskahand.core.config import AfformerConfig

MODES = ("efficient", "reference")
ENCODERS = ("r50_fpn", "vitdet_b")


@dataclass
class ModelBenchRecipe:
    model: AfformerConfig = field(default_factory=AfformerConfig)  # pretraining head: 1 heatmap, no actions


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), 0 where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def sized_for(cfg: AfformerConfig, frames: int) -> AfformerConfig:
    """The config with a time table long enough for ``frames``-frame clips (model.max_kv_thw[0])."""
    t, h, w = cfg.max_kv_thw
    return dataclasses.replace(cfg, max_kv_thw=[max(t, frames), h, w])


def encoder_config(cfg: AfformerConfig, encoder: str) -> AfformerConfig:
    """``cfg`` for ``encoder``: the ViTDet-B rows take the authors' model settings (the recipe preset)."""
    if encoder == "r50_fpn":
        return cfg
    from maskahand.core.config import VITDET_B_MODEL
    from maskahand.core.configbase import apply_overrides

    model_keys = [o for o in VITDET_B_MODEL if o.startswith("model.")]
    return apply_overrides(ModelBenchRecipe(model=cfg), model_keys).model


def make_inputs(batch: int, frames: int, size: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    video = torch.rand(batch, frames, 3, size, size, generator=g).to(device)
    image = torch.rand(batch, 3, size, size, generator=g).to(device)
    target = torch.rand(batch, 1, size, size, generator=g).to(device)
    return video, image, target


def cpu_step(
    cfg: AfformerConfig, mode: str, frames: int, size: int, threads: int | None, encoder: str = "r50_fpn"
) -> dict:
    """One forward+backward in this (fresh) process; returns time and memory."""
    import torch

    from maskahand.afformer.model import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(sized_for(encoder_config(cfg, encoder), frames)).train()
    model.set_attention_mode(mode)
    video, image, target = make_inputs(1, frames, size, "cpu")
    before = rss_bytes()
    start = time.perf_counter()
    out = model(video, image)
    model.loss(out, target).total.backward()
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    return {
        "device": "cpu",
        "encoder": encoder,
        "mode": mode,
        "frames": frames,
        "batch": 1,
        "size": size,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "peak_rss_gb": peak / 1e9,
        "step_rss_gb": (peak - before) / 1e9,
    }


def gpu_runs(
    cfg: AfformerConfig,
    batches: list[int],
    frames: int,
    size: int,
    iters: int,
    warmup: int,
    encoder: str = "r50_fpn",
) -> list[dict]:
    import torch

    from maskahand.afformer.model import build_model

    results = []
    torch.manual_seed(0)
    model = build_model(sized_for(encoder_config(cfg, encoder), frames)).cuda().train()
    params = [p for p in model.parameters() if p.requires_grad]
    for mode in MODES:
        model.set_attention_mode(mode)
        for batch in batches:
            row = {
                "device": torch.cuda.get_device_name(),
                "encoder": encoder,
                "mode": mode,
                "frames": frames,
                "batch": batch,
                "size": size,
            }
            try:
                video, image, target = make_inputs(batch, frames, size, "cuda")
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                for i in range(warmup + iters):
                    if i == warmup:
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        out = model(video, image)
                        loss = model.loss(out, target).total
                    loss.backward()
                    for p in params:
                        p.grad = None
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                row.update(
                    samples_per_s=batch * iters / elapsed,
                    max_allocated_gb=torch.cuda.max_memory_allocated() / 1e9,
                )
            except torch.cuda.OutOfMemoryError:
                row.update(samples_per_s=None, max_allocated_gb=None, error="out of memory")
            finally:
                video = image = target = out = loss = None  # noqa: F841 - free before the next run
                torch.cuda.empty_cache()
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def run_cpu_worker(args: argparse.Namespace, extra: list[str]) -> list[dict]:
    """Launch one subprocess per (frames, mode) so each peak RSS is measured on its own."""
    from tqdm import tqdm

    # modes interleaved and repeated: on a shared CPU the load drifts, the minimum time is the signal
    jobs = [
        (e, t, m) for _ in range(args.repeats) for e in args.encoders for t in args.frames for m in args.modes
    ]
    runs = []
    for encoder, frames, mode in tqdm(jobs, desc="cpu forward+backward", unit="run"):
        cmd = [sys.executable, "-m", "benchmarks.model", "--worker", mode, "--frames", str(frames)]
        size = args.vit_size if encoder == "vitdet_b" else args.size
        cmd += ["--size", str(size), "--encoders", encoder]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.config:
            cmd += ["--config", args.config]
        proc = subprocess.run(cmd + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"benchmark worker failed ({encoder}, {mode}, T={frames}):\n{proc.stderr[-2000:]}"
            )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for encoder in args.encoders:
        for frames in args.frames:
            for mode in args.modes:
                same = [r for r in runs if (r["encoder"], r["frames"], r["mode"]) == (encoder, frames, mode)]
                best = dict(min(same, key=lambda r: r["seconds"]))
                best.update(
                    repeats=len(same),
                    all_seconds=[round(r["seconds"], 3) for r in same],
                    peak_rss_gb=max(r["peak_rss_gb"] for r in same),
                    step_rss_gb=max(r["step_rss_gb"] for r in same),
                )
                rows.append(best)
    return rows


def print_table(rows: list[dict]) -> None:
    cpu = [r for r in rows if r["device"] == "cpu"]
    if cpu:
        print(
            f"\n{'encoder':<9} {'size':>5} {'T':>3} {'mode':<10} {'seconds':>8} {'peak RSS GB':>12} "
            f"{'step RSS GB':>12}  all runs (s)"
        )
        for r in cpu:
            print(
                f"{r.get('encoder', 'r50_fpn'):<9} {r['size']:>5} {r['frames']:>3} {r['mode']:<10} "
                f"{r['seconds']:>8.2f} {r['peak_rss_gb']:>12.2f} {r['step_rss_gb']:>12.2f}  {r.get('all_seconds', '')}"
            )
        encoders = sorted({r.get("encoder", "r50_fpn") for r in cpu})
        for enc in encoders:
            for t in sorted({r["frames"] for r in cpu}):
                pair = {r["mode"]: r for r in cpu if r["frames"] == t and r.get("encoder", "r50_fpn") == enc}
                if set(MODES) <= pair.keys():
                    e, ref = pair["efficient"], pair["reference"]
                    print(
                        f"{enc} T={t}: reference/efficient time x{ref['seconds'] / e['seconds']:.2f}, "
                        f"step memory x{ref['step_rss_gb'] / max(e['step_rss_gb'], 1e-9):.2f}"
                    )
        if set(ENCODERS) <= set(encoders):
            for t in sorted({r["frames"] for r in cpu}):
                for mode in MODES:
                    pair = {r["encoder"]: r for r in cpu if r["frames"] == t and r["mode"] == mode}
                    if set(ENCODERS) <= pair.keys():
                        v, r50 = pair["vitdet_b"], pair["r50_fpn"]
                        print(
                            f"T={t} {mode}: vitdet_b ({v['size']}px) / r50_fpn ({r50['size']}px) time "
                            f"x{v['seconds'] / r50['seconds']:.2f}, step memory "
                            f"x{v['step_rss_gb'] / max(r50['step_rss_gb'], 1e-9):.2f}"
                        )
    for r in rows:
        if r["device"] != "cpu":
            print(json.dumps(r))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model", description=__doc__.split("\n\n")[0])
    add_config_option(p)
    p.add_argument("--frames", type=int, nargs="+", default=[8, 32], help="video lengths (CPU runs)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--size", type=int, default=256, help="input side of the R50 rows (paper: 256)")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    p.add_argument(
        "--vit-size",
        type=int,
        default=256,
        help="input side of the ViTDet rows (authors: 1024; a multiple of 32)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=1, help="CPU runs per setting (fastest reported)")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[16, 32])
    p.add_argument("--gpu-frames", type=int, default=32, help="frames per clip on the GPU (MaskAHand: 32)")
    p.add_argument("--gpu-iters", type=int, default=5)
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU runs")
    p.add_argument("--out", default="outputs/bench-model", help="folder for results.json and config.yaml")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    unknown = [e for e in extra if e not in args.overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    recipe = load_recipe(ModelBenchRecipe, args)
    if args.worker:
        row = cpu_step(recipe.model, args.worker, args.frames[0], args.size, args.threads, args.encoders[0])
        print(json.dumps(row))
        return 0
    rows = [] if args.no_cpu else run_cpu_worker(args, args.overrides)
    import torch

    if torch.cuda.is_available():
        for encoder in args.encoders:
            size = args.vit_size if encoder == "vitdet_b" else args.size
            rows += gpu_runs(
                recipe.model,
                args.gpu_batches,
                args.gpu_frames,
                size,
                args.gpu_iters,
                warmup=2,
                encoder=encoder,
            )
    else:
        print("CUDA not available: GPU runs skipped", file=sys.stderr)
    print_table(rows)
    from maskahand.core.configbase import save_config
    from maskahand.core.fsutil import atomic_write_text

    out = Path(args.out)
    save_config(recipe, out)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
