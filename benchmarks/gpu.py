"""Every GPU figure of the project in one run: ``python -m benchmarks.gpu`` (``make bench-gpu``).

On one CUDA device (``--device``, default ``cuda:0``), one section per stage, each reusing the stage's own
benchmark module (nothing is re-implemented here):

- **detector** (:mod:`benchmarks.detector`): hircnn, random weights (speed does not depend on them), fp16
  autocast, batch 1 and 16, input 800x1333, real frames of the shared videos;
- **mining** (:mod:`benchmarks.mine`): frames/s of the Ray pipeline with GPU detector actors vs the naive
  sequential miner, same hircnn detector on the same GPU;
- **synthesis** (:mod:`benchmarks.synth`): targets/s of batched synthesis at batch 64 and 256, and the
  share of the stage spent on JPEG/PNG decode + encode of the samples;
- **afformer** (:mod:`benchmarks.model`): forward+backward in bf16 at T = 32, batch 8 and 16, efficient vs
  reference attention: samples/s, peak memory, and which SDPA kernel ran (read from the profiler);
- **trainer**: ``maskahand pretrain`` for a few dozen bf16 steps at T = 32 on shards made by
  :mod:`benchmarks.train`: samples/s and the fraction of time spent waiting for data, as the trainer
  itself logs them.

GPU utilisation (mean / max %, and peak memory used) is sampled during each section with NVML
(``pynvml``) or ``nvidia-smi``. Results: ``OUT/results.json`` and ``OUT/results.md`` (one table). A section
that fails is recorded with its error and the others still run. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]

SDPA_KERNELS = {  # aten op -> the kernel it stands for
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "mem_efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


# -- GPU utilisation -----------------------------------------------------------------------------------


class UtilSampler:
    """Samples GPU utilisation (%) and memory used (MiB) of one device in the background.

    NVML when ``pynvml`` imports, else ``nvidia-smi``; with neither, :meth:`summary` says so.
    """

    def __init__(self, index: int = 0, period: float = 0.2) -> None:
        self.index, self.period = index, period
        self.samples: list[tuple[float, float]] = []
        self.source = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read: Callable[[], tuple[float, float] | None] | None = None

    def _nvml(self) -> Callable[[], tuple[float, float] | None] | None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:  # noqa: BLE001 - no driver: fall back
            return None

        def read() -> tuple[float, float] | None:
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            return float(util.gpu), mem.used / 2**20

        self.source = "nvml"
        return read

    def _smi(self) -> Callable[[], tuple[float, float] | None] | None:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        cmd = [
            exe,
            f"--id={self.index}",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]

        def read() -> tuple[float, float] | None:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            if r.returncode != 0:
                return None
            util, mem = (float(v) for v in r.stdout.strip().splitlines()[0].split(","))
            return util, mem

        self.source = "nvidia-smi"
        return read

    def _loop(self) -> None:
        assert self._read is not None
        while not self._stop.is_set():
            try:
                sample = self._read()
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                sample = None
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self.period)

    def __enter__(self) -> UtilSampler:
        self._read = self._nvml() or self._smi()
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> Row:
        if not self.samples:
            return {"gpu_util_source": self.source, "gpu_util_mean": None, "gpu_util_max": None}
        util = [u for u, _ in self.samples]
        return {
            "gpu_util_source": self.source,
            "gpu_util_mean": round(sum(util) / len(util), 1),
            "gpu_util_max": round(max(util), 1),
            "gpu_mem_used_max_mib": round(max(m for _, m in self.samples)),
            "gpu_util_samples": len(util),
        }


# -- which SDPA kernel ----------------------------------------------------------------------------------


def sdpa_kernels(step: Callable[[], object]) -> list[str]:
    """The scaled-dot-product-attention kernels that ``step()`` dispatched to (profiler op names)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    found = sorted({kernel for op, kernel in SDPA_KERNELS.items() if op in names})
    return found or ([] if "aten::scaled_dot_product_attention" not in names else ["unknown"])


# -- sections ------------------------------------------------------------------------------------------


def bench_detector(args: argparse.Namespace) -> list[Row]:
    from benchmarks.detector import hircnn_cfg, load_frames, time_detector

    frames = load_frames(args.data, args.detector_frames, None)
    cfg = hircnn_cfg("cuda", 800, 1333, amp=True)  # the current device (main() sets it)
    rows = time_detector(cfg, frames, [1, 16], args.repeats)
    return [
        {"bench": "detector", "setting": f"hircnn fp16 batch {r['batch']} 800x1333", "value": r["fps"],
         "unit": "frames/s", **r}
        for r in rows
    ]  # fmt: skip


