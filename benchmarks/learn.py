"""Does MaskAHand pretraining learn? A small CPU run on clips mined from the shared videos.

1. ``maskahand mine`` (mediapipe) the shared videos and ``maskahand synth`` MaskAHand targets at a
   small size (both resumable: a rerun reuses the folders under ``--out``);
2. hold out every clip of one video (``--holdout``, default: the video with the most clips);
3. pretrain a small configuration on the other clips with the real trainer (``fit``), by default with a
   fresh target per clip and step (``pretrain --clips``; ``--targets stored``: the K stored ones, which
   9 clips let the model memorise; ``--train-variants K`` keeps the first K of them, as a
   ``synth.variants=K`` run would have stored). Without COCO weights the encoder is random and frozen; its frozen
   BatchNorms get training-frame statistics first (``calibrate_frozen_bn``), without which the heatmap
   ignores the target image and the held-out KL gets worse than at step 0;
4. report the pretext KL on the held-out targets at step 0, at the end, and for the Center Bias
   baseline (a centred Gaussian, its best width chosen on the held-out targets themselves);
5. save the loss curve as a picture and everything as JSON.

    python -m benchmarks.learn --data ../shared/data --out outputs/bench-learn [--steps 300] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

# small enough for a few minutes on a CPU; every key can be overridden on the command line
DEFAULTS = [
    "model.image_size=64",
    "model.hidden=64",
    "model.heads=1",
    "model.max_q_thw=[1,16,16]",
    "model.max_kv_thw=[4,8,8]",
    "model.trainable_backbone_layers=0",  # no COCO weights offline: a frozen random ResNet body
    "model.backbone_lr_factor=1.0",  # ... and a random FPN: nothing pretrained to protect with lr x 0.1
    "train.num_frames=4",
    "train.batch_size=4",
    "train.workers=0",
    "train.shuffle=32",
    "train.device=cpu",
    "train.log_every=1",
    "train.image_every=25",
    "train.ckpt_every=1000",
    "train.eval_every=25",
    "optim.lr=0.001",
    "optim.precision=fp32",
]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def prepare(data: Path, out: Path, size: int, variants: int) -> Path:
    """Mined clips and MaskAHand shards of the shared videos (reused when already complete)."""
    exe = [sys.executable, "-m", "maskahand.cli"]
    ray = ["ray.num_cpus=2", "ray.object_store_memory=300000000"]
    run([*exe, "mine", "--videos", str(data / "videos"), "--out", str(out / "clips"), "--no-progress", *ray])
    kernel = (size // 3) | 1
    shards = out / f"maskahand-{size}px-k{variants}"
    run(
        [*exe, "synth", "--clips", str(out / "clips"), "--out", str(shards), "--no-progress",
         f"synth.output_size={size}", f"synth.blur_kernel={kernel}", f"synth.variants={variants}",
         "synth.device=cpu", *ray]
    )  # fmt: skip
    return shards


def split_by_video(
    src: Path, out: Path, holdout: str | None, train_variants: int | None = None
) -> tuple[Path, Path, str, dict[str, int]]:
    """Rewrite the samples into train/ and heldout/ shard folders, one video held out; training samples
    keep their first ``train_variants`` targets (None: all), the held-out ones all of theirs."""
    from maskahand.shards import maskahand_dataset

    by_video: dict[str, list] = defaultdict(list)
    for s in maskahand_dataset(src, shuffle=0, rank=0, world_size=1, on_error="raise"):
        by_video[s.meta["video_id"]].append(s)
    counts = {v: len(s) for v, s in by_video.items()}
    if len(by_video) < 2:
        raise SystemExit(f"need clips of at least two videos to hold one out, got {counts}")
    held = holdout or max(counts, key=lambda v: counts[v])
    if held not in by_video:
        raise SystemExit(f"--holdout {held!r}: no clips of that video (videos: {sorted(counts)})")
    train_dir, held_dir = out / "split" / "train", out / "split" / "heldout"
    train = [s for v, ss in sorted(by_video.items()) if v != held for s in ss]
    if train_variants is not None:
        from dataclasses import replace

        def first(s, k: int = train_variants):
            meta = {**s.meta, "targets": s.meta.get("targets", [])[:k]}
            return replace(s, targets=s.targets[:k], heatmaps=s.heatmaps[:k], meta=meta)

        train = [first(s) for s in train]
    _write(train_dir, "maskahand", train)
    _write(held_dir, "maskahand", by_video[held])
    return train_dir, held_dir, held, counts


def train_clips(clips: Path, out: Path, held: str) -> Path:
    """The mined clips of every video but the held-out one (for fresh targets every step)."""
    from maskahand.shards import clip_dataset

    keep = [s for s in clip_dataset(clips, shuffle=0, rank=0, world_size=1, on_error="raise")]
    d = out / "split" / "train-clips"
    _write(d, "clip", [s for s in keep if s.meta["video_id"] != held])
    return d


def _write(d: Path, kind: str, samples: list) -> None:
    from maskahand.core.config import ShardWriterConfig
    from maskahand.shards.writer import ShardWriter

    if d.exists():
        for f in d.glob("*"):
            f.unlink()
    with ShardWriter(d, kind, ShardWriterConfig(max_samples=16), kind=kind) as w:  # type: ignore[arg-type]
        for s in samples:
            w.write(s)


def calibrate_frozen_bn(model, train_dir: Path, size: int, samples: int = 8) -> None:
    """Give a RANDOM encoder's frozen BatchNorms the statistics of training frames (one pass, layer by
    layer). With mean 0 / var 1 the random ResNet's activations grow ~20x from C2 to C5, so the FPN's
    top-down sum drowns the fine levels the heatmap is decoded from; pretrained weights bring real
    statistics, a random encoder has none."""
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    from maskahand.pretrain.task import resize_square
    from maskahand.shards import maskahand_dataset

    images = []
    for s in maskahand_dataset(train_dir, shuffle=0, rank=0, world_size=1):
        images += [s.frames[0], s.targets[0]]
        if len(images) >= samples:
            break
    x = resize_square(torch.stack(images), size)

    def hook(m, inp):
        m.running_mean.copy_(inp[0].mean((0, 2, 3)))
        m.running_var.copy_(inp[0].var((0, 2, 3)))

    enc = model.encoder
    handles = [m.register_forward_pre_hook(hook) for m in enc.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad():
            enc.pyramid(enc.body_features(x), ["p2", "p3", "p4"])
    finally:
        for h in handles:
            h.remove()


def plot_curve(log_path: Path, out_png: Path, marks: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    steps = [r["step"] for r in recs if "train/loss" in r]
    loss = [r["train/loss"] for r in recs if "train/loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, loss, label="train KL (batch)", color="tab:blue", alpha=0.8)
    val = [(r["step"], r["eval/val_kld"]) for r in recs if "eval/val_kld" in r]
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", label="held-out KL")
    colors = {
        "held-out KL, step 0": "tab:red",
        "held-out KL, end": "tab:green",
        "Center Bias (held-out)": "k",
    }
    for name, value in marks.items():
        ax.axhline(value, ls="--", color=colors.get(name, "gray"), label=f"{name}: {value:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("KL divergence")
    ax.set_title("MaskAHand pretext, small CPU run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="folder with videos/")
    p.add_argument("--out", default="outputs/bench-learn")
    p.add_argument("--steps", type=int, default=300, help="train.max_iters")
    p.add_argument("--holdout", help="video_id to hold out (default: the one with the most clips)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--variants", type=int, default=16, help="stored targets per clip (held-out evaluation)")
    p.add_argument(
        "--train-variants",
        type=int,
        help="--targets stored: train on the first K stored targets of each clip (default: all --variants)",
    )
    p.add_argument(
        "--no-calibrate-bn",
        dest="calibrate_bn",
        action="store_false",
        help="keep the random encoder's frozen BN at mean 0 / var 1 instead of training-frame statistics",
    )
    p.add_argument(
        "--targets",
        choices=("fresh", "stored"),
        default="fresh",
        help="train on a fresh target per clip and step (pretrain --clips) or on the stored ones (--shards)",
    )
    args, overrides = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from maskahand.core.config import PretrainRecipe
    from maskahand.core.configbase import load_config
    from maskahand.pretrain.evaluate import center_bias_kld, pretext_kld
    from maskahand.pretrain.task import PretrainTask
    from maskahand.trainer import fit

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    recipe = load_config(PretrainRecipe, None, [*DEFAULTS, f"train.max_iters={args.steps}", *overrides])
    data = Path(args.data)
    if not (data / "videos").is_dir():
        raise SystemExit(f"{data}/videos not found (python -m benchmarks.learn --data DIR)")
    t0 = time.time()
    shards = prepare(data, out, recipe.model.image_size, args.variants)
    train_dir, held_dir, held, counts = split_by_video(shards, out, args.holdout, args.train_variants)
    prep_s = time.time() - t0
    print(f"clips per video: {counts}; held out: {held}", flush=True)

    bias, sigma = center_bias_kld(held_dir, recipe)
    run_dir = out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)

    class Task(PretrainTask):
        """Pretraining that also measures the held-out pretext KL before the first step."""

        def build_model(self):
            model = super().build_model()
            if args.calibrate_bn and not recipe.model.backbone_weights:
                calibrate_frozen_bn(model, train_dir, recipe.model.image_size)
            self.kld_start = pretext_kld(model, held_dir, recipe, torch.device("cpu"))
            return model

    if args.targets == "fresh":
        size = recipe.model.image_size
        recipe.synth.output_size, recipe.synth.blur_kernel, recipe.synth.device = size, (size // 3) | 1, "cpu"
        clips = train_clips(out / "clips", out, held)
        task = Task(recipe, clips=[str(clips)], synth=recipe.synth, val_shards=[str(held_dir)])
    else:
        task = Task(recipe, shards=[str(train_dir)], val_shards=[str(held_dir)])
    t1 = time.time()
    fit(task, recipe.optim, recipe.train, run_dir, config=recipe)
    train_s = time.time() - t1
    recs = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    kld_end = [r["eval/val_kld"] for r in recs if "eval/val_kld" in r][-1]
    result = {
        "held_out_video": held,
        "clips_per_video": counts,
        "steps": recipe.train.max_iters,
        "targets": args.targets,
        "train_variants": args.train_variants if args.targets == "stored" else None,
        "seed": recipe.train.seed,
        "global_batch": recipe.train.batch_size,
        "held_out_kld_step0": task.kld_start,
        "held_out_kld_end": kld_end,
        "center_bias_kld": bias,
        "center_bias_sigma_frac": sigma,
        "prepare_s": round(prep_s, 1),
        "train_s": round(train_s, 1),
        "s_per_step": round(train_s / recipe.train.max_iters, 2),
        "config": {k: v for k, v in (o.split("=", 1) for o in [*DEFAULTS, *overrides])},
    }
    marks = {
        "held-out KL, step 0": task.kld_start,
        "held-out KL, end": kld_end,
        "Center Bias (held-out)": bias,
    }
    plot_curve(run_dir / "log.jsonl", out / "loss_curve.png", marks)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    beats = kld_end < 0.9 * min(task.kld_start, bias)
    print(f"trained model {'beats' if beats else 'does NOT clearly beat'} step 0 and Center Bias "
          f"(criterion: end < 0.9 x the better of the two); picture: {out / 'loss_curve.png'}")  # fmt: skip
    return 0 if beats else 1


if __name__ == "__main__":
    sys.exit(main())
