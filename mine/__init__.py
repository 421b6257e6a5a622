"""maskahand.mine: Ray mining of hand-interaction clips from videos into clip shards.

    from maskahand.mine import mine
    summary = mine(MineRecipe(), "videos/", "out/")     # resumable; see `maskahand mine --help`

Modules: ``rule`` (the paper's clip rule, pure functions), ``pipeline`` (plan, run, summary),
``scheduler`` and ``worker`` (Ray actors), ``ledger`` (per-video records), ``show`` (contact sheets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["HandRule", "MineError", "format_summary", "mine", "plan"]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .pipeline import MineError, format_summary, mine, plan
    from .rule import HandRule
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
