"""``maskahand video probe PATH``: open a video or frame folder, print its facts and sampled frame count."""

from __future__ import annotations

import argparse
import time

from ..core.cli_util import add_config_option, load_recipe
from ..core.config import VideoRecipe
from ..core.configbase import dump_config, save_config, to_dict
from ..core.fsutil import atomic_write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="inspect videos and frame folders as every stage reads them")
    commands = p.add_subparsers(dest="video_command", metavar="COMMAND", required=True)
    probe = commands.add_parser(
        "probe",
        help="print a video's facts and how many frames are sampled at the target fps",
        description="Open PATH (video file or EPIC frame folder), decode it at --fps and print its facts, "
        "the number of sampled frames and the resolved config. Exit status 1 if it cannot be read, 2 if "
        "it does not exist.",
    )
    probe.add_argument("path", metavar="PATH", help="video file or folder of frame_%%010d.jpg images")
    probe.add_argument("--fps", type=float, help="target sampling rate (video.fps)")
    probe.add_argument("--max-side", type=int, help="resize so that the longer side is <= N (video.max_side)")
    probe.add_argument("--backend", choices=["pyav", "decord"], help="decoder (video.backend)")
    probe.add_argument("--out", metavar="DIR", help="also write probe.json and the resolved config.yaml here")
    add_config_option(probe)
    probe.set_defaults(func=run_probe)


def run_probe(args: argparse.Namespace) -> int:

    # deferred: tqdm at import
    from tqdm import tqdm

    # deferred: torch at import
    from . import open_video

    recipe = load_recipe(
        VideoRecipe,
        args,
        **{"video.fps": args.fps, "video.max_side": args.max_side, "video.backend": args.backend},
    )
    start = time.perf_counter()
    reader = open_video(args.path, recipe.video)
    frames = 0
    first_pts = last_pts = 0.0
    with tqdm(desc="decode", unit="frame", total=_expected(reader), disable=None) as bar:
        for frame in reader:
            frames += 1
            bar.update(1)
            if frames == 1:
                first_pts = frame.pts
            last_pts = frame.pts
    seconds = time.perf_counter() - start
    info = reader.info
    report = {
        "path": str(info.path),
        "kind": info.kind,
        "codec": info.codec,
        "source_size": [info.width, info.height],
        "frame_size": [info.frame_width, info.frame_height],
        "fps": round(info.fps, 4),
        "num_frames": info.num_frames,
        "duration": round(info.duration, 4),
        "sampled_frames": frames,
        "sampled_pts": [round(first_pts, 4), round(last_pts, 4)] if frames else [],
        "frames_decoded": reader.stats.frames_decoded,
        "backend_used": reader.stats.backend_used,
        "seconds": round(seconds, 3),
    }
    for key, value in report.items():
        print(f"{key}: {value}")
    print("config:")
    print("  " + dump_config(recipe).rstrip().replace("\n", "\n  "))
    if args.out:
        atomic_write_json(f"{args.out}/probe.json", {**report, "config": to_dict(recipe)})
        save_config(recipe, args.out)
    return 0


def _expected(reader) -> int | None:
    info = reader.info
    if info.duration <= 0:
        return None
    return min(info.num_frames, int(info.duration * reader.config.fps) + 1) or None