def mine_recipe(args: argparse.Namespace):
    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides

    return apply_overrides(
        MineRecipe(),
        [
            "detector.backend=hircnn",
            "detector.device=cuda",
            "detector.amp=true",
            "detector.batch_size=16",
            "detector.hircnn.allow_random_weights=true",
        ],
    )


def bench_mine(args: argparse.Namespace) -> list[Row]:
    import tempfile

    from benchmarks.mine import naive_mine, pipeline_mine, rates, repeated_inputs

    videos = sorted(p for p in (args.data / "videos").iterdir() if p.is_file())
    recipe = mine_recipe(args)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-mine-") as tmp:
        work = repeated_inputs(videos, Path(tmp), args.mine_repeat)
        naive = naive_mine(work, recipe)
        ours = pipeline_mine(work, recipe)
    naive_rate, ours_rate = rates(naive)["frames_per_s"], rates(ours)["frames_per_s"]
    return [
        {"bench": "mining", "setting": "naive sequential miner, hircnn on the GPU", "value": naive_rate,
         "unit": "frames/s", **naive},
        {"bench": "mining", "setting": "Ray pipeline, GPU detector actors (end to end)", "value": ours_rate,
         "unit": "frames/s", "speedup": ours_rate / naive_rate if naive_rate else None, **ours},
        {"bench": "mining", "setting": "Ray pipeline after actor start-up", "value": ours["steady_frames_per_s"],
         "unit": "frames/s"},
    ]  # fmt: skip


def bench_synth(args: argparse.Namespace) -> list[Row]:
    import torch

    from benchmarks.synth import bench_batched, load_clips, stage_split
    from maskahand.core.config import SynthConfig
    from maskahand.shards.schema import ClipSample
    from maskahand.synth.recipe import sample_params

    device = torch.device(args.device)
    cfg = SynthConfig(device="cuda")
    clips = [c for c in load_clips(args.data) if c.meta["interacting"]]
    frames, params = [], []
    variant = 0
    while len(params) < args.synth_targets:
        for c in clips:
            p = sample_params(cfg, c.key, c.meta, variant)
            frames.append(c.frames[p["frame"]])
            params.append(p)
        variant += 1
    rows: list[Row] = []
    for batch in (64, 256):
        reps = max(1, -(-batch // len(params)))
        rate = bench_batched(frames, params, batch, device, repeats=reps)
        rows.append(
            {"bench": "synthesis", "setting": f"targets, batch {batch}", "value": rate, "unit": "targets/s"}
        )
    sample = [ClipSample(c.key, c.frames.to(device), c.meta) for c in clips[:4]]
    split = stage_split(sample, SynthConfig(batch_size=64, device="cuda"), device)
    total = sum(split.values())
    share = (split["decode_s_per_clip"] + split["encode_s_per_clip"]) / total
    rows.append({"bench": "synthesis", "setting": "whole stage (decode + synth + encode), batch 64",
                 "value": cfg.variants / total, "unit": "targets/s", **split})  # fmt: skip
    rows.append({"bench": "synthesis", "setting": "JPEG/PNG decode + encode share of the stage",
                 "value": 100 * share, "unit": "%"})  # fmt: skip
    return rows


def afformer_sdpa_kernels(cfg, frames: int, size: int, device: str) -> dict[str, list[str]]:
    """Per attention mode, the SDPA kernels one bf16 forward+backward of batch 1 dispatches to."""
    import torch

    from benchmarks.model import make_inputs, sized_for
    from maskahand.afformer.model import build_model

    model = build_model(sized_for(cfg, frames)).to(device).train()
    video, image, target = make_inputs(1, frames, size, device)
    kernels: dict[str, list[str]] = {}
    for mode in ("efficient", "reference"):
        model.set_attention_mode(mode)

        def step() -> None:
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                loss = model.loss(model(video, image), target).total
            loss.backward()

        kernels[mode] = sdpa_kernels(step)
    return kernels


def bench_afformer(args: argparse.Namespace) -> list[Row]:
    import torch

    from benchmarks.model import gpu_runs
    from maskahand.core.config import AfformerConfig

    cfg = AfformerConfig()
    frames = 32
    kernels = afformer_sdpa_kernels(cfg, frames, args.size, args.device)
    torch.cuda.empty_cache()
    rows = gpu_runs(cfg, [8, 16], frames, args.size, args.afformer_iters, warmup=2)
    return [
        {"bench": "afformer", "setting": f"fwd+bwd bf16 T={frames} batch {r['batch']}, {r['mode']} attention",
         "value": r.get("samples_per_s"), "unit": "samples/s", "peak_gb": r.get("max_allocated_gb"),
         "sdpa_kernel": "+".join(kernels.get(r["mode"], [])) or "none", **r}
        for r in rows
    ]  # fmt: skip


def bench_trainer(args: argparse.Namespace) -> list[Row]:
    """``maskahand pretrain`` for a few dozen steps on shards made by :func:`benchmarks.train.make_shards`;
    samples/s and the data-wait fraction are the trainer's own (``log.jsonl``, last logged window)."""
    import tempfile

    from benchmarks.train import make_shards

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-train-") as tmp:
        shards = make_shards(Path(tmp) / "shards", clips=args.train_clips, frames=32)
        for batch in args.train_batches:
            run = Path(tmp) / f"run-b{batch}"
            cmd = [sys.executable, "-m", "maskahand.cli", "pretrain", "--shards", str(shards), "--out", str(run),
                   f"train.batch_size={batch}", f"train.max_iters={args.train_steps}", "train.num_frames=32",
                   f"train.log_every={max(1, args.train_steps // 2)}", "train.device=cuda", "optim.precision=bf16",
                   f"train.workers={args.train_workers}", f"train.ckpt_every={10 * args.train_steps}"]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"pretrain failed (batch {batch}): {proc.stderr[-1500:]}")
            last = [
                json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()
            ][-1]
            rows.append({"bench": "trainer", "setting": f"pretrain bf16 T=32 batch {batch}, {args.train_workers} "
                         "loader workers", "value": last.get("train/samples_per_s"), "unit": "samples/s",
                         "peak_gb": last.get("train/peak_gpu_mem_gb"),
                         "data_wait_fraction": last.get("train/data_wait_fraction"),
                         "note": f"data wait {100 * last.get('train/data_wait_fraction', float('nan')):.0f}% of the time"})  # fmt: skip
    return rows


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "detector": bench_detector,
    "mining": bench_mine,
    "synthesis": bench_synth,
    "afformer": bench_afformer,
    "trainer": bench_trainer,
}


