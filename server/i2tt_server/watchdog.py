"""Noticing a dead model process and healing its model.

Each Python-backend model instance runs in its own ``triton_python_backend_stub`` process,
a child of tritonserver. Triton 2.51 neither restarts a stub that died (killed by the
kernel's OOM killer, a segfault in a native library, ``kill -9``) nor reports it: every
request that Triton hands to that process fails with "Stub process ... is not healthy"
while every health endpoint stays green. So the launcher watches the stubs itself: when
one is gone and the model has others still running, it reloads the model in place (the
living processes serve until the new ones are ready); when none is left, it unloads the
model (the model, and with strict readiness the server, turn not ready, so the
orchestrator stops sending traffic) and loads it again. If that fails, the launcher stops
the server and exits non-zero, and the orchestrator restarts the pod.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Callable

from .model_processes import stub_processes

log = logging.getLogger("i2tt_server")


class Watchdog:
    """A daemon thread that checks a server's model processes every ``interval`` seconds
    and reports a process that died to ``heal(model, reason, others_alive=...)``, which
    answers False when the server was given up. It watches while ``watching()`` (the
    server runs and is not stopping)."""

    def __init__(self, server_pid: int, heal: Callable[..., bool],
                 watching: Callable[[], bool], interval: float = 0.5):
        self.server_pid = server_pid
        self.heal = heal
        self.watching = watching
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="i2tt-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # How many processes each model runs (its instance count), from the healthy start.
        expected = Counter(stub_processes(self.server_pid).values())
        while not self._stop.wait(self.interval):
            if not self.watching():
                return
            running = Counter(stub_processes(self.server_pid).values())
            for model in sorted(m for m, n in expected.items() if running[m] < n):
                reason = (f"a process of model {model} died ({running[model]} of "
                          f"{expected[model]} running)")
                if not self.heal(model, reason, others_alive=running[model] > 0):
                    return
