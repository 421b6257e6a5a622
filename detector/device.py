"""Device choice and autocast for detector inference."""

from __future__ import annotations

import contextlib

import torch

from ..runtime.distributed import resolve_device as resolve


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an error."""

    return resolve(choice, key="detector.device")


def inference_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when enabled; a no-op on CPU (CPU autocast slows Faster R-CNN down)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
