#!/usr/bin/env python3
"""Soak test: the mixed locust load against a tiny-weights server of our own for a set
time, reporting failed requests and how the server's processes' memory grows.

    python scripts/soak.py                           # what `make soak` runs: 30 minutes
    python scripts/soak.py --duration 3600 --sample-seconds 10

Every --sample-seconds it reads each process of the server (tritonserver and one Python
backend stub per model instance): its resident set (RSS) and its anonymous and shared
memory, proportionally shared (Pss_Anon + Pss_Shmem of /proc/<pid>/smaps_rollup). The
second is what a leak grows and what the verdict uses: RSS also counts the pages of shared
libraries (mapped from files, the same in every process, paged in and out as the machine
needs) and counts each model's shared-memory region in /dev/shm twice (tritonserver and
its stub both map it). memory.csv in --report-dir holds every sample, per process.

Warm-up is read off the samples, not fixed: it ends at the first sample after which the
total memory, fitted by least squares against the requests served, grows by at most
--max-slope-mb per 10,000 requests; it must end within the first --max-warmup-fraction of
the samples, or the memory did not settle. The slope after it is reported for the total
and for each process.

Exit code: 0 when requests ran, none failed, the memory settled and after warm-up neither
the total nor any one process grows faster than --max-slope-mb per 10,000 requests (and,
with --max-growth-mb, the total grew at most that much); 1 otherwise; 2 when locust had to
be killed.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (scripts/load.py: the server and the locust run)

MB = 1024 * 1024
PER = 10_000  # slopes are in MB per this many requests
TOTAL = "total"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # 30 minutes: the processes settle over minutes (kosmos2_caption's memory rose until
    # about minute 10), so the first 10 minutes of a 30-minute run had not settled by
    # half-time (+30 MB per 10,000 requests over minutes 5-10) while the whole run had
    # (+4.3 after warm-up; docs/load.md).
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    parser.add_argument("--users", type=int, default=8, help="concurrent users")
    parser.add_argument("--task-set", choices=load.TASK_SETS, default="mix",
                        help="what the users send (see scripts/load.py)")
    parser.add_argument("--sample-seconds", type=float, default=5.0,
                        help="seconds between memory samples")
    parser.add_argument("--max-slope-mb", type=float, default=20.0,
                        help="fail when, after warm-up, the total or any one process grows "
                             "faster than this many MB per 10,000 requests; also what "
                             "ends the warm-up")
    parser.add_argument("--max-warmup-fraction", type=float, default=0.5,
                        help="the memory must have settled within this share of the samples")
    parser.add_argument("--max-growth-mb", type=float, default=0.0,
                        help="also fail when the total grows more than this many MB from "
                             "the end of warm-up to the end (0: no such bound)")
    parser.add_argument("--report-dir", type=Path, default=load.ROOT / "reports" / "soak",
                        help="folder for memory.csv and the locust reports")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.users < 1 or args.sample_seconds <= 0 \
            or not 0 < args.max_warmup_fraction < 1:
        parser.error("--duration and --sample-seconds must be positive, --users at least 1, "
                     "--max-warmup-fraction between 0 and 1")
    if args.duration < 10 * args.sample_seconds:
        parser.error("--duration must hold at least 10 samples (--sample-seconds)")
    return args


# ------------------------------------------------------------------------ measuring

def process_label(command: list[str], pid: int) -> str:
    """A stub by its model instance (``blip_caption_0_1``, the argument after the backend
    directory and the number that follows it), anything else by its program's name."""
    if command and command[0].endswith("triton_python_backend_stub") and len(command) > 8:
        return command[8]
    return Path(command[0]).name if command else f"pid {pid}"


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """/proc/<pid>/smaps_rollup's counters in bytes (None where the kernel has none)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = {}
            for line in rollup:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[key] = int(parts[0]) * 1024
            return fields
    except OSError:
        return None


def process_memory(process: psutil.Process) -> tuple[int, int]:
    """(RSS, anonymous + shared memory) of one process in bytes. The second is Pss_Anon +
    Pss_Shmem (a page shared by tritonserver and a stub counts half in each); where the
    kernel lacks them (before Linux 5.x, or not Linux), the anonymous memory alone: RSS
    less psutil's ``shared`` (file-backed and shared-memory pages)."""
    info = process.memory_info()
    fields = smaps_rollup(process.pid)
    if fields and "Pss_Anon" in fields:
        return info.rss, fields["Pss_Anon"] + fields.get("Pss_Shmem", 0)
    return info.rss, info.rss - getattr(info, "shared", 0)


