"""maskahand.synth: MaskAHand target synthesis, clip shards -> maskahand shards.

    from maskahand.synth import run_synth, replay
    summary = run_synth("clips/", "out/", SynthRecipe())    # resumable; see `maskahand synth --help`
    target, heatmap = replay(provenance, frame)             # one stored target, re-created

Modules: ``recipe`` (random parameters, batched rendering, replay), ``ops`` (tensor ops), ``pipeline``
(Ray tasks over shards), ``clipio`` (clip shard input), ``preview`` (contact sheets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["SynthError", "render", "replay", "run_synth", "sample_params"]

if TYPE_CHECKING:  # the exports, as type checkers see them; loaded on first use (maskahand.core.lazy)
    from .pipeline import SynthError, run_synth
    from .recipe import render, replay, sample_params
else:
    from ..core.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
