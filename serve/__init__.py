"""``maskahand serve``: a grounding page in the browser (FastAPI + uvicorn, one plain HTML page).

cli.py      the ``serve`` sub-command: bind address, token, the loud warning for an open server
app.py      the FastAPI app: the page, /api/examples, /api/ground (uploads or a named example), /api/health
engine.py   the loaded model, one inference at a time per device, a bounded queue, private temp folders
uploads.py  upload checks by content (not name), size / length / pixel limits, the CLI's typed errors
page.html   the page (no external assets)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["GroundingEngine", "build_app"]

if TYPE_CHECKING:  # the exports, as type checkers and editors see them; loaded on first use
    from .app import build_app
    from .engine import GroundingEngine
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