def tree_memory(pid: int) -> dict[str, tuple[int, int]]:
    """label -> (RSS, anonymous + shared bytes) of ``pid`` and every process under it;
    empty when ``pid`` is gone. Labels repeat only for processes of one name that are not
    stubs; those are summed."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    memory: dict[str, tuple[int, int]] = {}
    for process in processes:
        try:
            label = process_label(process.cmdline(), process.pid)
            rss, own = process_memory(process)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # ended between the listing and the reading
        before = memory.get(label, (0, 0))
        memory[label] = (before[0] + rss, before[1] + own)
    return memory


@dataclass
class Sample:
    seconds: float  # since sampling started
    wall: float  # time.time(), to place it in locust's per-second history
    memory: dict[str, tuple[int, int]]  # label -> (RSS, anonymous + shared), bytes
    requests: float = 0.0  # requests completed by then (from the history, after the run)

    def total(self, rss: bool = False) -> int:
        return sum(values[0 if rss else 1] for values in self.memory.values())

    def of(self, label: str) -> float:
        """MB of anonymous + shared memory of ``label`` (or TOTAL)."""
        if label == TOTAL:
            return self.total() / MB
        return self.memory.get(label, (0, 0))[1] / MB


class MemorySampler:
    """Samples the server's process tree every few seconds."""

    def __init__(self, pid: int, every: float):
        self.pid, self.every = pid, every
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> Sample:
        sample = Sample(time.monotonic() - self.started, time.time(), tree_memory(self.pid))
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


def write_samples(samples: list[Sample], path: Path) -> None:
    """memory.csv: one row per sample and process, and one for their total."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", "requests", "process", "rss_mb", "anon_shm_mb"])
        for sample in samples:
            rows = sorted(sample.memory.items()) + [
                (TOTAL, (sample.total(rss=True), sample.total()))]
            for label, (rss, own) in rows:
                writer.writerow([f"{sample.seconds:.1f}", f"{sample.requests:.0f}", label,
                                 f"{rss / MB:.1f}", f"{own / MB:.1f}"])


# ------------------------------------------------------------------------ requests

def request_totals(report_dir: Path) -> tuple[int, int]:
    """(requests, failures) of the whole run, from locust's load_stats.csv."""
    with open(report_dir / "load_stats.csv", newline="") as stats:
        for row in csv.DictReader(stats):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def request_history(report_dir: Path) -> list[tuple[float, int]]:
    """(Unix time, requests completed so far) once a second, from locust's
    load_stats_history.csv (the Aggregated rows)."""
    path = report_dir / "load_stats_history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as history:
        return [(float(row["Timestamp"]), int(row["Total Request Count"]))
                for row in csv.DictReader(history) if row["Name"] == "Aggregated"]


def requests_at(history: list[tuple[float, int]], wall: float) -> float:
    """Requests completed at ``wall``, interpolated in the history (0 before it, its last
    count after it)."""
    if not history:
        return 0.0
    times = [t for t, _ in history]
    at = bisect.bisect_right(times, wall)
    if at == 0:
        return 0.0
    if at == len(history):
        return float(history[-1][1])
    (t0, n0), (t1, n1) = history[at - 1], history[at]
    return n0 + (n1 - n0) * (wall - t0) / (t1 - t0) if t1 > t0 else float(n1)


# ------------------------------------------------------------------------ judging

def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line of ys against xs: (slope, intercept). The slope is 0 when xs do
    not vary and ys do not either, infinite when only ys vary."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return (0.0 if all(y == ys[0] for y in ys) else float("inf")), my
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return b, my - b * mx


def slope(xs: list[float], ys: list[float]) -> float:
    return fit(xs, ys)[0]


def slope_per_requests(samples: list[Sample], label: str = TOTAL) -> float:
    """MB per PER requests of ``label``'s memory over ``samples``, fitted."""
    return slope([s.requests / PER for s in samples], [s.of(label) for s in samples])


def settled_from(samples: list[Sample], max_slope: float) -> bool:
    """Whether the total memory from the first of ``samples`` on follows a line of at most
    ``max_slope`` MB per PER requests: the least-squares line of them all rises no faster,
    and the first sample lies on it, no lower than three standard deviations of the later
    samples around it. (A least-squares line over a long flat stretch hardly rises for one
    step at its start, which is still warm-up.)"""
    xs = [s.requests / PER for s in samples]
    ys = [s.of(TOTAL) for s in samples]
    b, a = fit(xs, ys)
    if b > max_slope:
        return False
    residuals = [y - (a + b * x) for x, y in zip(xs[1:], ys[1:])]
    spread = (sum(r * r for r in residuals) / max(1, len(residuals) - 2)) ** 0.5
    return ys[0] - (a + b * xs[0]) >= -3 * spread


