#!/usr/bin/env python3
"""Soak test: the mixed locust load against a tiny-weights server of our own for a set
time, reporting failed requests and how much memory the server's processes gained.

    python scripts/soak.py --duration 600            # what `make soak` runs
    python scripts/soak.py --duration 120 --users 4 --max-growth-mb 100

The server's memory is the resident set (RSS) of tritonserver and every process under it
(one Python backend stub per model instance), summed. It is sampled when the server is
ready ("start"), after --warmup-seconds of load ("warm": allocator pools and lazily
loaded code have settled by then) and at the end; memory.csv in --report-dir holds every
sample. Growth from warm to end is what a leak shows up in.

Exit code: 0 when requests ran, none failed and the growth after warm-up is within
--max-growth-mb; 1 otherwise; 2 when locust had to be killed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (scripts/load.py: the server and the locust run)

MB = 1024 * 1024


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--users", type=int, default=8, help="concurrent users")
    parser.add_argument("--task-set", choices=load.TASK_SETS, default="mix",
                        help="what the users send (see scripts/load.py)")
    parser.add_argument("--warmup-seconds", type=float, default=30.0,
                        help="load before the 'warm' memory sample")
    parser.add_argument("--sample-seconds", type=float, default=5.0,
                        help="seconds between memory samples")
    parser.add_argument("--max-growth-mb", type=float, default=200.0,
                        help="fail when the server's processes grow more than this from the "
                             "warm sample to the end")
    parser.add_argument("--report-dir", type=Path, default=load.ROOT / "reports" / "soak",
                        help="folder for memory.csv and the locust reports")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.users < 1 or args.warmup_seconds >= args.duration:
        parser.error("--duration must be positive and longer than --warmup-seconds; "
                     "--users at least 1")
    return args


def tree_rss(pid: int) -> tuple[int, int]:
    """(bytes resident, number of processes) of ``pid`` and everything under it."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass  # ended between the listing and the reading
    return total, len(processes)


class MemorySampler:
    """Samples the server's process tree every few seconds into memory.csv."""

    def __init__(self, pid: int, every: float, path: Path):
        self.pid, self.every, self.path = pid, every, path
        self.samples: list[tuple[float, int, int]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, int, int]:
        rss, count = tree_rss(self.pid)
        sample = (time.monotonic() - self.started, rss, count)
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with open(self.path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["seconds", "rss_mb", "processes"])
            for seconds, rss, count in self.samples:
                writer.writerow([f"{seconds:.1f}", f"{rss / MB:.1f}", count])

    def at(self, seconds: float) -> tuple[float, int, int]:
        """The first sample taken at or after ``seconds`` (else the last one)."""
        return next((s for s in self.samples if s[0] >= seconds), self.samples[-1])


def request_totals(report_dir: Path) -> tuple[int, int]:
    """(requests, failures) of the whole run, from locust's load_stats.csv."""
    with open(report_dir / "load_stats.csv", newline="") as stats:
        for row in csv.DictReader(stats):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def main(argv=None) -> int:
    args = parse_args(argv)
    report_dir = args.report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    load_args = load.parse_args([
        "--duration", f"{args.duration:g}", "--users", str(args.users), "--step-users", "0",
        "--task-set", args.task_set, "--report-dir", str(report_dir)])
    load_args.weights = load_args.weights.resolve()
    server = load.start_server(load_args)
    try:
        sampler = MemorySampler(server.process.pid, args.sample_seconds, report_dir / "memory.csv")
        start = sampler.sample()
        sampler.start()
        code = load.run_locust(load_args, server.grpc_url)
        end = sampler.sample()
        sampler.stop()
    finally:
        server.stop()
    warm = sampler.at(args.warmup_seconds)
    requests, failures = request_totals(report_dir)
    growth = (end[1] - warm[1]) / MB
    print(f"\nsoak: {args.duration:g}s, {args.users} users, task set {args.task_set}")
    print(f"  requests {requests}, failed {failures}")
    print(f"  server memory (RSS of {end[2]} processes): start {start[1] / MB:.0f} MB, "
          f"warm ({warm[0]:.0f}s) {warm[1] / MB:.0f} MB, end ({end[0]:.0f}s) {end[1] / MB:.0f} MB")
    print(f"  growth: {(end[1] - start[1]) / MB:+.1f} MB from start, {growth:+.1f} MB "
          f"after warm-up (limit {args.max_growth_mb:g} MB)")
    print(f"  reports: {report_dir} (memory.csv, load_stats.csv, report.html)")
    if code == 2:
        return 2
    ok = requests > 0 and failures == 0 and growth <= args.max_growth_mb
    print(f"soak {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
