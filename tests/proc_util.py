"""Process helpers for the real-kill tests."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def session_processes(sid: int) -> list[int]:
    """Ids of every process of session ``sid`` (Ray workers sit in process groups of their own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid:  # fields after "(comm)": state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def session_titles(sid: int) -> dict[int, str]:
    """pid -> command line of every process of session ``sid`` (a Ray worker's is ``ray::Class.method``)."""
    out = {}
    for pid in session_processes(sid):
        with contextlib.suppress(OSError):
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return out


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session ``sid``; returns the ids it killed."""
    killed = []
    for pid in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
