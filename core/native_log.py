"""Native libraries' start-up chatter on stderr, kept out of our logs (shown with ``-v``).

MediaPipe's graphs (TF Lite, absl) write to file descriptor 2 from C++ threads when a graph first runs:
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR`` and ``W0000 ... inference_feedback_manager.cc``
lines. Their log levels cannot be set from Python before that (absl reads no environment variable and
``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` do not reach it), so :func:`native_stderr_to_debug`
captures descriptor 2 while such a call runs: the known chatter goes to the logger at DEBUG, anything
else (an error, one of ours) is written back to stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CHATTER = re.compile(
    r"^(INFO: Created TensorFlow Lite .*delegate"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\] )"
)
_lock = threading.Lock()  # one capture of descriptor 2 at a time in a process


def is_chatter(line: str) -> bool:
    return bool(CHATTER.match(line))


@contextmanager
def native_stderr_to_debug(logger: logging.Logger, source: str) -> Iterator[None]:
    """Capture file descriptor 2 during the block; chatter lines -> ``logger.debug``, the rest -> stderr."""
    with _lock, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            for line in text.splitlines():
                if is_chatter(line):
                    logger.debug("%s: %s", source, line)
                elif line.strip():
                    os.write(2, (line + "\n").encode())
