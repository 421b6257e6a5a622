"""``maskahand finetune``: supervised fine-tuning of Afformer on OPRA / EPIC-Hotspots / AssistQ.

maskahand finetune --dataset opra --data ROOT --init CKPT|coco|none --out RUN [key=value ...]
torchrun --nproc-per-node N -m maskahand.cli finetune ...       # many GPUs
maskahand finetune ... --resume [CHECKPOINT]                      # default: RUN's latest checkpoint
"""

from __future__ import annotations

import argparse

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import FinetuneRecipe
from ..core.plugins import DATASETS
from ..evaluation.benchmark import AnnotationError, load_benchmark


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune Afformer on a benchmark (the authors' OPRA recipe; torchrun for many GPUs)",
        description=(
            "Fine-tune Afformer (one heatmap per action + action head) on the benchmark's train split, "
            "evaluating on --eval-split every train.eval_every steps. Run folder: checkpoints/, TensorBoard, "
            "log.jsonl, config.yaml, afformer_finetuned.pth (authors' names). Score it with `maskahand eval`."
        ),
    )
    p.add_argument("--dataset", choices=DATASETS.names(), default="opra", help=DATASETS.help_text())
    p.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="dataset root in the authors' layout (a folder or an fsspec URL such as s3://bucket/opra)",
    )
    p.add_argument("--init", required=True, metavar="CKPT|coco|none", help="initial weights")
    p.add_argument("--out", help="run folder (default: train.out_dir)")
    p.add_argument("--split", default="train")
    p.add_argument("--eval-split", default="test", help="periodic evaluation split ('none': no evaluation)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    recipe = load_recipe(FinetuneRecipe, args, **{"train.out_dir": args.out, "train.resume": args.resume})
    try:
        train = load_benchmark(args.dataset, None, args.data, split=args.split)
        val = (
            None
            if args.eval_split == "none"
            else load_benchmark(args.dataset, None, args.data, split=args.eval_split)
        )
    except AnnotationError as e:  # a missing or malformed annotation file: fix the command (exit 2)
        raise UsageError(str(e)) from e
    # deferred: numpy, torch, torchvision at import
    from ..trainer.launch import run_training  # torch and the model: only once the data is there
    from .task import FinetuneTask

    run_training(lambda: FinetuneTask(recipe, train, val, args.init), recipe, "finetune")
    return 0
