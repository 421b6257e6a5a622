"""The one atomic torch writer: ``torch.save`` into a temporary file beside the target, then rename.

JSON, text and bytes have their atomic writers in :mod:`maskahand.core.fsutil` (``core``, no torch); this is
the same temp-and-replace (:func:`maskahand.core.fsutil.atomic_path`) for torch objects: a kill or an error at
any moment leaves the old file or the whole new one, never a partial file under the target's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.fsutil import atomic_path


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (fsynced, folder created if needed); returns ``path``."""
    path = Path(path)
    # through an open file: given a name, torch.save would record the temporary name inside the archive,
    # so the same object would give different bytes on every run
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return path
