"""WebDataset shard contract between stages: sample schemas, writers, readers, checks, contact sheets.

Heavy modules (torch, webdataset) load on first use of a name below, so importing the package (or
``maskahand.shards.cli``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "CLIP_SCHEMA",
    "ClipSample",
    "DecodeError",
    "HAND_STATES",
    "MASKAHAND_SCHEMA",
    "MaskAHandSample",
    "SchemaError",
    "ShardInfo",
    "ShardWriter",
    "check_shards",
    "clip_dataset",
    "collate_samples",
    "list_shards",
    "make_key",
    "manifest_matches",
    "maskahand_dataset",
    "shard_name",
    "validate_sample",
]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .check import check_shards, manifest_matches
    from .codec import DecodeError
    from .reader import clip_dataset, collate_samples, list_shards, maskahand_dataset
    from .schema import (
        CLIP_SCHEMA,
        HAND_STATES,
        MASKAHAND_SCHEMA,
        ClipSample,
        MaskAHandSample,
        SchemaError,
        make_key,
        validate_sample,
    )
    from .writer import ShardInfo, ShardWriter, shard_name
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
