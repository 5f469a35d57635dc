#!/usr/bin/env python3
"""Headless locust load test of I2TT with a step load shape, reports and thresholds.

    python scripts/load.py                                   # own tiny-weights server
    python scripts/load.py --host grpc://127.0.0.1:8001 --users 32 --step-users 4 \\
        --step-seconds 30 --duration 300 --p95-ms 2000 --task-set mix

Without --host it starts its own tritonserver on free ports, on the tiny offline test
weights (built if missing), and stops it afterwards. Reports go to --report-dir:
load_stats.csv, load_stats_history.csv, load_failures.csv, load_exceptions.csv,
report.html (plus tritonserver.log when the server is ours).

Exit code: 0 when at least one request ran, none failed and every model's p95 latency is
within --p95-ms (when given); 1 when a threshold failed; 2 on bad usage or when locust had
to be killed.
The thresholds are checked inside the locustfile (tests/load/locustfile.py), so a plain
`locust` run with --p95-ms applies them too.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"
TEST_WEIGHTS = ROOT / "build" / "test-weights"
# As in the locustfile (which cannot be imported here: it switches the process to gevent):
# every model of the repository.
TASK_SETS = ("mix", "all", *sorted(p.parent.name for p in
                                   (ROOT / "model_repository").glob("*/config.pbtxt")))
# Past the planned duration, locust still needs to import, build its image variants and let
# in-flight requests finish; anything beyond this margin is a hang (locust can hang at exit
# with open gRPC channels).
GRACE_SECONDS = 60


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", "--server", dest="host", default=None,
                        help="gRPC address of a running server, e.g. grpc://127.0.0.1:8001 "
                             "or 127.0.0.1:8001; without it a tiny-weights server is started")
    parser.add_argument("--users", type=int, default=8, help="peak number of users")
    parser.add_argument("--step-users", type=int, default=2,
                        help="users added per step (0: all users from the start)")
    parser.add_argument("--step-seconds", type=float, default=10.0,
                        help="seconds between steps")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of load, from the first user on")
    # No default bound: an acceptable latency depends entirely on weights and hardware
    # (tiny weights on a busy 2-core box take seconds; real ones on a GPU far less).
    parser.add_argument("--p95-ms", type=float, default=0.0,
                        help="fail when any model's p95 latency exceeds this many "
                             "milliseconds (0: no latency bound; failed requests always fail)")
    parser.add_argument("--task-set", choices=TASK_SETS, default="mix",
                        help="'mix' is weighted like real traffic, 'all' sends every model "
                             "in turn, a model name sends only that model")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "load",
                        help="folder for the CSV and HTML reports")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds before one request counts as failed")
    parser.add_argument("--weights", type=Path, default=TEST_WEIGHTS,
                        help="weights of the server started here (ignored with --host); "
                             "the tiny test weights are built when missing")
    args = parser.parse_args(argv)
    if args.users < 1 or args.step_users < 0 or args.step_seconds <= 0 or args.duration <= 0:
        parser.error("--users must be >= 1, --step-users >= 0, --step-seconds and "
                     "--duration > 0")
    return args


def locust_command(args: argparse.Namespace, host: str) -> list[str]:
    report_dir = args.report_dir
    host = host if "://" in host else f"grpc://{host}"
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", host, "--users", str(args.users), "--run-time", f"{args.duration:g}s",
        "--step-users", str(args.step_users), "--step-seconds", f"{args.step_seconds:g}",
        "--task-set", args.task_set, "--p95-ms", f"{args.p95_ms:g}",
        "--request-timeout", f"{args.request_timeout:g}",
        # Let the requests in flight at the end finish, so they are counted, not cut off.
        "--stop-timeout", str(math.ceil(args.request_timeout)),  # locust takes whole seconds
        "--csv", str(report_dir / "load"), "--csv-full-history",
        "--html", str(report_dir / "report.html"),
    ]


def run_locust(args: argparse.Namespace, host: str) -> int:
    command = locust_command(args, host)
    limit = args.duration + args.request_timeout + GRACE_SECONDS
    print("+", " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        return process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"locust still running after {limit:.0f}s; killing it", file=sys.stderr)
        process.kill()
        process.wait()
        return 2
    except KeyboardInterrupt:  # locust got the same SIGINT and writes its reports
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return 2


def start_server(args: argparse.Namespace):
    """A tritonserver on free local ports serving the whole repository on --weights."""
    from i2tt_server.launcher import TritonServer, free_port
    from i2tt_server.repository import ModelRepository
    from i2tt_server.serve_options import ServeOptions
    from i2tt_server.weights_layout import missing_folders
    from i2tt_server.weights.synthetic import make_test_weights

    # Only the tiny test weights are ours to build; a folder of real weights is left alone.
    repository = ModelRepository.read(ROOT / "model_repository")
    folders = repository.served_folders()
    missing = missing_folders(args.weights, folders) if args.weights == TEST_WEIGHTS else []
    if missing:
        print(f"building tiny test weights in {args.weights}: {', '.join(missing)}", flush=True)
        make_test_weights(args.weights, "tiny", missing)
    log_file = args.report_dir / "tritonserver.log"
    # This checkout's model repository, not the one next to wherever i2tt_server is installed.
    server = TritonServer(ServeOptions(repository, weights=args.weights,
                                       http_port=free_port(), grpc_port=free_port(),
                                       metrics_port=free_port(), host="127.0.0.1",
                                       log_file=log_file))
    print(f"starting tritonserver on {server.grpc_url} (log: {log_file})", flush=True)
    started = time.monotonic()
    server.start(timeout=300)
    print(f"tritonserver ready in {time.monotonic() - started:.0f}s", flush=True)
    return server


def main(argv=None) -> int:
    args = parse_args(argv)
    args.report_dir = args.report_dir.resolve()
    args.weights = args.weights.resolve()
    args.report_dir.mkdir(parents=True, exist_ok=True)
    if args.host:
        code = run_locust(args, args.host)
    else:
        server = start_server(args)
        try:
            code = run_locust(args, server.grpc_url)
        finally:
            server.stop()
    verdict = "passed" if code == 0 else f"FAILED (exit code {code})"
    print(f"load test {verdict}; reports in {args.report_dir}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
