"""A fault for tests of delivery: the process dies between storing a chat message and publishing it.

Off unless `CHAT_FAULT_KILL_AFTER_COMMIT` is set in the environment: a message whose text is that value
then kills the instance with SIGKILL right after its transaction committed, before anything is published.
"""

from __future__ import annotations

import os
import signal

KILL_AFTER_COMMIT = "CHAT_FAULT_KILL_AFTER_COMMIT"


def crash_point(name: str, text: str) -> None:
    """Kill the process here if the fault named `name` is armed for a message of this `text`."""
    if name == "after-commit" and text and os.environ.get(KILL_AFTER_COMMIT) == text:
        os.kill(os.getpid(), signal.SIGKILL)
