"""Small helpers for stage sub-commands: the shared --config option and recipe loading."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TypeVar

from maskahand.configbase import load_config

T = TypeVar("T")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="recipe file; key.sub=value overrides follow it")


def load_recipe(cls: type[T], args: argparse.Namespace, **set_fields: Any) -> T:
    """Recipe from defaults <- --config YAML <- explicit CLI flags (``set_fields``) <- overrides.

    ``set_fields`` maps dotted keys to values given as regular options (``--fps 5``); ``None`` values
    are skipped, so an option left unset keeps the YAML/default value.
    """
    flag_overrides = [f"{k}={_yaml_scalar(v)}" for k, v in set_fields.items() if v is not None]
    return load_config(
        cls, getattr(args, "config", None), flag_overrides + list(getattr(args, "overrides", []))
    )


def _yaml_scalar(v: Any) -> str:
    import json

    if isinstance(v, str):
        return json.dumps(v)  # quoted: a path like "1.mp4" or "null" stays a string
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def not_implemented(stage: str, issue: str):
    def handler(args: argparse.Namespace) -> int:
        print(f"maskahand {stage}: not implemented yet ({issue})", file=sys.stderr)
        return 2

    return handler