# -- report ----------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def markdown_table(rows: list[Row]) -> str:
    """One Markdown table: benchmark, setting, value, unit, extras (peak memory, SDPA kernel, GPU util)."""
    head = "| benchmark | setting | value | unit | peak GB | SDPA kernel | GPU util mean / max % | note |"
    lines = [head, "|---|---|---:|---|---:|---|---|---|"]
    for r in rows:
        util = f"{_fmt(r.get('gpu_util_mean'))} / {_fmt(r.get('gpu_util_max'))}"
        lines.append(
            f"| {r['bench']} | {r.get('setting', '')} | {_fmt(r.get('value'))} | {r.get('unit', '')} | "
            f"{_fmt(r.get('peak_gb'))} | {r.get('sdpa_kernel', '')} | {util} | "
            f"{r.get('error') or r.get('note') or ''} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data (videos/)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench-gpu"), help="results.json, results.md")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections only")
    p.add_argument("--repeats", type=int, default=2, help="timed passes (best is reported)")
    p.add_argument("--detector-frames", type=int, default=128)
    p.add_argument("--mine-repeat", type=int, default=4, help="mine the shared videos this many times")
    p.add_argument("--synth-targets", type=int, default=512)
    p.add_argument("--afformer-iters", type=int, default=5)
    p.add_argument("--size", type=int, default=256, help="Afformer input side (paper: 256)")
    p.add_argument("--train-batches", type=int, nargs="+", default=[8, 16])
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--train-clips", type=int, default=32, help="clips in the trainer's synthetic shards")
    p.add_argument("--train-workers", type=int, default=4, help="DataLoader workers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench-gpu: no CUDA device on this machine; the GPU benchmarks need one (nothing run)")
        return 0
    from maskahand.core.fsutil import atomic_write_text

    torch.cuda.set_device(args.device)
    index = torch.device(args.device).index or 0
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(index),
        "torch": torch.__version__,
        "rows": [],
    }
    for name, fn in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        with UtilSampler(index) as sampler:
            try:
                rows = fn(args)
            except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
                traceback.print_exc()
                rows = [
                    {
                        "bench": name,
                        "setting": "",
                        "value": None,
                        "unit": "",
                        "error": f"{type(e).__name__}: {e}",
                    }
                ]
        util = sampler.summary()
        for r in rows:
            r.update({k: v for k, v in util.items() if k not in r}, section_seconds=time.perf_counter() - t0)
            print(json.dumps(r, default=str), flush=True)
        result["rows"] += rows
    args.out.mkdir(parents=True, exist_ok=True)
    table = f"GPU benchmarks on {result['device']} (torch {result['torch']})\n\n" + markdown_table(
        result["rows"]
    )
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(args.out / "results.md", table)
    print(table)
    print(f"results: {args.out / 'results.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
