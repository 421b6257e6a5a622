"""``maskahand detector run | train | eval``.

Heavy imports (torch, mediapipe) happen inside the handlers so ``maskahand --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import DetectorRecipe, DetectorTrainRecipe
from ..core.configbase import save_config
from ..core.plugins import DETECTOR_BACKENDS
from . import build_detector

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detector",
        help="hand-interaction detectors: run on an image/video, train/eval hircnn on 100DOH",
        description=f"Hand-interaction detectors ({', '.join(DETECTOR_BACKENDS.names())}) and 100DOH training.",
    )
    dsub = p.add_subparsers(dest="detector_command", metavar="COMMAND", required=True)

    run = dsub.add_parser(
        "run",
        help="draw detected hands (box, state, score) on an image (.png/.jpg) or a video (.mp4)",
        epilog="e.g. maskahand detector run clip.mp4 --out hands.mp4 detector.backend=mediapipe video.fps=5",
    )
    run.add_argument("input", metavar="IMAGE_OR_VIDEO", help="an image, a video file or an EPIC frame folder")
    run.add_argument("--out", required=True, metavar="FILE", help=".png/.jpg for an image, .mp4 for a video")
    run.add_argument(
        "--backend",
        choices=DETECTOR_BACKENDS.names(),
        help=f"detector.backend: {DETECTOR_BACKENDS.help_text()}",
    )
    run.add_argument("--weights", metavar="PTH", help="detector.hircnn.weights")
    add_config_option(run)
    run.set_defaults(func=_run)

    train = dsub.add_parser(
        "train",
        help="train the hircnn Faster R-CNN on 100DOH VOC data (torchrun for DDP)",
        epilog="DDP: torchrun --nproc-per-node N -m maskahand.cli detector train --data VOC2007 ...",
    )
    train.add_argument("--data", metavar="VOC_ROOT", help="train.data_root (Annotations/, JPEGImages/, ...)")
    train.add_argument("--out", metavar="DIR", help="train.out_dir")
    train.add_argument("--resume", metavar="PTH", help="train.resume: continue from a checkpoint")
    train.add_argument("--coco-weights", metavar="PTH", help="train.coco_weights: local COCO initialisation")
    add_config_option(train)
    train.set_defaults(func=_train)

    ev = dsub.add_parser("eval", help="AP@0.5 for hands and hand+state of a weights file on a VOC split")
    ev.add_argument("--data", metavar="VOC_ROOT", help="train.data_root")
    ev.add_argument("--weights", required=True, metavar="PTH", help="checkpoint or authors' hircnn weights")
    ev.add_argument("--split", help="split list name (default: train.test_split)")
    ev.add_argument(
        "--out", metavar="DIR", help="where metrics.json and config.yaml go (default: train.out_dir)"
    )
    add_config_option(ev)
    ev.set_defaults(func=_eval)


def _run(args: argparse.Namespace) -> int:
    # deferred: numpy, torch at import
    from ..runtime.weights import WeightsFileError
    from .draw import annotate_image, annotate_video, is_image

    recipe = load_recipe(
        DetectorRecipe, args, **{"detector.backend": args.backend, "detector.hircnn.weights": args.weights}
    )
    src, out = Path(args.input), Path(args.out)
    if not src.exists():
        raise UsageError(f"{src} does not exist")
    try:
        with build_detector(recipe.detector) as detector:
            if is_image(src):
                hands = annotate_image(detector, src, out)
                summary: dict[str, Any] = {"input": str(src), "out": str(out)}
                summary["hands"] = [h.to_dict() for h in hands]
            else:
                frames = annotate_video(detector, src, out, recipe)
                summary = {"input": str(src), "out": str(out), "frames": frames}
            summary["detector"] = detector.describe()
    except WeightsFileError as e:  # detector.hircnn.weights is missing or names an unusable file
        raise UsageError(str(e)) from e
    save_config(recipe, out.parent, name=f"{out.stem}.config.yaml")
    print(json.dumps(summary))
    return 0


def _train(args: argparse.Namespace) -> int:
    # deferred: numpy, torch, torchvision at import
    from ..runtime.distributed import is_main
    from .train import train

    recipe = load_recipe(
        DetectorTrainRecipe,
        args,
        **{
            "train.data_root": args.data,
            "train.out_dir": args.out,
            "train.resume": args.resume,
            "train.coco_weights": args.coco_weights,
        },
    )
    record = train(recipe)
    if is_main():
        print(json.dumps({k: v for k, v in record.items() if k != "losses"}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    # deferred: numpy, torch, torchvision at import
    from ..runtime.distributed import is_main
    from .train import evaluate_weights

    recipe = load_recipe(DetectorTrainRecipe, args, **{"train.data_root": args.data})
    metrics = evaluate_weights(
        recipe, args.weights, args.split or recipe.train.test_split, args.out or recipe.train.out_dir
    )
    if is_main():
        print(json.dumps(metrics))
    return 0
