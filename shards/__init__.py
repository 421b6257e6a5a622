"""WebDataset shard contract between stages: sample schemas, writers, readers, checks, contact sheets.

Heavy modules (torch, webdataset) load on first use of a name below, so importing the package (or
``maskahand.shards.cli``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CLIP_SCHEMA": "schema",
    "MASKAHAND_SCHEMA": "schema",
    "HAND_STATES": "schema",
    "ClipSample": "schema",
    "MaskAHandSample": "schema",
    "SchemaError": "schema",
    "make_key": "schema",
    "validate_sample": "schema",
    "DecodeError": "codec",
    "ShardWriter": "writer",
    "ShardInfo": "writer",
    "shard_name": "writer",
    "clip_dataset": "reader",
    "maskahand_dataset": "reader",
    "list_shards": "reader",
    "collate_samples": "reader",
    "manifest_matches": "check",
    "check_shards": "check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"maskahand.shards.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'maskahand.shards' has no attribute {name!r}")
