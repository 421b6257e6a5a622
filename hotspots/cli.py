"""``maskahand hotspots``: the Interaction Hotspots model (arrives with the hotspots issue)."""

from __future__ import annotations

import argparse

from maskahand.cli_util import add_config_option, not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hotspots", help="Interaction Hotspots: train (not implemented yet)")
    add_config_option(p)
    p.set_defaults(func=not_implemented("hotspots", "the hotspots issue"))
