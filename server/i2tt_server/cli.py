"""``i2tt-server``: fetch or build weights, and serve the model repository."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from .launcher import TritonServer
from .repository import REPOSITORY_ENV, SCHEDULING, ModelRepository
from .runners import checkpoints, default_folders
from .serve_options import API_KEY_ENV, API_KEY_HEADER, ServeOptions, Tls
from .weights_layout import missing_folders, weights_root


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
                      log=lambda m: print(m, file=sys.stderr), lengths=args.lengths)
    return 0


def cmd_serve(args) -> int:
    root = weights_root(args.weights)
    try:
        repository = ModelRepository.find(args.model_repository)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    models = repository.with_called_models(args.models)
    if not weights_in_place(root, repository.served_folders(models), args.fetch):
        return 1
    try:
        options = serve_options(args, repository, models, root)
        server = TritonServer(options)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop_on_signals(server)
    try:
        server.start(timeout=args.ready_timeout)
    except (RuntimeError, TimeoutError, OSError) as exc:
        if server.stop_requested.is_set():
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(ready_line(server), file=sys.stderr, flush=True)
    code = server.wait()
    if server.failure:
        print(f"error: {server.failure}", file=sys.stderr)
    return code


def serve_options(args, repository: ModelRepository, models: list[str] | None,
                  root: Path) -> ServeOptions:
    """The serve command's options, from its arguments."""
    return ServeOptions(repository, weights=root, http_port=args.http_port,
                        grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                        host=args.host, models=models, cache_size=args.cache_size,
                        extra_args=args.triton_arg, profile=args.batching,
                        scheduling=args.scheduling,
                        exit_timeout=args.exit_timeout,
                        api_key=read_api_key(args.api_key_file), tls=tls_files(args),
                        log_format=args.log_format,
                        grpc_max_connection_age=args.grpc_max_connection_age)


def weights_in_place(root: Path, folders: list[str], fetch: bool) -> bool:
    """Whether every weights folder is in ``root``, after fetching the missing ones if
    ``fetch``; prints why not."""
    missing = missing_folders(root, folders)
    if missing and fetch:
        from .weights.fetch import FetchError, fetch_weights

        try:
            fetch_weights(root, missing, log=lambda m: print(m, file=sys.stderr))
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return False
    elif missing:
        print(f"error: no weights for {missing} in {root}", file=sys.stderr)
        return False
    return True


def stop_on_signals(server: TritonServer) -> None:
    """SIGTERM (Kubernetes stopping the pod) and Ctrl-C (which reaches the whole foreground
    process group; the server runs in its own session) both mean: drain, then stop."""
    def request_stop(signum, _frame):
        if not server.stop_requested.is_set():
            server.stop_requested.set()
            print(f"\n{signal.Signals(signum).name}: draining requests in flight (at most "
                  f"{server.options.exit_timeout}s), then stopping tritonserver ...",
                  file=sys.stderr)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def ready_line(server: TritonServer) -> str:
    options = server.options
    host, tls = options.host, options.tls
    scheme = "https" if tls else "http"
    return (f"I2TT ready: gRPC{'+TLS' if tls else ''} {host}:{options.grpc_port}, "
            f"{scheme.upper()} {host}:{options.http_port}, metrics {host}:{options.metrics_port}"
            f"; models: {', '.join(server.expected_models())}; batching profile: "
            f"{server.resolved_profile()}; API key: {'required' if options.api_key else 'off'}")


def read_api_key(path: str | None) -> str | None:
    """The API key from --api-key-file (first line), else $I2TT_API_KEY, else None."""
    key = Path(path).read_text().strip() if path else os.environ.get(API_KEY_ENV, "").strip()
    if path and not key:
        raise ValueError(f"--api-key-file {path} is empty")
    return key or None


def tls_files(args) -> Tls | None:
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    files = [Path(p) for p in (args.tls_cert, args.tls_key, args.tls_client_ca) if p]
    for path in files:
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
    resolved = [p.resolve() for p in files]
    return Tls(*resolved)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_args(argv)
    return args.func(args)


