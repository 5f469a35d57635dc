"""``i2tt-server``: fetch or build weights, and serve the model repository."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .launcher import TritonServer
from .repository import REPOSITORY_ENV, find_repository, served_folders
from .runners import checkpoints, default_folders
from .weights.layout import missing_folders, weights_root


def cmd_fetch(args) -> int:
    from .weights.fetch import FetchError, fetch_weights

    try:
        fetch_weights(weights_root(args.dest), args.models or default_folders(),
                      log=lambda m: print(m, file=sys.stderr))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_make_test_weights(args) -> int:
    from .weights.synthetic import make_test_weights

    make_test_weights(Path(args.dest), args.size, args.models,
                      log=lambda m: print(m, file=sys.stderr))
    return 0


def cmd_serve(args) -> int:
    root = weights_root(args.weights)
    try:
        repository = find_repository(args.model_repository)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    missing = missing_folders(root, served_folders(repository, args.models))
    if missing and args.fetch:
        from .weights.fetch import FetchError, fetch_weights

        try:
            fetch_weights(root, missing, log=lambda m: print(m, file=sys.stderr))
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    elif missing:
        print(f"error: no weights for {missing} in {root}", file=sys.stderr)
        return 1
    server = TritonServer(repository, weights=root,
                          http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, host=args.host, models=args.models,
                          cache_size=args.cache_size, extra_args=args.triton_arg,
                          profile=args.batching)
    # Ctrl-C reaches the whole foreground process group (and the server is in its own
    # session): forward it ourselves, once, so the server shuts down cleanly.
    stopping = []

    def forward(signum, _frame):
        if not stopping:
            stopping.append(signum)
            print("\nshutting down tritonserver ...", file=sys.stderr)
            if server.process:
                server.process.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        server.start(timeout=args.ready_timeout)
    except (RuntimeError, TimeoutError) as exc:
        if stopping:
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"I2TT ready: gRPC {args.host}:{args.grpc_port}, HTTP {args.host}:{args.http_port}, "
          f"metrics {args.host}:{args.metrics_port}; models: {', '.join(server.expected_models())}; "
          f"batching profile: {server.resolved_profile()}", file=sys.stderr, flush=True)
    code = server.wait()
    return 0 if stopping else code


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="i2tt-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-weights", help="download the public checkpoints")
    fetch.add_argument("--models", nargs="+", choices=sorted(checkpoints()),
                       help=f"weights folders (default: {' '.join(default_folders())})")
    fetch.add_argument("--dest", help="weights root (default: $I2TT_WEIGHTS or ~/.cache/i2tt/weights)")
    fetch.set_defaults(func=cmd_fetch)

    test = sub.add_parser("make-test-weights", help="build random weights offline")
    test.add_argument("dest")
    test.add_argument("--size", choices=["tiny", "full"], default="tiny",
                      help="tiny: for tests, seconds; full: architecture-true, for benchmarks")
    test.add_argument("--models", nargs="+", choices=sorted(checkpoints()),
                      help="weights folders (default: all)")
    test.set_defaults(func=cmd_make_test_weights)

    serve = sub.add_parser("serve", help="run tritonserver with the model repository")
    serve.add_argument("--weights", help="weights root (default: $I2TT_WEIGHTS or ~/.cache/i2tt/weights)")
    serve.add_argument("--model-repository",
                       help=f"default: ${REPOSITORY_ENV}, else ./model_repository, else the "
                            "source checkout's")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--models", nargs="+", help="load only these models")
    serve.add_argument("--cache-size", type=int, default=256 * 1024 * 1024,
                       help="response cache bytes (0: off)")
    serve.add_argument("--batching", choices=["auto", "gpu", "cpu"], default="auto",
                       help="batch sizes: the repository's as shipped (gpu), or the CPU profile "
                            "(per-model caps from a batch-size sweep; cpu); auto: cpu when no GPU is visible")
    serve.add_argument("--no-fetch", dest="fetch", action="store_false",
                       help="fail instead of downloading missing weights")
    serve.add_argument("--ready-timeout", type=float, default=600.0)
    serve.add_argument("--triton-arg", action="append", default=[],
                       help="extra tritonserver argument, e.g. --triton-arg=--log-verbose=1")
    serve.set_defaults(func=cmd_serve)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
