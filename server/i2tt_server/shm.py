"""The Python backend's shared memory in /dev/shm, and what dead servers leave there.

Each model process of the Python backend exchanges tensors with tritonserver through a
region ``/dev/shm/triton_python_backend_shm_region_<id>``. tritonserver removes its regions
when it exits cleanly; a server that is killed (SIGKILL after the exit timeout, the OOM
killer, a crash) leaves them behind. In a container /dev/shm is a small memory-backed
volume that outlives the server process (Kubernetes keeps an ``emptyDir`` across container
restarts), so the regions of every crash add up until the volume is full; then a model
process that needs more shared memory fails its requests, or the server dies of SIGBUS.
So the launcher removes the regions that no living process uses, before it starts a server
and after its server has exited, and warns when little shared memory is left.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("i2tt_server")

SHM_DIR = Path("/dev/shm")
PREFIX = "triton_python_backend_shm_region_"
# A region is created, sized and mapped within moments by the server that makes it; one
# younger than this may be a region of another server that is still being set up.
MIN_AGE_S = 10.0
# Less free shared memory than this at start is worth a warning: a batch of large images
# passes through it (the Python backend grows a model's region as its tensors need).
LOW_FREE_BYTES = 256 * 1024 * 1024


def regions_in_use() -> set[str]:
    """Names of the regions some living process has mapped or open (the processes whose
    memory maps this user may read: in a container, all of them)."""
    used = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            maps = (entry / "maps").read_text(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for line in maps.splitlines():
            at = line.find(PREFIX)
            if at >= 0:
                used.add(line[at:].split()[0])
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:  # this one closed meanwhile: the process's others still count
                continue
            if PREFIX in target:
                used.add(Path(target).name)
    return used


def stale_regions(folder: Path = SHM_DIR, min_age: float = MIN_AGE_S) -> list[Path]:
    """This user's regions that no living process uses and that are older than ``min_age``."""
    if not folder.is_dir():
        return []
    used = regions_in_use()
    now, uid, stale = time.time(), os.getuid(), []
    for path in folder.glob(f"{PREFIX}*"):
        try:
            status = path.stat()
        except OSError:
            continue
        if status.st_uid == uid and path.name not in used and now - status.st_mtime >= min_age:
            stale.append(path)
    return stale


def remove_stale_regions(folder: Path = SHM_DIR, min_age: float = MIN_AGE_S) -> int:
    """Remove the stale regions; the bytes freed."""
    freed = 0
    for path in stale_regions(folder, min_age):
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except OSError:
            continue
    if freed:
        log.warning("i2tt: removed %.1f MiB of shared memory left in %s by model processes "
                    "that are gone", freed / 2**20, folder)
    return freed


def warn_if_low(folder: Path = SHM_DIR, low: int = LOW_FREE_BYTES) -> int | None:
    """Free bytes in ``folder`` (None where it does not exist), with a warning if few."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free < low:
        log.warning("i2tt: only %.0f MiB free in %s; the Python backend passes every batch "
                    "through it: give the server more shared memory (docker --shm-size, a "
                    "larger memory-backed /dev/shm volume)", free / 2**20, folder)
    return free
