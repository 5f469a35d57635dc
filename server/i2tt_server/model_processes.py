"""The model processes of one tritonserver: finding them, and ending a replaced version's.

Each Python-backend model instance runs in its own ``triton_python_backend_stub`` process,
a child of tritonserver.
"""

from __future__ import annotations

import logging
import os
import signal
import time
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


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used (user + system), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def retire(pids: list[int], timeout: float, quiet: float = 1.0) -> None:
    """End the processes of a model's replaced version once each is idle (no CPU used for
    ``quiet`` seconds: its last batch is done), at the latest after ``timeout``. Triton
    2.51 never finishes unloading the old version of a model reloaded with one of its
    processes dead while requests keep coming (checked: the living old process stayed for
    good, and ending it failed no request), so the launcher ends them itself."""
    deadline = time.monotonic() + timeout
    last = {pid: cpu_seconds(pid) for pid in pids}
    while last:
        time.sleep(quiet)
        for pid in list(last):
            used = cpu_seconds(pid)
            if used is None:
                del last[pid]
            elif used == last[pid] or time.monotonic() > deadline:
                log.info("i2tt: ending process %d of the replaced model version", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                del last[pid]
            else:
                last[pid] = used
