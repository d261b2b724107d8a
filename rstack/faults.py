"""Named crash points for fault tests.

A test needs a process to die at one exact instant (between two writes, at the start of a stage),
which no timer outside the process can hit; ``crash_point`` SIGKILLs its own process there when
``RSTACK_CRASH_AT`` names that point. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "RSTACK_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
