"""The soak script's measuring and judging parts, without a server (`make soak` runs the
whole)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import soak  # noqa: E402

MB = soak.MB
SLEEPER = "import time; time.sleep(60)"


def test_the_process_tree_memory_counts_the_children():
    alone = subprocess.Popen([sys.executable, "-c", SLEEPER])
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
                               "time.sleep(60)"])
    try:
        alone_memory = soak.tree_memory(alone.pid)
        assert len(alone_memory) == 1
        (alone_rss, alone_own), = alone_memory.values()
        assert 0 < alone_own < alone_rss  # the interpreter's code pages are not its own
        for _ in range(100):  # until the child has started
            if len(soak.psutil.Process(parent.pid).children()) == 1:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # and has imported what the lone one did
        memory = soak.tree_memory(parent.pid)
        # both are python processes, not stubs: one label, the two summed
        assert list(memory) == list(alone_memory)
        rss, own = memory[next(iter(memory))]
        assert rss > 1.5 * alone_rss and own > 1.5 * alone_own
    finally:
        for child in soak.psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        for process in (alone, parent):
            process.kill()
            process.wait()
    assert soak.tree_memory(parent.pid) == {}


def test_stubs_are_named_by_their_model_instance():
    stub = ["/x/backends/python/triton_python_backend_stub", "/r/blip_caption/1/model.py",
            "triton_python_backend_shm_region_1", "1048576", "1048576", "123",
            "/x/backends/python", "336", "blip_caption_0_1", "DEFAULT"]
    assert soak.process_label(stub, 7) == "blip_caption_0_1"
    assert soak.process_label(["/opt/bin/tritonserver", "--model-repository=/r"], 7) \
        == "tritonserver"
    assert soak.process_label([], 7) == "pid 7"  # a zombie has no command line


def test_request_totals_come_from_the_aggregated_row(tmp_path):
    (tmp_path / "load_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count\n"
        "grpc,t5_tags,10,1\n"
        ",Aggregated,25,3\n")
    assert soak.request_totals(tmp_path) == (25, 3)


def test_requests_at_a_moment_come_from_the_history(tmp_path):
    (tmp_path / "load_stats_history.csv").write_text(
        "Timestamp,User Count,Type,Name,Total Request Count\n"
        "100,0,,Aggregated,0\n"
        "101,8,grpc,t5_tags,4\n"
        "101,8,,Aggregated,10\n"
        "102,8,,Aggregated,30\n")
    history = soak.request_history(tmp_path)
    assert history == [(100.0, 0), (101.0, 10), (102.0, 30)]
    assert soak.requests_at(history, 99.0) == 0  # before the load
    assert soak.requests_at(history, 101.5) == pytest.approx(20)
    assert soak.requests_at(history, 500.0) == 30  # after it
    assert soak.request_history(tmp_path / "nowhere") == []
    assert soak.requests_at([], 101.0) == 0


def test_slope_is_a_least_squares_fit():
    assert soak.slope([0, 1, 2, 3], [5, 7, 9, 11]) == pytest.approx(2)
    assert soak.slope([0, 1, 2, 3], [1, 3, 1, 3]) == pytest.approx(0.4)
    assert soak.slope([1], [3]) == 0
    assert soak.slope([2, 2], [3, 3]) == 0
    assert soak.slope([2, 2], [3, 4]) == float("inf")


def samples(totals_mb, per_sample=500, second=None):
    """Samples of a tree of processes "a" (the given totals, less "b") and "b" (1 MB, or
    ``second``'s values), one every 5 s, ``per_sample`` requests apart."""
    out = []
    for index, total in enumerate(totals_mb):
        b = second[index] if second else 1.0
        memory = {"a": (int(2 * total * MB), int((total - b) * MB)), "b": (int(b * MB), int(b * MB))}
        out.append(soak.Sample(5.0 * index, 1000.0 + 5 * index, memory, index * per_sample))
    return out


def test_warm_up_ends_where_the_memory_settles():
    # rises 100 MB per sample (2,000 MB per 10,000 requests) for 4 samples, then flat with
    # noise of +-2 MB: warm-up ends at the knee, not at a fixed time
    rise = [1000 + 100 * i for i in range(5)]
    flat = [1400 + (2 if i % 2 else -2) for i in range(30)]
    series = samples(rise + flat)
    verdict = soak.judge(series, max_slope=20, max_fraction=0.5)
    assert verdict.warm == 4  # the first flat sample, not the last step up to it
    assert abs(verdict.slopes[soak.TOTAL]) < 2 and verdict.reasons == []
    assert set(verdict.slopes) == {soak.TOTAL, "a", "b"}
    assert abs(verdict.growth) <= 4
    text = "\n".join(soak.report(series, verdict))
    assert "warm (20 s, 2,000 requests) 1400 MB" in text
    assert "MB per 10,000 requests" in text and "a " in text and "b " in text


def test_a_steady_leak_never_settles():
    # 3 MB per sample of 500 requests: 60 MB per 10,000 requests
    series = samples([1000 + 3 * i for i in range(40)])
    verdict = soak.judge(series, max_slope=20, max_fraction=0.5)
    assert verdict.warm is None
    assert verdict.slopes[soak.TOTAL] == pytest.approx(60, rel=0.01)
    assert len(verdict.reasons) == 1 and "did not settle" in verdict.reasons[0]
    assert "not settled" in "\n".join(soak.report(series, verdict))
    # the same leak is within a looser bound
    assert soak.judge(series, max_slope=70, max_fraction=0.5).reasons == []


def test_one_process_growing_fails_even_when_another_shrinks():
    # the total is flat, but "b" grows 2 MB a sample (40 MB per 10,000 requests)
    series = samples([1000.0] * 30, second=[1 + 2 * i for i in range(30)])
    verdict = soak.judge(series, max_slope=20, max_fraction=0.5)
    assert verdict.warm == 0
    assert verdict.slopes["b"] == pytest.approx(40) and verdict.slopes["a"] == pytest.approx(-40)
    assert verdict.reasons == ["b grew +40.0 MB per 10,000 requests after warm-up (limit 20)"]


def test_a_bound_on_the_total_growth_applies_too():
    series = samples([1000 + 0.5 * i for i in range(30)])  # 10 MB per 10,000 requests
    assert soak.judge(series, 20, 0.5).reasons == []
    reasons = soak.judge(series, 20, 0.5, max_growth=5).reasons
    assert len(reasons) == 1 and "the total grew +14.5 MB" in reasons[0]


def test_memory_csv_has_every_process_and_the_total(tmp_path):
    series = samples([10.0, 12.0])
    soak.write_samples(series, tmp_path / "memory.csv")
    lines = (tmp_path / "memory.csv").read_text().splitlines()
    assert lines[0] == "seconds,requests,process,rss_mb,anon_shm_mb"
    assert lines[1:4] == ["0.0,0,a,20.0,9.0", "0.0,0,b,1.0,1.0", "0.0,0,total,21.0,10.0"]
    assert lines[6] == "5.0,500,total,25.0,12.0"
