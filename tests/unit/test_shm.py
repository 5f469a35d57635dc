"""The launcher's clean-up of the shared memory that killed servers leave in /dev/shm."""

from __future__ import annotations

import mmap
import os
import time

from i2tt_server import shm


def region(folder, name: str, size: int = 4096, age: float = 0.0):
    path = folder / f"{shm.PREFIX}{name}"
    path.write_bytes(b"\0" * size)
    if age:
        old = time.time() - age
        os.utime(path, (old, old))
    return path


def test_only_old_regions_no_process_uses_are_removed(tmp_path):
    mapped = region(tmp_path, "mapped", age=600)
    opened = region(tmp_path, "open", age=600)
    left = region(tmp_path, "left-by-a-killed-server", size=3 * 4096, age=600)
    fresh = region(tmp_path, "being-set-up")  # another server may be about to map it
    other = tmp_path / "not-a-region"
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    with open(mapped, "r+b") as f, open(opened, "rb"):
        view = mmap.mmap(f.fileno(), 0)
        try:
            in_use = shm.regions_in_use()
            assert {mapped.name, opened.name} <= in_use
            assert left.name not in in_use
            assert shm.remove_stale_regions(tmp_path) == 3 * 4096
        finally:
            view.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mapped, opened, fresh, other))


def test_a_missing_folder_is_no_error(tmp_path):
    assert shm.stale_regions(tmp_path / "absent") == []
    assert shm.remove_stale_regions(tmp_path / "absent") == 0
    assert shm.warn_if_low(tmp_path / "absent") is None


def test_little_free_shared_memory_is_warned_about(tmp_path, caplog):
    assert shm.warn_if_low(tmp_path, low=0) > 0
    assert not caplog.records
    shm.warn_if_low(tmp_path, low=2**62)
    assert "free in" in caplog.text and "shm-size" in caplog.text
