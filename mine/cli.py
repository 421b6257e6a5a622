"""``maskahand mine``: mine hand-interaction clips; ``maskahand mine show OUT``: a contact sheet of them."""

from __future__ import annotations

import argparse
import sys

from maskahand.cli_util import add_config_option

DESCRIPTION = """\
Mine 32-frame hand-interaction clips (seed 002, section 4.2) from videos and EPIC-style frame folders
into clip shards, with Ray (embedded locally, or a cluster with --address / RAY_ADDRESS).

  maskahand mine --videos DIR|GLOB|LIST.txt --out OUT [--detector hircnn|mediapipe|precomputed] [key=value ...]
  maskahand mine show OUT --out sheet.png [--clips 6]

Re-running the same command resumes: finished videos (see OUT/ledger.jsonl) are skipped, unfinished
ones are mined again (--retry-failed also retries failed ones). Outputs: OUT/shards/*.tar,
OUT/manifest.jsonl, OUT/ledger.jsonl, OUT/parts/*.frames.jsonl (every sampled frame's detections),
OUT/summary.json, OUT/config.yaml. On a multi-node Ray cluster OUT must be on a filesystem that every
node sees (the miner actors write the shards).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mine",
        help="mine hand-interaction clips from videos into clip shards (Ray); `mine show` draws a sheet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("words", nargs="*", metavar="show OUT", help="`show OUT` draws a contact sheet of OUT")
    p.add_argument("--videos", help="input folder (searched recursively), glob, or a .txt list of paths")
    p.add_argument("--out", help="output folder (mine) or sheet image (show)")
    p.add_argument("--detector", choices=["hircnn", "mediapipe", "precomputed"], help="detector.backend")
    p.add_argument("--detections", help="detector.precomputed.path (precomputed backend)")
    p.add_argument("--weights", help="detector.hircnn.weights")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded local Ray)")
    p.add_argument("--retry-failed", action="store_true", help="mine videos the ledger marks failed again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--clips", type=int, default=6, help="show: number of clips on the sheet")
    p.add_argument("--frames", type=int, default=8, help="show: frames per clip on the sheet")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    words = [w for w in args.words if "=" not in w]
    args.overrides = list(getattr(args, "overrides", [])) + [w for w in args.words if "=" in w]
    if words and words[0] == "show":
        if len(words) != 2 or not args.out:
            print("usage: maskahand mine show OUT --out sheet.png", file=sys.stderr)
            return 2
        return run_show(words[1], args.out, args.clips, args.frames)
    if words:
        print(
            f"maskahand mine: unexpected argument(s) {words} (did you mean `mine show OUT`?)", file=sys.stderr
        )
        return 2
    if not args.videos or not args.out:
        print("maskahand mine: --videos and --out are required (see --help)", file=sys.stderr)
        return 2
    return run_mine(args)


def run_mine(args: argparse.Namespace) -> int:
    from maskahand.cli_util import load_recipe
    from maskahand.config import MineRecipe
    from maskahand.mine.pipeline import MineError, format_summary, mine

    recipe = load_recipe(
        MineRecipe,
        args,
        **{
            "detector.backend": args.detector,
            "detector.precomputed.path": args.detections,
            "detector.hircnn.weights": args.weights,
            "ray.address": args.address,
        },
    )
    try:
        summary = mine(
            recipe, args.videos, args.out, retry_failed=args.retry_failed, progress=not args.no_progress
        )
    except MineError as e:
        print(f"maskahand mine: {e}", file=sys.stderr)
        return 2
    if summary["nothing_to_do"]:
        print(f"nothing to do: every video of {args.videos} is already in {args.out}/ledger.jsonl")
    print(format_summary(summary))
    return 0


def run_show(out_dir: str, sheet: str, clips: int, frames: int) -> int:
    from maskahand.mine.show import ShowError, render_sheet

    try:
        path, shown = render_sheet(out_dir, sheet, max_clips=clips, frames_per_clip=frames)
    except ShowError as e:
        print(f"maskahand mine show: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {shown} clip(s) of {out_dir}")
    return 0
