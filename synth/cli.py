"""``maskahand synth``: clip shards -> MaskAHand shards; ``maskahand synth preview``: a contact sheet."""

from __future__ import annotations

import argparse

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import SynthRecipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="MaskAHand target synthesis: clip shards -> maskahand shards (Ray, batched, GPU/CPU)",
        description=(
            "Synthesize K masked, perspective-warped targets and blurred hand-box heatmaps per mined clip. "
            "Each input shard becomes one output shard of the same name; a rerun resumes. "
            "`maskahand synth preview DIR --out sheet.png` draws a contact sheet."
        ),
        epilog="Overrides: synth.hand_mask_scale=2.0 synth.random_masks=2 synth.fill=zero synth.distortion_scale=0.25",
    )
    p.add_argument(
        "--clips", metavar="DIR", help="clip shards (a directory of *.tar, a file or a brace pattern)"
    )
    p.add_argument("--out", metavar="DIR", help="output directory for maskahand shards")
    p.add_argument("--variants", type=int, metavar="K", help="targets per clip (synth.variants)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="synth.device")
    p.add_argument(
        "--address", metavar="RAY_ADDRESS", help="Ray cluster to join (default: RAY_ADDRESS or local)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_option(p)
    p.set_defaults(func=_run)
    # `synth` alone synthesizes; `synth preview` is an action of its own.
    actions = p.add_subparsers(dest="synth_command", metavar="ACTION")
    v = actions.add_parser(
        "preview",
        help="contact sheet of maskahand shards",
        description="Contact sheet: clip frames, targets and their heatmaps overlaid, one strip per sample.",
    )
    v.add_argument("dir", metavar="DIR", help="maskahand shards (a `maskahand synth` output)")
    v.add_argument("--out", required=True, metavar="SHEET", help="image to write (.png or .jpg)")
    v.add_argument("--samples", type=int, default=4, help="samples to show (default 4)")
    v.add_argument("--strip-frames", type=int, default=8, help="clip frames per strip (default 8)")
    v.set_defaults(func=_preview)


def _run(args: argparse.Namespace) -> int:
    if not args.clips or not args.out:
        raise UsageError("--clips DIR and --out DIR are required (or `maskahand synth preview DIR --out X`)")

    recipe = load_recipe(
        SynthRecipe,
        args,
        **{"synth.variants": args.variants, "synth.device": args.device, "ray.address": args.address},
    )
    # deferred: cv2, numpy, torch, torchvision at import
    from .pipeline import run_synth  # Ray, torch: after the config is checked

    summary = run_synth(args.clips, args.out, recipe, progress=not args.no_progress)
    print(
        f"{summary['written']} samples ({summary['targets']} targets) from {summary['clips']} clips in "
        f"{summary['inputs']} shards; {summary['skipped_no_interaction']} clips without an interacting hand "
        f"skipped; {summary['resumed']} shards finished before -> {args.out}"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    # deferred: PIL, torch at import
    from .preview import write_preview

    path = write_preview(args.dir, args.out, samples=args.samples, strip_frames=args.strip_frames)
    print(f"wrote {path}")
    return 0
