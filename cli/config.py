"""``maskahand config RECIPE``: print a recipe's resolved config (defaults, YAML, overrides) as YAML."""

from __future__ import annotations

import argparse

from ..core import config as C
from ..core.cli_util import add_config_option, load_recipe
from ..core.configbase import dump_config

RECIPES = {
    "video": C.VideoRecipe,
    "detector": C.DetectorRecipe,
    "detector-train": C.DetectorTrainRecipe,
    "mine": C.MineRecipe,
    "synth": C.SynthRecipe,
    "pretrain": C.PretrainRecipe,
    "finetune": C.FinetuneRecipe,
    "hotspots": C.HotspotsRecipe,
    "serve": C.ServeRecipe,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print a recipe's resolved config as YAML",
        description="Print the defaults of a recipe (with --config and key=value overrides applied).",
    )
    p.add_argument("recipe", choices=sorted(RECIPES))
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(dump_config(load_recipe(RECIPES[args.recipe], args)), end="")
    return 0
