"""``maskahand synth``: clip shards -> MaskAHand shards; ``maskahand synth preview``: a contact sheet."""

from __future__ import annotations

import argparse
import sys

from maskahand.cli_util import add_config_option, load_recipe


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
        "words", nargs="*", metavar="preview DIR", help="`preview DIR --out sheet.png`: contact sheet"
    )
    p.add_argument(
        "--clips", metavar="DIR", help="clip shards (a directory of *.tar, a file or a brace pattern)"
    )
    p.add_argument("--out", metavar="PATH", help="output directory for maskahand shards (preview: the PNG)")
    p.add_argument("--variants", type=int, metavar="K", help="targets per clip (synth.variants)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="synth.device")
    p.add_argument(
        "--address", metavar="RAY_ADDRESS", help="Ray cluster to join (default: RAY_ADDRESS or local)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--samples", type=int, default=4, help="preview: samples to show (default 4)")
    p.add_argument("--strip-frames", type=int, default=8, help="preview: clip frames per strip (default 8)")
    add_config_option(p)
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    # The positional words mix the optional `preview DIR` action with key=value overrides.
    words = [w for w in args.words if not ("=" in w and not w.startswith("-"))]
    args.overrides = [w for w in args.words if w not in words] + list(getattr(args, "overrides", []))
    if not words:
        return _run(args)
    if words[0] == "preview" and len(words) == 2:
        return _preview(args, words[1])
    print(
        f"maskahand synth: unexpected arguments {words} (only `preview DIR` takes positionals)",
        file=sys.stderr,
    )
    return 2


def _run(args: argparse.Namespace) -> int:
    if not args.clips or not args.out:
        print("maskahand synth: --clips DIR and --out DIR are required", file=sys.stderr)
        return 2
    from maskahand.config import SynthRecipe
    from maskahand.synth.pipeline import SynthError, run_synth

    recipe = load_recipe(
        SynthRecipe,
        args,
        **{"synth.variants": args.variants, "synth.device": args.device, "ray.address": args.address},
    )
    try:
        summary = run_synth(args.clips, args.out, recipe, progress=not args.no_progress)
    except (SynthError, FileNotFoundError) as e:
        print(f"maskahand synth: {e}", file=sys.stderr)
        return 1
    print(
        f"{summary['written']} samples ({summary['targets']} targets) from {summary['clips']} clips in "
        f"{summary['inputs']} shards; {summary['skipped_no_interaction']} clips without an interacting hand "
        f"skipped; {summary['resumed']} shards finished before -> {args.out}"
    )
    return 0


def _preview(args: argparse.Namespace, shards: str) -> int:
    from maskahand.synth.preview import write_preview

    if not args.out:
        print("maskahand synth preview: --out sheet.png is required", file=sys.stderr)
        return 2
    try:
        path = write_preview(shards, args.out, samples=args.samples, strip_frames=args.strip_frames)
    except (FileNotFoundError, ValueError) as e:
        print(f"maskahand synth preview: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
