"""Process helpers for the real-kill tests."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session ``sid`` (Ray workers sit in process groups of their own)."""
    killed = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid:  # fields after "(comm)": state, ppid, pgrp, session
            pid = int(stat.parent.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed
