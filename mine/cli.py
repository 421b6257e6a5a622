"""``maskahand mine``: mine hand-interaction clips; ``maskahand mine show OUT``: a contact sheet of them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import MineRecipe
from ..core.plugins import DETECTOR_BACKENDS
from .pipeline import format_summary, mine
from .show import render_sheet

DESCRIPTION = """\
Mine 32-frame hand-interaction clips (seed 002, section 4.2) from videos and EPIC-style frame folders
into clip shards, with Ray (embedded locally, or a cluster with --address / RAY_ADDRESS).

  maskahand mine --videos DIR|GLOB|LIST.txt|URL|MANIFEST|TARS --out OUT [--detector hircnn|mediapipe|precomputed] [key=value ...]
  maskahand mine show OUT --out sheet.png [--clips 6]

--videos also takes fsspec URLs (s3://bucket/videos/, gs://..., https://...), a manifest (.csv/.tsv/.jsonl/
.parquet with a url column, optional key and clips [start, end] spans: mine.input.*) and video WebDataset
tars (shards/{00000..00099}.tar): each member KEY.mp4 is one video, TARNAME/KEY.

Re-running the same command resumes: finished videos (see OUT/ledger.jsonl) are skipped, unfinished
ones are mined again (--retry-failed also retries failed ones). Outputs: OUT/shards/*.tar,
OUT/manifest.jsonl, OUT/ledger.jsonl, OUT/parts/*.frames.jsonl (every sampled frame's detections),
OUT/summary.json, OUT/config.yaml. OUT may be an object-store URL (s3://bucket/clips, gs://...): each
miner stages on its node's local disk and uploads finished shards, so a multi-node Ray cluster needs no
shared filesystem; a local OUT on a multi-node cluster must be on a filesystem that every node sees.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mine",
        help="mine hand-interaction clips from videos into clip shards (Ray); `mine show` draws a sheet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--videos",
        help="input folder (searched recursively), glob, .txt list, URL prefix/object, manifest "
        "(.csv/.tsv/.jsonl/.parquet) or video WebDataset tars (a .tar or {00000..00009}.tar)",
    )
    p.add_argument("--out", help="output folder or object-store URL (s3://bucket/prefix, gs://...)")
    p.add_argument(
        "--detector",
        choices=DETECTOR_BACKENDS.names(),
        help="detector.backend (`maskahand detector run --help` describes each)",
    )
    p.add_argument("--detections", help="detector.precomputed.path (precomputed backend)")
    p.add_argument("--weights", help="detector.hircnn.weights")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded local Ray)")
    p.add_argument("--retry-failed", action="store_true", help="mine videos the ledger marks failed again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_option(p)
    p.set_defaults(func=run_mine)
    # `mine` alone mines; `mine show` is an action of its own.
    actions = p.add_subparsers(dest="mine_command", metavar="ACTION")
    s = actions.add_parser("show", help="draw a contact sheet of mined clips", description=run_show.__doc__)
    s.add_argument("dir", metavar="OUT", help="a `maskahand mine` output folder")
    s.add_argument("--out", required=True, metavar="SHEET", help="image to write (.png or .jpg)")
    s.add_argument("--clips", type=int, default=6, help="number of clips on the sheet (default 6)")
    s.add_argument("--frames", type=int, default=8, help="frames per clip on the sheet (default 8)")
    s.set_defaults(func=run_show)


def run_mine(args: argparse.Namespace) -> int:

    if not args.videos or not args.out:
        raise UsageError("--videos and --out are required (or `maskahand mine show OUT --out sheet.png`)")
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

    summary = mine(
        recipe, args.videos, args.out, retry_failed=args.retry_failed, progress=not args.no_progress
    )
    if summary["nothing_to_do"]:
        print(f"nothing to do: every video of {args.videos} is already in {args.out}/ledger.jsonl")
    print(format_summary(summary))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Draw clips of a `maskahand mine` output: frames with hand boxes coloured by state, interacting ones marked."""

    if not Path(args.dir).is_dir():
        raise UsageError(f"{args.dir} is not a folder (a `maskahand mine` output)")
    path, shown = render_sheet(args.dir, args.out, max_clips=args.clips, frames_per_clip=args.frames)
    print(f"wrote {path}: {shown} clip(s) of {args.dir}")
    return 0
