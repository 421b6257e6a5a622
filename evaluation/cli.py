"""``maskahand eval`` (a checkpoint or a baseline on a benchmark) and ``maskahand ground`` (one pair)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import EvalRecipe
from ..core.configbase import save_config
from ..core.plugins import DATASETS
from .benchmark import AnnotationError, load_benchmark

log = logging.getLogger("maskahand.eval")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a checkpoint or a baseline on a benchmark (both published protocols)",
        description=(
            "Score a checkpoint (--checkpoint) or a baseline (--baseline) on OPRA / EPIC-Hotspots / AssistQ "
            "under the 256x256 (Afformer) and 28x28 (Interaction Hotspots) protocols. Writes OUT/metrics.json, "
            "OUT/results.md (beside the paper's rows) and OUT/overlays.png. Runs under torchrun "
            "(predictions are gathered by entry). Baselines need only the annotations."
        ),
    )
    p.add_argument("--dataset", choices=DATASETS.names(), default="opra", help=DATASETS.help_text())
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="dataset root (images and clips; default annotations in it), a folder or an fsspec URL",
    )
    p.add_argument(
        "--annotations",
        metavar="JSON",
        help="annotation file, a path or an fsspec URL (default in ROOT: OPRA annotations/SPLIT.json, EPIC data/epic/annotations.json)",
    )
    p.add_argument("--split", default="test")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="CKPT", help="model checkpoint to score")
    what.add_argument("--baseline", choices=["center-bias", "uniform"], help="score a baseline instead")
    p.add_argument("--model", default="afformer", help="predictor for --checkpoint: afformer | hotspots")
    p.add_argument("--protocol", choices=["256", "28", "both"], help="default: eval.protocol (both)")
    p.add_argument("--out", required=True, metavar="DIR")
    add_config_option(p)
    p.set_defaults(func=run_eval_command)

    g = sub.add_parser(
        "ground",
        help="heatmap of a demonstration video's interaction on a target image",
        description="Ground a video on an image with a checkpoint. OUT.png (or .jpg): the image with the "
        "heatmap summed over the video's clips; OUT.mp4 / .webm / .gif: a moving overlay, the video beside the "
        "image with the heatmap of the current sliding window (eval.clip_length / clip_stride at "
        "eval.clip_fps; eval.overlay_fps, eval.overlay_height) and a colour bar. A fine-tuned model adds its "
        "top actions.",
    )
    g.add_argument("video", help="video file (any container the reader takes), frame folder or URL")
    g.add_argument("image", help="target image (a file or URL)")
    g.add_argument("--checkpoint", required=True, metavar="CKPT")
    g.add_argument("--model", default="afformer")
    g.add_argument("--out", required=True, metavar="PNG|MP4|WEBM|GIF")
    g.add_argument("--top", type=int, default=3, help="actions listed for a model with an action head")
    add_config_option(g)
    g.set_defaults(func=run_ground_command)


def _protocols(choice: str) -> list[str]:
    return ["256", "28"] if choice == "both" else [choice]


def run_eval_command(args: argparse.Namespace) -> int:
    # deferred: numpy, torch, tqdm at import
    from ..runtime import distributed as dist
    from .evaluate import run_eval
    from .groundtruth import GroundTruth
    from .predictor import Predictor
    from .report import results_markdown, write_outputs

    recipe = load_recipe(EvalRecipe, args, **{"eval.protocol": args.protocol})
    try:
        bench = load_benchmark(args.dataset, args.annotations, args.data, split=args.split)
    except AnnotationError as e:  # a missing or malformed annotation file: fix the command (exit 2)
        raise UsageError(str(e)) from e
    if args.checkpoint and bench.root is None:
        raise UsageError("a checkpoint needs the images and clips: give --data ROOT")
    info = dist.init_distributed(recipe.eval.device)
    try:
        if args.baseline:
            # deferred: torch at import
            from .baselines import build_baseline

            predictor: Predictor = build_baseline(args.baseline)
        else:
            # deferred: torch at import
            from .predictor import build_predictor

            predictor = build_predictor(args.model, args.checkpoint, recipe, info.device)
        protocols = _protocols(recipe.eval.protocol)
        if info.is_main:
            log.info(
                "eval %s/%s: %d entries, %d maps, %d pairs; %s; protocols %s; %d process(es)",
                bench.name, bench.split, len(bench.entries), bench.num_maps(), len(bench.pairs()),
                predictor.name, "+".join(protocols), info.world_size,
            )  # fmt: skip
        result = run_eval(bench, predictor, protocols, recipe.eval, recipe.video)
        if info.is_main and result is not None:
            out = Path(args.out)
            save_config(recipe, out)
            gt = GroundTruth(bench, recipe.eval.cache_dir, progress=False)
            metrics = write_outputs(out, bench, predictor.name, result, gt, recipe.eval.image_size)
            print(results_markdown(metrics))
            log.info("wrote %s, %s, %s", out / "metrics.json", out / "results.md", out / "overlays.png")
    finally:
        dist.shutdown_distributed()
    return 0


def run_ground_command(args: argparse.Namespace) -> int:
    # deferred: PIL, numpy, torch at import
    from .ground import ground, output_kind

    try:
        output_kind(args.out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    recipe = load_recipe(EvalRecipe, args)
    ground(args.video, args.image, args.checkpoint, args.out, recipe, model=args.model, top=args.top)
    return 0
