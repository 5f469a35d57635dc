"""The soak script's measuring parts, without a server (`make soak` runs the whole)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import soak  # noqa: E402


SLEEPER = "import time; time.sleep(60)"


def test_the_process_tree_memory_counts_the_children():
    alone = subprocess.Popen([sys.executable, "-c", SLEEPER])
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
                               "time.sleep(60)"])
    try:
        alone_rss, alone_count = soak.tree_rss(alone.pid)
        assert alone_count == 1 and alone_rss > 0
        for _ in range(100):  # until the child has started
            rss, count = soak.tree_rss(parent.pid)
            if count == 2:
                break
            time.sleep(0.1)
        assert count == 2 and rss > alone_rss
    finally:
        for child in soak.psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        for process in (alone, parent):
            process.kill()
            process.wait()
    assert soak.tree_rss(parent.pid) == (0, 0)


def test_request_totals_come_from_the_aggregated_row(tmp_path):
    (tmp_path / "load_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count\n"
        "grpc,t5_tags,10,1\n"
        ",Aggregated,25,3\n")
    assert soak.request_totals(tmp_path) == (25, 3)
