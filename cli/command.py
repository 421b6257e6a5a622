"""The ``maskahand`` command: one sub-command per stage.

Stage packages register their own sub-commands (``<stage>/cli.py: register(subparsers)``) and keep
heavy imports (torch, ray) inside the handlers, so ``maskahand --help`` stays instant. Arguments of
the form ``key.sub=value`` after a command are config overrides (see ``maskahand config STAGE``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from .. import __version__
from ..core.cli_util import EXIT_USAGE, run_handler
from ..core.configbase import FILE_NAME_HINT

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
    ("serve", "maskahand.serve.cli"),
    ("config", "maskahand.cli.config"),
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


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


def _option(parser: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    """The option ``token`` names in ``parser`` (exactly, or by an unambiguous prefix as argparse allows)."""
    actions = parser._option_string_actions
    if token in actions:
        return actions[token]
    found = {actions[s] for s in actions if s.startswith(token) and token.startswith("--")}
    return found.pop() if len(found) == 1 else None


def _subcommand(parser: argparse.ArgumentParser, token: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(token)
    return None


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments for argparse, ``key.sub=value`` overrides), wherever the overrides stand on the line.

    Overrides are taken out before parsing, so they never meet a sub-parser choice (``mine show`` vs
    ``mine mine.fps=10``). The value of an option (``--out a=b``) stays an argument.
    """
    rest: list[str] = []
    overrides: list[str] = []
    current, values_due = parser, 0
    for i, token in enumerate(argv):
        if values_due:
            values_due -= 1
            rest.append(token)
        elif token == "--":
            rest += argv[i:]
            break
        elif token.startswith("-") and token != "-":
            action = _option(current, token)
            if action is not None and "=" not in token:
                nargs = action.nargs
                values_due = 1 if nargs is None else nargs if isinstance(nargs, int) else 0
            rest.append(token)
        elif _OVERRIDE.match(token):
            overrides.append(token)
        else:
            current = _subcommand(current, token) or current
            rest.append(token)
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see ``cli_util``: 0, 1 failure, 2 usage/config, 130)."""
    parser = build_parser()
    rest, overrides = split_overrides(parser, sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(rest)
    except SystemExit as e:  # --help, --version, or a usage error argparse has reported (status 2)
        code = e.code if isinstance(e.code, int) else EXIT_USAGE
        files = [o for o in overrides if "." not in o.split("=", 1)[0]]  # every config key has a dot
        if code == EXIT_USAGE and files:
            print(f"note: {' '.join(files)} read as config override(s): {FILE_NAME_HINT}", file=sys.stderr)
        return code
    args.overrides = overrides
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run_handler(args.func, args, f"maskahand {args.command}")


if __name__ == "__main__":
    sys.exit(main())
