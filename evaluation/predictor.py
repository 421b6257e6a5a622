"""The predictor interface the evaluator scores, and the registry of predictor factories.

A predictor turns one benchmark entry's media into heatmaps:

    class Predictor(Protocol):
        name: str                  # the "model" field of metrics.json
        needs_media: bool          # False: the evaluator passes clips=[] and image=None (baselines)
        def __call__(self, clips: list[Tensor], image: Tensor | None) -> Prediction

``clips``: every clip of the entry's video, sampled as the authors' evaluation samples them
(:mod:`maskahand.evaluation.clips`), each uint8 (T, 3, S, S) RGB at ``eval.image_size``; ``image``: the
target image, uint8 (3, S, S). The predictor sums its per-clip heatmaps (the authors merge a video's clips
by adding their softmaxed maps and their action scores) and returns a :class:`Prediction`:

- ``heatmaps``: (C, h, w) non-negative float maps, any size (the evaluator resizes bilinearly to the
  ground truth's size and normalises each map to sum 1). C = 1 is action-agnostic (zero-shot: the map is
  scored against every ground-truth action); C = the benchmark's number of actions is per action.
- ``actions``: (num_actions,) scores for top-1 accuracy, or None.

To plug in a model, register a factory ``factory(checkpoint: str, recipe: EvalRecipe, device) -> Predictor``:

    from maskahand.evaluation.predictor import register_predictor
    register_predictor("hotspots", "maskahand.hotspots.predict:build_predictor")   # lazy "module:function"

``maskahand eval --model hotspots --checkpoint CKPT`` then imports and calls it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class Prediction:
    heatmaps: torch.Tensor  # (C, h, w) >= 0
    actions: torch.Tensor | None = None  # (num_actions,) scores


class Predictor(Protocol):
    name: str
    needs_media: bool

    def __call__(self, clips: list[torch.Tensor], image: torch.Tensor | None) -> Prediction: ...


Factory = Callable[..., Predictor]
PREDICTORS: dict[str, Factory | str] = {
    "afformer": "maskahand.evaluation.afformer_predictor:build_predictor",
    "hotspots": "maskahand.hotspots.predict:build_predictor",
}


def register_predictor(name: str, factory: Factory | str) -> None:
    """Register ``factory`` (a callable or a lazy ``"module:function"`` string) under ``name``."""
    PREDICTORS[name] = factory


def build_predictor(model: str, checkpoint: str, recipe: Any, device: torch.device) -> Predictor:
    if model not in PREDICTORS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(PREDICTORS))}")
    factory = PREDICTORS[model]
    if isinstance(factory, str):
        module, fn = factory.split(":")
        try:
            factory = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"model {model!r}: its predictor {factory} is not available ({e})") from None
    return factory(checkpoint, recipe, device)
