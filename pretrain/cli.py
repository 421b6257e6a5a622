"""``maskahand pretrain``: MaskAHand pretraining of Afformer with torchrun DDP (arrives with a later issue)."""

from __future__ import annotations

import argparse

from maskahand.cli_util import add_config_option, not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="MaskAHand pretraining of Afformer on synth shards (not implemented yet)",
        description="Pretrain Afformer on MaskAHand shards with torchrun DDP. Not implemented yet.",
    )
    p.add_argument("--data", help="folder of MaskAHand shards")
    p.add_argument("--out", help="run folder (checkpoints, logs, config)")
    add_config_option(p)
    p.set_defaults(func=not_implemented("pretrain", "a later issue: pretraining"))
