"""``maskahand shards check|show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskahand.cli_util import add_config_option


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


def _check(args: argparse.Namespace) -> int:
    from maskahand.cli_util import load_recipe
    from maskahand.config import ShardWriterConfig
    from maskahand.shards.check import check_shards

    load_recipe(ShardWriterConfig, args)  # rejects bad --config / overrides consistently with other commands
    report = check_shards(args.dir, progress=not args.quiet, jobs=args.jobs)
    print(report.summary())
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    from maskahand.cli_util import UsageError, load_recipe
    from maskahand.config import ShardWriterConfig
    from maskahand.configbase import save_config
    from maskahand.shards.sheet import save_image
    from maskahand.shards.show import render_sheet

    cfg = load_recipe(ShardWriterConfig, args)
    if args.n < 1:
        raise UsageError("-n must be >= 1")
    sheet = render_sheet(args.dir, n=args.n, cell_side=args.cell)
    out = save_image(sheet, args.out)
    save_config(cfg, Path(out).parent, name=Path(out).stem + ".config.yaml")
    print(f"wrote {out} ({sheet.size[0]}x{sheet.size[1]})")
    return 0