def parser() -> argparse.ArgumentParser:
    # "@FILE" reads arguments from FILE, one per line: the container runs
    # `i2tt-server serve @/etc/i2tt/serve.args` (deploy/serve.args).
    top = argparse.ArgumentParser(prog="i2tt-server", description=__doc__,
                                  fromfile_prefix_chars="@")
    sub = top.add_subparsers(dest="command", required=True)
    add_fetch_command(sub)
    add_make_test_weights_command(sub)
    add_serve_command(sub)
    return top


def add_fetch_command(sub) -> None:
    fetch = sub.add_parser("fetch-weights", help="download the public checkpoints")
    fetch.add_argument("--models", nargs="+", choices=sorted(checkpoints()),
                       help=f"weights folders (default: {' '.join(default_folders())})")
    fetch.add_argument("--dest", help="weights root (default: $I2TT_WEIGHTS or ~/.cache/i2tt/weights)")
    fetch.set_defaults(func=cmd_fetch)


def add_make_test_weights_command(sub) -> None:
    test = sub.add_parser("make-test-weights", help="build random weights offline")
    test.add_argument("dest")
    test.add_argument("--size", choices=["tiny", "full"], default="tiny",
                      help="tiny: for tests, seconds; full: architecture-true, for benchmarks")
    test.add_argument("--models", nargs="+", choices=sorted(checkpoints()),
                      help="weights folders (default: all)")
    test.add_argument("--lengths", choices=["pinned", "varied"], default="pinned",
                      help="full size: every answer as long as the others (pinned), or "
                           "ending at varied lengths (varied; t5-tags only, for the in-flight "
                           "benchmark)")
    test.set_defaults(func=cmd_make_test_weights)


def add_serve_command(sub) -> None:
    serve = sub.add_parser("serve", help="run tritonserver with the model repository")
    serve.add_argument("--weights", help="weights root (default: $I2TT_WEIGHTS or ~/.cache/i2tt/weights)")
    serve.add_argument("--model-repository",
                       help=f"default: ${REPOSITORY_ENV}, else ./model_repository, else the "
                            "source checkout's")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: loopback only; 0.0.0.0 for all "
                            "interfaces, as in a container)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--models", nargs="+", help="load only these models")
    serve.add_argument("--cache-size", type=int, default=256 * 1024 * 1024,
                       help="response cache bytes (0: off)")
    serve.add_argument("--batching", choices=["auto", "gpu", "cpu"], default="auto",
                       help="batch sizes: the repository's as shipped (gpu), or the CPU profile "
                            "(per-model caps from a batch-size sweep; cpu); auto: cpu when no GPU is visible")
    serve.add_argument("--scheduling", choices=list(SCHEDULING), default="config",
                       help="decoding: inflight (requests join and leave the running batch at "
                            "every step), static (each batch generated to its end), or as each "
                            "model's config says (default); applies to the models with an "
                            "in-flight path")
    serve.add_argument("--no-fetch", dest="fetch", action="store_false",
                       help="fail instead of downloading missing weights")
    serve.add_argument("--ready-timeout", type=float, default=600.0)
    serve.add_argument("--exit-timeout", type=int, default=30, metavar="SECONDS",
                       help="on SIGTERM/Ctrl-C, how long requests in flight may take to "
                            "finish before the server stops anyway (default: 30)")
    serve.add_argument("--api-key-file", metavar="PATH",
                       help=f"require this key (the file's first line; else ${API_KEY_ENV}) in "
                            f"the '{API_KEY_HEADER}' header of every call except health")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve gRPC and HTTPS with this certificate")
    serve.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    serve.add_argument("--tls-client-ca", metavar="PEM",
                       help="mutual TLS: accept only clients with a certificate this CA signed")
    serve.add_argument("--log-format", choices=["default", "ISO8601"], default="default",
                       help="tritonserver's log line format")
    serve.add_argument("--grpc-max-connection-age", type=float, metavar="SECONDS",
                       help="close gRPC connections after this age, so clients reconnect and "
                            "a load balancer spreads them again (default: never)")
    serve.add_argument("--triton-arg", action="append", default=[],
                       help="extra tritonserver argument, e.g. --triton-arg=--log-verbose=1")
    serve.set_defaults(func=cmd_serve)


if __name__ == "__main__":
    sys.exit(main())
