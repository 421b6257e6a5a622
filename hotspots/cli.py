"""``maskahand hotspots train``: Interaction Hotspots on the shared trainer, one process or many under torchrun.

maskahand hotspots train --dataset opra --data ROOT --out RUN --weights resnet50-imagenet.pth [key=value ...]
torchrun --nproc-per-node N -m maskahand.cli hotspots train --dataset epic_hotspots --data ROOT --out RUN ...
maskahand hotspots train ... --resume [CHECKPOINT]          # default: RUN's latest checkpoint
maskahand eval --dataset opra --data ROOT --checkpoint RUN/hotspots_model.pth --model hotspots --out DIR
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import HotspotsRecipe

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hotspots", help="Interaction Hotspots (weakly supervised affordances): train")
    hs = p.add_subparsers(dest="hotspots_command", metavar="COMMAND", required=True)
    t = hs.add_parser(
        "train",
        help="train on OPRA or EPIC-Hotspots (torchrun for many GPUs)",
        description=(
            "Train Interaction Hotspots (their recipe: Adam 1e-4, weight decay 5e-4, batch 128, 20 epochs, "
            "lr / 10 after 15; L2 anticipation on OPRA, triplet on EPIC). Run folder: checkpoints/, "
            "TensorBoard events, log.jsonl, config.yaml and hotspots_model.pth (their checkpoint format). "
            "Keys: data.epochs, train.batch_size, model.max_len, data.crop, model.image_size, ..."
        ),
    )
    t.add_argument("--dataset", choices=["opra", "epic_hotspots"], help="default: data.dataset (opra)")
    t.add_argument("--data", required=True, metavar="ROOT", help="dataset root (clips, images, annotations)")
    t.add_argument("--annotations", metavar="JSON", help="default: ROOT/annotations/train.json (OPRA), "
                   "ROOT/data/epic/annotations.json, else ROOT/annotations.json (EPIC)")  # fmt: skip
    t.add_argument(
        "--weights", metavar="PTH", help="torchvision ImageNet resnet50 state dict (model.backbone_weights)"
    )
    t.add_argument("--out", help="run folder (default: train.out_dir)")
    t.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue a run: its latest checkpoint (no value) or the given one")  # fmt: skip
    add_config_option(t)
    t.set_defaults(func=run_train)

    pr = hs.add_parser(
        "predict",
        help="hotspot maps of images for every verb (IntCAM), saved with overlays",
        description="Write OUT/hotspots.pt ({images, verbs, maps (N, verbs, h, w)}) and one overlay PNG per "
        "(image, verb). Checkpoints: a training checkpoint, hotspots_model.pth, or the authors' ckpt_E_20.pth.",
    )
    pr.add_argument("images", nargs="+", help="image files or folders of .jpg/.png")
    pr.add_argument("--checkpoint", required=True, metavar="CKPT")
    pr.add_argument("--out", required=True, metavar="DIR")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda")
    pr.set_defaults(func=run_predict)


def prepare(args: argparse.Namespace):
    """(recipe, training set): the recipe completed from the data (verbs, the dataset's loss, max_iters)."""

    # deferred: numpy, torch at import
    from .data import load_training_set, steps_per_epoch

    recipe = load_recipe(
        HotspotsRecipe,
        args,
        **{
            "data.dataset": args.dataset,
            "data.annotations": args.annotations,
            "model.backbone_weights": args.weights,
            "train.out_dir": args.out,
            "train.resume": args.resume,
        },
    )
    tset = load_training_set(recipe.data, args.data)
    model = replace(recipe.model, num_verbs=len(tset.verbs))
    explicit = {o.split("=", 1)[0] for o in getattr(args, "overrides", [])}
    if (
        recipe.data.dataset == "epic_hotspots"
        and "model.ant_loss" not in explicit
        and model.ant_loss == "mse"
    ):
        model = replace(model, ant_loss="triplet")  # seed 000 S4: triplet on EPIC
    # train.batch_size is the global batch: the same steps per epoch on any number of processes
    iters = recipe.data.epochs * steps_per_epoch(len(tset.items), recipe.train.batch_size)
    recipe = replace(
        recipe, model=model, train=replace(recipe.train, max_iters=iters, num_frames=model.max_len)
    )
    return recipe, tset


def run_train(args: argparse.Namespace) -> int:
    # deferred: numpy, torch at import
    from ..runtime.distributed import is_main
    from ..trainer.launch import run_training
    from .data import HotspotsDataError
    from .task import HotspotsTask

    try:
        recipe, tset = prepare(args)
    except HotspotsDataError as e:  # a missing or malformed training set: fix the command (exit 2)
        raise UsageError(str(e)) from e
    if is_main():  # before the process group exists: torchrun's RANK
        log.info(
            "hotspots %s: %d items, %d verbs, %d epochs = %d steps",
            tset.dataset, len(tset.items), len(tset.verbs), recipe.data.epochs, recipe.train.max_iters,
        )  # fmt: skip
    run_training(lambda: HotspotsTask(recipe, tset), recipe, "hotspots train")
    return 0


def run_predict(args: argparse.Namespace) -> int:

    # deferred: numpy, torch at import
    from .data import HotspotsDataError, read_image
    from .predict import image_files, predict_images

    files = image_files(args.images)
    try:
        images = [read_image(f) for f in files]
    except HotspotsDataError as e:  # a missing or unreadable image: fix the command (exit 2)
        raise UsageError(str(e)) from e
    predict_images(files, images, args.checkpoint, Path(args.out), args.device)
    return 0
