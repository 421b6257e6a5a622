"""A toy recipe for the engine tests (no tests here); also a script torchrun launches:

torchrun --nproc-per-node 2 tests/test_trainer_support.py OUT MAX_ITERS GLOBAL_BATCH [key=value ...]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from maskahand.trainer import TrainTask, unwrap


class ToyNet(nn.Module):
    """An "encoder" and a "head" with a LayerNorm: enough structure for parameter groups."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 16), nn.GELU())
        self.head = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(-1)


class ToyTask(TrainTask):
    """Regression on fixed random data; global batch b of an epoch is the same on any split.

    train.batch_size is the global batch G; with w processes and a accumulation steps each process takes
    n = G / (w a) rows at a time: micro-batch m of rank r is rows [(m w + r) n, (m w + r + 1) n) of global
    batch b, so every optimiser step sees exactly global batch b, whatever w and a.
    ``nan_at``: steps whose loss is made NaN (the non-finite guard tests).
    """

    batches_per_epoch = 5
    videos = 6  # row j of a global batch comes from "video" j % 6 (batch_sources)

    def __init__(self, nan_at: set[int] | None = None):
        self.nan_at = nan_at or set()
        self.skips: list[tuple[int, int]] = []

    def build_model(self) -> nn.Module:
        return ToyNet()

    def param_groups(self, model: nn.Module, optim) -> list[dict]:
        """``encoder`` at lr x 0.1, ``head`` at lr, ``head_no_decay``: the LayerNorm, without weight decay."""
        net = unwrap(model)
        groups = {
            "encoder": (list(net.encoder.parameters()), optim.lr * 0.1, optim.weight_decay),
            "head": (list(net.head[1].parameters()), optim.lr, optim.weight_decay),
            "head_no_decay": (list(net.head[0].parameters()), optim.lr, 0.0),
        }
        return [{"name": k, "params": p, "lr": lr, "weight_decay": wd} for k, (p, lr, wd) in groups.items()]

    def train_batches(self, epoch: int, skip: int):
        self.skips.append((epoch, skip))
        split, r = self.ctx.batch, self.ctx.rank
        n, w, a = split.micro, split.world, split.accum_steps
        g = torch.Generator().manual_seed(1000 + epoch)
        x = torch.randn(self.batches_per_epoch, split.global_batch, 6, generator=g)
        y = x.sum(-1).sin()
        for i in range(skip, self.batches_per_epoch * a):  # i counts this rank's micro-batches
            b, m = divmod(i, a)
            rows = slice((m * w + r) * n, (m * w + r + 1) * n)
            keys = [f"e{epoch}b{b}i{j}" for j in range(rows.start, rows.stop)]
            yield {"key": keys, "x": x[b, rows], "y": y[b, rows]}

    def batch_sources(self, batch):
        return [k.split("i")[0] + "v" + str(int(k.split("i")[1]) % self.videos) for k in batch["key"]]

    def training_step(self, model, batch, step):
        pred = model(batch["x"])
        loss = (pred - batch["y"]).pow(2).mean()
        if step in self.nan_at:
            loss = loss * float("nan")
        return loss, {"pred_mean": pred.detach().mean()}


def main(argv: list[str]) -> None:
    from maskahand.core.config import OptimConfig, TrainConfig
    from maskahand.core.configbase import apply_overrides
    from maskahand.runtime.distributed import init_distributed, shutdown_distributed
    from maskahand.trainer import fit

    out, max_iters, global_batch, *overrides = argv
    info = init_distributed("cpu")
    train = apply_overrides(
        TrainConfig(
            max_iters=int(max_iters),
            batch_size=int(global_batch),
            ckpt_every=1000,
            log_every=1,
            device="cpu",
            image_every=0,
        ),
        [o[len("train.") :] for o in overrides if o.startswith("train.")],
    )
    optim = apply_overrides(
        OptimConfig(precision="fp32"), [o[len("optim.") :] for o in overrides if o.startswith("optim.")]
    )
    torch.set_num_threads(1)
    fit(ToyTask(), optim, train, out, dist_info=info)
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
