"""``maskahand shards check|show|repack``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import RepackConfig, ShardWriterConfig
from ..core.configbase import check_resume, save_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="verify WebDataset shards or render a contact sheet of them")
    inner = p.add_subparsers(dest="shards_command", metavar="ACTION", required=True)

    c = inner.add_parser(
        "check",
        help="verify every shard: tar integrity, manifest checksum/count, schema, every member decodes",
        description="Exit status 0 when every shard is sound, 1 when a problem was found.",
    )
    c.add_argument("dir", help="directory of *.tar shards (or one .tar)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("-j", "--jobs", type=int, default=1, help="shards checked in parallel (processes)")
    add_config_option(c)
    c.set_defaults(func=_check)

    s = inner.add_parser("show", help="render a contact sheet of the first samples")
    s.add_argument("dir", help="directory of *.tar shards (or one .tar)")
    s.add_argument("--out", required=True, help="image to write (.png or .jpg)")
    s.add_argument("-n", type=int, default=4, help="number of samples (default 4)")
    s.add_argument("--cell", type=int, default=160, help="longer side of one image cell in pixels")
    add_config_option(s)
    s.set_defaults(func=_show)

    r = inner.add_parser(
        "repack",
        help="regroup clip or MaskAHand shards into ~--target-size shards in a seeded global shuffle",
        description="Every sample of IN's shards, shuffled across the whole collection (seed --seed) and "
        "cut into shards of about --target-size bytes under --out, copied byte for byte. Resumable: rerun "
        "the same command after an interruption; finished shards are kept. Writes repack.json (inputs, "
        "settings, every shard's count/bytes/sha256). Keys: target_size, seed, prefix.",
    )
    r.add_argument("input", help="directory of *.tar shards (e.g. a mine or synth output folder)")
    r.add_argument("--out", required=True, help="output folder for the repacked shards")
    r.add_argument("--target-size", help="bytes per output shard: 1GB (default), 512MB, 200M, ...")
    r.add_argument("--seed", type=int, help="seed of the global shuffle (default 0)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_option(r)
    r.set_defaults(func=_repack)


def _check(args: argparse.Namespace) -> int:
    # deferred: cv2, numpy, torch, torchvision at import
    from .check import check_shards

    load_recipe(ShardWriterConfig, args)  # rejects bad --config / overrides consistently with other commands
    report = check_shards(args.dir, progress=not args.quiet, jobs=args.jobs)
    print(report.summary())
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    # deferred: PIL, cv2, numpy, torch at import
    from .sheet import save_image
    from .show import render_sheet

    cfg = load_recipe(ShardWriterConfig, args)
    if args.n < 1:
        raise UsageError("-n must be >= 1")
    sheet = render_sheet(args.dir, n=args.n, cell_side=args.cell)
    out = save_image(sheet, args.out)
    save_config(cfg, Path(out).parent, name=Path(out).stem + ".config.yaml")
    print(f"wrote {out} ({sheet.size[0]}x{sheet.size[1]})")
    return 0


def _repack(args: argparse.Namespace) -> int:
    # deferred: cv2, numpy, torch, torchvision at import
    from .reader import list_shards
    from .repack import repack

    fields: dict = {}
    if args.target_size is not None:
        # deferred: cv2, numpy, torch, torchvision at import
        from .repack import parse_size

        try:
            fields["target_size"] = parse_size(args.target_size)
        except ValueError as e:
            raise UsageError(f"--target-size: {e}") from e
    if args.seed is not None:
        fields["seed"] = args.seed
    cfg = load_recipe(RepackConfig, args, **fields)
    list_shards(args.input)  # a missing or empty input fails before anything is written
    check_resume(cfg, args.out)
    save_config(cfg, args.out)
    summary = repack(args.input, args.out, cfg, progress=not args.quiet)
    sizes = [s["bytes"] for s in summary["shards"]]
    print(
        f"repacked {summary['samples']} samples into {len(sizes)} shards under {args.out} "
        f"({min(sizes)}..{max(sizes)} bytes each; {len(summary['skipped'])} unreadable input shards skipped)"
    )
    return 0
