"""Short runs of scripts/load.py (locust) against the tiny-weights server of the session.

They check what a load test promises: every model is called and its answers pass the
locustfile's checks, users step up as configured, reports are written, and a breached
threshold (latency bound, failed requests) really makes the run exit non-zero.
Performance itself is not judged here: on a busy CI box latency means little.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testdata import configs, log_tail

ROOT = Path(__file__).resolve().parents[2]
LOAD_SCRIPT = ROOT / "scripts" / "load.py"
# Generous on purpose: a 2-core CI box shared with other test runs can make one tiny-model
# request take tens of seconds; the hard kill only guards against a hang.
REQUEST_TIMEOUT_S = 120
HARD_TIMEOUT_S = 360


def run_load(triton, report_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(LOAD_SCRIPT), "--host", f"grpc://{triton.grpc_url}",
               "--report-dir", str(report_dir), "--request-timeout", str(REQUEST_TIMEOUT_S),
               *args]
    # Own session, so a hang is killed together with the locust process under load.py.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**os.environ,
                                    "I2TT_LOAD_MODELS": ",".join(triton.expected_models())})
    try:
        output, _ = process.communicate(timeout=HARD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"load run still going after {HARD_TIMEOUT_S}s; output:\n{output}")
    # The server's side of the run, for whoever reads a failed assertion's output.
    output += f"\n--- end of the server's log ({triton.log_file}) ---\n{log_tail(triton.log_file)}"
    return subprocess.CompletedProcess(command, process.returncode, output)


def stats_rows(report_dir: Path) -> dict[str, dict[str, str]]:
    with open(report_dir / "load_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def user_counts(report_dir: Path) -> set[int]:
    with open(report_dir / "load_stats_history.csv", newline="") as f:
        return {int(row["User Count"]) for row in csv.DictReader(f)}


def test_every_model_under_step_load(triton, tmp_path):
    # One user per model ("all" starts user k at model k): 3 at once, then 2 more every 2 s.
    models = triton.expected_models()  # the repository's, less any this machine cannot serve
    assert set(models) <= set(configs()) and "caption_tags" in models
    users = len(models)
    result = run_load(triton, tmp_path, "--task-set", "all", "--users", str(users),
                      "--step-users", "3", "--step-seconds", "2", "--duration", "5",
                      "--p95-ms", str(REQUEST_TIMEOUT_S * 2000))
    assert result.returncode == 0, result.stdout
    assert "thresholds passed" in result.stdout
    rows = stats_rows(tmp_path)
    for model in models:
        assert model in rows, f"no request to {model} in the report:\n{result.stdout}"
        assert rows[model]["Type"] == "grpc"
        assert int(rows[model]["Request Count"]) >= 1
        assert int(rows[model]["Failure Count"]) == 0, result.stdout
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert {3, users} <= user_counts(tmp_path), f"users did not step from 3 up to {users}"
    assert (tmp_path / "report.html").stat().st_size > 0


def test_latency_bound_fails_the_run(triton, tmp_path):
    result = run_load(triton, tmp_path, "--task-set", "blip_caption", "--users", "1",
                      "--duration", "2", "--p95-ms", "0.001")
    assert result.returncode == 1, result.stdout
    assert "threshold failed: blip_caption: p95" in result.stdout
    # The requests themselves succeeded: only the latency bound turned the run red.
    rows = stats_rows(tmp_path)
    assert int(rows["blip_caption"]["Request Count"]) >= 1
    assert int(rows["blip_caption"]["Failure Count"]) == 0


def test_failed_requests_fail_the_run(triton, tmp_path):
    # A deadline no request can meet: every call must be reported as failed.
    result = run_load(triton, tmp_path, "--task-set", "blip_caption", "--users", "1",
                      "--duration", "2", "--p95-ms", "0", "--request-timeout", "0.001")
    assert result.returncode == 1, result.stdout
    assert "requests failed" in result.stdout
    rows = stats_rows(tmp_path)
    assert int(rows["blip_caption"]["Failure Count"]) >= 1
    assert rows["blip_caption"]["Failure Count"] == rows["blip_caption"]["Request Count"]
