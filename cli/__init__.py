"""maskahand.cli: the ``maskahand`` command (``main``), one sub-command per stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["build_parser", "main", "split_overrides"]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .command import build_parser, main, split_overrides
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
