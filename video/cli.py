"""``maskahand video``."""

from __future__ import annotations

import argparse

from maskahand.cli_util import add_config_option, not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="video stage (in progress)")
    add_config_option(p)
    p.set_defaults(func=not_implemented("video", "in progress"))
