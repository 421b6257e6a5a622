"""``maskahand pretrain``: MaskAHand pretraining of Afformer, one process or many under torchrun.

maskahand pretrain --shards DIR [DIR ...] --out RUN [key=value ...]
maskahand pretrain --clips DIR [DIR ...] --out RUN          # fresh targets every step
torchrun --nproc-per-node N -m maskahand.cli pretrain --shards DIR --out RUN
maskahand pretrain ... --resume [CHECKPOINT]                 # default: RUN's latest checkpoint
"""

from __future__ import annotations

import argparse
import logging

from ..core.cli_util import add_config_option, load_recipe
from ..core.config import PretrainRecipe

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="MaskAHand pretraining of Afformer on synth shards (torchrun for many GPUs)",
        description=(
            "Pretrain Afformer on MaskAHand shards (--shards) or on clip shards with targets synthesized "
            "on the training device every step (--clips). Run folder: checkpoints/, TensorBoard events, "
            "log.jsonl, config.yaml and the final weights in the authors' layout. Keys: train.max_iters, "
            "train.batch_size, train.num_frames, train.ckpt_every, model.image_size, optim.precision, ..."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--shards", nargs="+", metavar="DIR", help="MaskAHand shard folders or files (synth's output)"
    )
    src.add_argument(
        "--clips", nargs="+", metavar="DIR", help="clip shard folders (mine's output): synthesize per step"
    )
    p.add_argument("--out", help="run folder (default: train.out_dir)")
    p.add_argument(
        "--val", nargs="+", metavar="DIR", help="held-out MaskAHand shards: pretext KL every train.eval_every"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue a run: its latest checkpoint (no value) or the given one",
    )
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred: cv2, numpy, torch, torchvision at import
    from ..trainer.launch import run_training
    from .task import PretrainTask

    recipe = load_recipe(PretrainRecipe, args, **{"train.out_dir": args.out, "train.resume": args.resume})
    run_training(
        lambda: PretrainTask(
            recipe, shards=args.shards, clips=args.clips, synth=recipe.synth, val_shards=args.val
        ),
        recipe,
        "pretrain",
    )
    return 0
