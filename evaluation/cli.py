"""``maskahand eval`` and ``maskahand ground`` (arrive with the evaluation issue)."""

from __future__ import annotations

import argparse

from maskahand.cli_util import add_config_option, not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a checkpoint or a baseline on a benchmark (not implemented yet)")
    add_config_option(p)
    p.set_defaults(func=not_implemented("eval", "the evaluation issue"))
    g = sub.add_parser("ground", help="heatmap of a video's interaction on an image (not implemented yet)")
    g.set_defaults(func=not_implemented("ground", "the evaluation issue"))
