"""``maskahand finetune``: supervised fine-tuning and zero-shot evaluation (arrives with a later issue)."""

from __future__ import annotations

import argparse

from maskahand.cli_util import add_config_option, not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune / evaluate Afformer (KLD, SIM, AUC-J) (not implemented yet)",
        description="Fine-tune Afformer on OPRA / EPIC-Hotspot or evaluate zero-shot. Not implemented yet.",
    )
    p.add_argument("--checkpoint", help="pretrained checkpoint")
    p.add_argument("--out", help="run folder")
    add_config_option(p)
    p.set_defaults(func=not_implemented("finetune", "a later issue: fine-tuning and evaluation"))
