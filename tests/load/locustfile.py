"""Locust load test for I2TT over Triton's gRPC API.

Run it through ``scripts/load.py`` (which can start a server, writes reports and applies the
thresholds), or directly::

    locust -f tests/load/locustfile.py --headless -H grpc://127.0.0.1:8001 \\
        -u 8 -t 60s --step-users 2 --step-seconds 10 --task-set mix --p95-ms 5000

Every call is reported to locust's statistics as request type "grpc" named after the model,
and counts as failed when Triton returns an error or the response misses what the wire
contract promises. What is sent and checked lives in payloads.py; the models come from the
model repository's configs, so every served model has a task.
"""

from __future__ import annotations

# grpcio must be switched to gevent before any channel exists, or its blocking calls stall
# the whole locust process (every user shares one OS thread).
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import itertools  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import locust.stats  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import LoadTestShape, User, between, events, task  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from payloads import MIX_WEIGHTS, MODELS, Payloads, check  # noqa: E402

logger = logging.getLogger("i2tt.load")

# "all" sends every model in turn; user k starts at model k, so a run with as many users as
# models touches every model at once (the smoke test relies on it).
TASK_SETS = ("mix", "all", *MODELS)
# Built once per process at import, before any user starts, so the cost is not measured.
PAYLOADS = Payloads()


# ---------------------------------------------------------------- command-line options

@events.init_command_line_parser.add_listener
def add_options(parser):
    # Plain parser.add_argument: locust's include_in_web_ui does not work inside groups.
    parser.add_argument("--task-set", choices=TASK_SETS, default="mix", include_in_web_ui=True,
                       help="which calls to send: 'mix' (weighted like real traffic), "
                            "'all' (every model in turn) or one model (default: mix)")
    parser.add_argument("--p95-ms", type=float, default=0.0, include_in_web_ui=True,
                       help="fail the run when any model's p95 latency exceeds this many "
                            "milliseconds; 0 turns the bound off (default: 0)")
    parser.add_argument("--step-users", type=int, default=0, include_in_web_ui=True,
                       help="users added at each step, up to --users; 0 starts them all at "
                            "once (default: 0)")
    parser.add_argument("--step-seconds", type=float, default=10.0, include_in_web_ui=True,
                       help="seconds between steps (default: 10)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                       help="seconds before one gRPC call counts as failed (default: 120)")


# ---------------------------------------------------------------- the user

class ModelError(Exception):
    """An error answer of the server, as locust's error report shows it."""


class TritonUser(User):
    """One caller with its own gRPC connection, sending one request at a time."""

    # A short think time between calls, like a service handling a stream of uploads.
    wait_time = between(0.05, 0.5)
    _instances = itertools.count()

    def __init__(self, environment):
        super().__init__(environment)
        options = environment.parsed_options
        self.task_set = getattr(options, "task_set", "mix")
        self.timeout = getattr(options, "request_timeout", 120.0)
        self.rng = random.Random()
        self.turn = next(self._instances) % len(MODELS)  # where "all" starts for this user
        self.client: grpcclient.InferenceServerClient | None = None

    def on_start(self):
        if not self.host:
            raise ValueError("no server address: pass --host grpc://HOST:PORT")
        # tritonclient wants "host:port"; accept locust-style URLs too.
        address = self.host.split("://", 1)[-1].rstrip("/")
        self.client = grpcclient.InferenceServerClient(address)

    def on_stop(self):
        # An open channel keeps grpcio's gevent poller alive and locust never exits.
        if self.client is not None:
            self.client.close()
            self.client = None

    def next_model(self) -> str:
        if self.task_set == "mix":
            return self.rng.choices(MODELS, weights=[MIX_WEIGHTS.get(m, 1) for m in MODELS])[0]
        if self.task_set == "all":
            model = MODELS[self.turn]
            self.turn = (self.turn + 1) % len(MODELS)
            return model
        return self.task_set

    @task
    def call_model(self):
        model = self.next_model()
        self.infer(model, PAYLOADS.request(model, self.rng))

    def infer(self, model: str, inputs) -> None:
        """One call, timed and reported to locust (tritonclient knows nothing of locust)."""
        start = time.perf_counter()
        exception = None
        response_length = 0
        try:
            result = self.client.infer(model, inputs, client_timeout=self.timeout)
            response_length = result.get_response().ByteSize()
            check(model, result)
        except InferenceServerException as error:
            # Its repr is "InferenceServerException()": name the status and message instead,
            # so the report says what went wrong.
            exception = ModelError(f"{error.status()}: {error.message()}")
        except Exception as error:  # contract breaks, client faults: count it, go on
            exception = error
        events.request.fire(request_type="grpc", name=model,
                            response_time=(time.perf_counter() - start) * 1000,
                            response_length=response_length, exception=exception,
                            context={}, url=self.host)


# ---------------------------------------------------------------- load shape

def step_users(elapsed: float, users: int, step: int, step_seconds: float) -> int:
    """Users running ``elapsed`` seconds into a step ramp: ``step`` more every
    ``step_seconds``, never more than ``users``; step 0 means all of them from the start."""
    if step <= 0 or step >= users:
        return users
    return min(users, step * (1 + int(elapsed // step_seconds)))


class StepLoadShape(LoadTestShape):
    """Users step up over time (--step-users every --step-seconds, up to --users) and the
    run ends after --run-time. Holding each level for a while shows where latency bends."""

    use_common_options = True  # reads --users and --run-time like a plain locust run

    def tick(self):
        options = self.runner.environment.parsed_options
        elapsed = self.get_run_time()
        if options.run_time and elapsed >= options.run_time:
            return None
        users = options.num_users or 1
        step = options.step_users
        # Spawn each step's users within about a second; a ramp inside a step blurs it.
        return step_users(elapsed, users, step, options.step_seconds), max(step, users, 1)


# ---------------------------------------------------------------- thresholds

def threshold_failures(environment) -> list[str]:
    """Reasons the run fails its thresholds; empty when it passes."""
    stats = environment.stats
    reasons = []
    if stats.total.num_requests == 0:
        reasons.append("no request completed")
    if stats.total.num_failures:
        reasons.append(f"{stats.total.num_failures} of {stats.total.num_requests} "
                       "requests failed")
    bound = getattr(environment.parsed_options, "p95_ms", 0.0)
    if bound:
        for entry in sorted(stats.entries.values(), key=lambda e: e.name):
            p95 = entry.get_response_time_percentile(0.95)
            if entry.num_requests and p95 > bound:
                reasons.append(f"{entry.name}: p95 {p95:.0f} ms > {bound:g} ms")
    return reasons


@events.quitting.add_listener
def apply_thresholds(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the aggregated statistics and decides
    if getattr(environment.parsed_options, "csv_prefix", None):
        # locust rewrites the --csv stats file once a second and does not rewrite it at
        # exit, so requests that ended in the last second would be missing from it; give
        # its writer one more pass over the final statistics.
        gevent.sleep(locust.stats.CSV_STATS_INTERVAL_SEC + 0.25)
    reasons = threshold_failures(environment)
    for reason in reasons:
        logger.error("threshold failed: %s", reason)
    if reasons:
        environment.process_exit_code = 1
    elif environment.process_exit_code is None:
        logger.info("thresholds passed")
