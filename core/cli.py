"""The ``maskahand`` command: one sub-command per stage.

Stage packages register their own sub-commands (``<stage>/cli.py: register(subparsers)``) and keep
heavy imports (torch, ray) inside the handlers, so ``maskahand --help`` stays instant. Arguments of
the form ``key.sub=value`` after a command are config overrides (see ``maskahand config STAGE``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from maskahand import __version__
from maskahand.configbase import ConfigError

# (command, module with register(subparsers)), in the order of the data flow.
STAGES = [
    ("video", "maskahand.video.cli"),
    ("detector", "maskahand.detector.cli"),
    ("mine", "maskahand.mine.cli"),
    ("shards", "maskahand.shards.cli"),
    ("synth", "maskahand.synth.cli"),
    ("pretrain", "maskahand.pretrain.cli"),
    ("finetune", "maskahand.finetune.cli"),
    ("eval", "maskahand.evaluation.cli"),  # also registers `ground`
    ("hotspots", "maskahand.hotspots.cli"),
    ("config", "maskahand.cli_config"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskahand",
        description="MaskAHand pretraining and Afformer: videos -> mine -> synth -> pretrain -> finetune/eval.",
        epilog="Config overrides: append key.sub=value pairs, e.g. `maskahand mine ... mine.fps=5`.",
    )
    parser.add_argument("--version", action="version", version=f"maskahand {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for _, module in STAGES:
        importlib.import_module(module).register(sub)
    return parser


def split_overrides(extra: list[str]) -> tuple[list[str], list[str]]:
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    rest = [e for e in extra if e not in overrides]
    return overrides, rest


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides, rest = split_overrides(extra)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.overrides = overrides
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"maskahand: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskahand: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