def warmup_end(samples: list[Sample], max_slope: float, max_fraction: float) -> int | None:
    """Index of the first sample from which the total memory settled (``settled_from``),
    looked for among the first ``max_fraction`` of the samples; None when it did not
    settle there."""
    latest = min(len(samples) - 3, int(len(samples) * max_fraction))
    for index in range(max(0, latest) + 1):
        if settled_from(samples[index:], max_slope):
            return index
    return None


@dataclass
class Verdict:
    warm: int | None  # index of the sample where warm-up ended
    slopes: dict[str, float] = field(default_factory=dict)  # label -> MB per PER requests
    growth: float = 0.0  # MB of the total from the warm sample to the last
    reasons: list[str] = field(default_factory=list)  # why the soak failed; empty: passed


def judge(samples: list[Sample], max_slope: float, max_fraction: float,
          max_growth: float = 0.0) -> Verdict:
    """Where warm-up ended, the slopes after it (total and per process), and why the
    memory fails the soak (empty when it passes)."""
    warm = warmup_end(samples, max_slope, max_fraction)
    if warm is None:
        tail = samples[int(len(samples) * max_fraction):]
        return Verdict(None, {TOTAL: slope_per_requests(tail)}, reasons=[
            f"the memory did not settle within the first {max_fraction:.0%} of the run: "
            f"over the rest it grew {slope_per_requests(tail):+.1f} MB per {PER:,} "
            f"requests (limit {max_slope:g})"])
    after = samples[warm:]
    labels = sorted({label for s in after for label in s.memory})
    slopes = {TOTAL: slope_per_requests(after),
              **{label: slope_per_requests(after, label) for label in labels}}
    verdict = Verdict(warm, slopes, after[-1].of(TOTAL) - after[0].of(TOTAL))
    for label in labels:
        if slopes[label] > max_slope:
            verdict.reasons.append(f"{label} grew {slopes[label]:+.1f} MB per {PER:,} "
                                   f"requests after warm-up (limit {max_slope:g})")
    if max_growth and verdict.growth > max_growth:
        verdict.reasons.append(f"the total grew {verdict.growth:+.1f} MB after warm-up "
                               f"(limit {max_growth:g})")
    return verdict


def report(samples: list[Sample], verdict: Verdict) -> list[str]:
    """The memory part of the soak's summary."""
    first, last = samples[0], samples[-1]
    warm = samples[verdict.warm] if verdict.warm is not None else None
    lines = [f"  server memory, anonymous + shared (RSS in brackets), {len(last.memory)} "
             f"processes:"]
    points = [("start", first), *([("warm", warm)] if warm else []), ("end", last)]
    lines.append("    " + ", ".join(
        f"{name} ({s.seconds:.0f} s, {s.requests:,.0f} requests) {s.of(TOTAL):.0f} MB "
        f"({s.total(rss=True) / MB:.0f})" for name, s in points))
    if warm is None:
        lines.append(f"    not settled; slope over the second part "
                     f"{verdict.slopes[TOTAL]:+.1f} MB per {PER:,} requests")
        return lines
    lines.append(f"    after warm-up: {verdict.growth:+.1f} MB over "
                 f"{last.requests - warm.requests:,.0f} requests, slope "
                 f"{verdict.slopes[TOTAL]:+.1f} MB per {PER:,} requests")
    lines.append(f"    {'process':24s} {'start':>7s} {'warm':>7s} {'end':>7s} "
                 f"{'MB/' + format(PER, ','):>10s}")
    for label in sorted(verdict.slopes):
        if label == TOTAL:
            continue
        lines.append(f"    {label:24s} {first.of(label):7.0f} {warm.of(label):7.0f} "
                     f"{last.of(label):7.0f} {verdict.slopes[label]:+10.1f}")
    return lines


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
        sampler = MemorySampler(server.process.pid, args.sample_seconds)
        sampler.sample()
        sampler.start()
        code = load.run_locust(load_args, server.grpc_url)
        sampler.sample()
        sampler.stop()
    finally:
        server.stop()
    samples = [s for s in sampler.samples if s.memory]  # not those after a server died
    history = request_history(report_dir)
    for sample in samples:
        sample.requests = requests_at(history, sample.wall)
    write_samples(samples, report_dir / "memory.csv")
    requests, failures = request_totals(report_dir)
    verdict = judge(samples, args.max_slope_mb, args.max_warmup_fraction, args.max_growth_mb)
    print(f"\nsoak: {args.duration:g}s, {args.users} users, task set {args.task_set}")
    print(f"  requests {requests:,}, failed {failures}")
    print("\n".join(report(samples, verdict)))
    for reason in verdict.reasons:
        print(f"  memory threshold failed: {reason}")
    print(f"  reports: {report_dir} (memory.csv, load_stats.csv, report.html)")
    if code == 2:
        return 2
    ok = requests > 0 and failures == 0 and not verdict.reasons
    print(f"soak {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
