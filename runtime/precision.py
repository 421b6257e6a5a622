"""fp32, bf16 autocast, or fp16 autocast with a GradScaler (``optim.precision``)."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast context and loss scaling for one precision on one device.

    fp16 on CPU has no useful kernels: it falls back to bf16 with a warning (the scaler would be a no-op).
    """

    def __init__(self, precision: str, device: torch.device):
        if precision not in DTYPES:
            raise ValueError(f"optim.precision={precision!r}: expected one of {sorted(DTYPES)}")
        if precision == "fp16" and device.type != "cuda":
            log.warning("optim.precision=fp16 needs a GPU; using bf16 autocast on %s", device.type)
            precision = "bf16"
        self.name = precision
        self.device = device
        self.dtype = DTYPES[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def state_dict(self) -> dict:
        return {"name": self.name, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
