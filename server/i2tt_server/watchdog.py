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
from pathlib import Path

log = logging.getLogger("i2tt_server")

STUB_NAME = "triton_python_backend_stub"


def stub_processes(server_pid: int) -> dict[int, str]:
    """Living model processes of one tritonserver: pid -> model name.

    A stub's command line is ``<stub> <repository>/<model>/<version>/model.py ...``.
    """
    stubs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        # stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")"
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != server_pid or state in ("Z", "X") or not argv[0].endswith(STUB_NAME.encode()):
            continue
        if len(argv) > 1:
            stubs[int(entry.name)] = Path(argv[1].decode()).parents[1].name
    return stubs


class Watchdog:
    """A daemon thread that checks the server's model processes every ``interval`` seconds
    and asks the server to heal the model of a process that died."""

    def __init__(self, server, interval: float = 0.5):
        self.server = server
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
        process = self.server.process
        # How many processes each model runs (its instance count), from the healthy start.
        expected = Counter(stub_processes(process.pid).values())
        while not self._stop.wait(self.interval):
            if process.poll() is not None or self.server.stopping:
                return
            current = stub_processes(process.pid)
            running = Counter(current.values())
            for model in sorted(m for m, n in expected.items() if running[m] < n):
                reason = (f"a process of model {model} died ({running[model]} of "
                          f"{expected[model]} running)")
                if not self.server.heal(model, reason, others_alive=running[model] > 0):
                    return
