"""Small helpers for stage sub-commands: the shared --config option, recipe loading, exit statuses.

Exit status of every ``maskahand`` command (applied once, by :func:`run_handler`):

- ``0`` success (``shards check``: every shard is sound);
- ``1`` runtime failure: the command ran and failed on its input (unreadable video, corrupt shard,
  failed shards); one line on stderr, ``maskahand STAGE: message``, the message naming the file;
- ``2`` usage or configuration error: bad arguments, an input path that does not exist, an unknown or
  invalid config key, a resume with a changed config, an unusable Ray address;
- ``130`` interrupted (Ctrl-C).

Handlers return ``0`` (or a status of their own, e.g. ``shards check`` returns 1 for problems found)
and signal errors by raising: :class:`UsageError` or ``ConfigError`` for 2, anything else for 1
(``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from . import storage
from .configbase import ConfigError, load_config
from .rayutil import RayConnectError
from .storage import BucketNotFoundError, StorageOptionsError

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("maskahand")


class UsageError(Exception):
    """Bad command-line arguments (a missing option, an input path that does not exist): exit status 2."""


class UnusableInputError(Exception):
    """An input named on the command line cannot be used at all (exit status 2), as opposed to one bad
    entry of a collection, which is recorded and skipped. Stage errors mix it in (``VideoNotFoundError``,
    ``ManifestError``), so this bottom layer names no stage."""


def usage_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "fix the command or its config", exit status 2."""
    return (
        UsageError,
        UnusableInputError,  # a video that does not exist, a manifest that cannot be read at all
        ConfigError,
        RayConnectError,
        FileNotFoundError,
        BucketNotFoundError,  # nothing under it can be read or written
        StorageOptionsError,
    )


def run_handler(
    handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, name: str
) -> int:
    """Call a command's handler and turn what it raises into one stderr line and an exit status."""
    try:
        return int(handler(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        usage = isinstance(e, usage_errors())
        kind = "config error: " if isinstance(e, ConfigError) else ""
        # Our errors carry a message naming the file; a bare builtin (KeyError, ...) is a bug: say which.
        message = str(e) if type(e).__module__ != "builtins" or usage else f"{type(e).__name__}: {e}"
        if getattr(args, "verbose", False):
            log.exception("%s failed", name)
        elif not usage and type(e).__module__ == "builtins" and not isinstance(e, OSError):
            message += " (run with -v for the traceback)"
        print(f"{name}: {kind}{message}", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILURE


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="recipe file; key.sub=value overrides follow it")


def load_recipe(cls: type[T], args: argparse.Namespace, **set_fields: Any) -> T:
    """Recipe from defaults <- --config YAML <- explicit CLI flags (``set_fields``) <- overrides.

    ``set_fields`` maps dotted keys to values given as regular options (``--fps 5``); ``None`` values
    are skipped, so an option left unset keeps the YAML/default value.
    """
    flag_overrides = [f"{k}={_yaml_scalar(v)}" for k, v in set_fields.items() if v is not None]
    recipe = load_config(
        cls, getattr(args, "config", None), flag_overrides + list(getattr(args, "overrides", []))
    )
    storage_cfg = getattr(recipe, "storage", None)
    if storage_cfg is not None:  # URL inputs and outputs of this command (and of its forked data workers)
        storage.configure(storage_cfg.options)
    return recipe


def _yaml_scalar(v: Any) -> str:

    if isinstance(v, str):
        return json.dumps(v)  # quoted: a path like "1.mp4" or "null" stays a string
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)
