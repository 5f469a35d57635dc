"""Open-loop load: requests arrive as a Poisson process at a set rate, whether or not the
earlier ones were answered (as independent callers do), unlike the closed loops of
``served.drive`` where each caller waits for its answer before sending again.

Each arrival is sent with tritonclient's ``async_infer`` at its scheduled time; latency is
measured from that time (so a late send counts against the server, never hides).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Callable

from .served import make_request, outputs_of
from .stats import percentile

GOOD_S = 10.0  # goodput: answered within this many seconds


@dataclasses.dataclass
class OpenLoopRow:
    model: str
    path: str  # static | inflight
    load: float  # fraction of the static path's measured capacity
    rate: float  # arrivals per second
    sent: int
    wall_s: float  # first arrival to last answer
    latencies_s: list[float] = dataclasses.field(repr=False)
    errors: list[str] = dataclasses.field(default_factory=list, repr=False)

    @property
    def answered(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.answered / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def goodput(self) -> float:
        return sum(1 for v in self.latencies_s if v <= GOOD_S) / self.wall_s \
            if self.wall_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def as_dict(self) -> dict:
        return {"model": self.model, "path": self.path, "load": self.load,
                "rate": round(self.rate, 4), "sent": self.sent, "answered": self.answered,
                "errors": len(self.errors), "first_error": self.errors[0] if self.errors else "",
                "wall_s": round(self.wall_s, 3), "throughput": round(self.throughput, 4),
                "goodput": round(self.goodput, 4), "p50_s": round(self.p(50), 3),
                "p95_s": round(self.p(95), 3), "p99_s": round(self.p(99), 3)}


def arrivals(rate: float, count: int, seed: int) -> list[float]:
    """``count`` Poisson arrival times (seconds from the start) at ``rate`` per second."""
    rng, now, times = random.Random(seed), 0.0, []
    for _ in range(count):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def run_open_loop(url: str, model: str, input_name: str, payload: Callable[[int], object],
                  rate: float, count: int, offset: int, seed: int = 0,
                  timeout_s: float = 600.0) -> tuple[float, list[float], list[str]]:
    """(wall seconds, latencies of the answered, errors) of ``count`` arrivals at ``rate``."""
    import tritonclient.grpc as grpcclient

    outputs = [grpcclient.InferRequestedOutput(name) for name in outputs_of(url, model)]
    requests = [make_request(input_name, payload(offset + i)) for i in range(count)]
    lock, done = threading.Lock(), threading.Semaphore(0)
    latencies: list[float] = []
    errors: list[str] = []
    finished: list[float] = []
    client = grpcclient.InferenceServerClient(url)
    start = time.perf_counter()
    for when, inputs in zip(arrivals(rate, count, seed), requests):
        delay = start + when - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        scheduled = start + when

        def callback(result, error, scheduled=scheduled):
            now = time.perf_counter()
            with lock:
                finished.append(now)
                if error is not None:
                    errors.append(str(error)[:200])
                else:
                    latencies.append(now - scheduled)
            done.release()

        client.async_infer(model, inputs, callback, outputs=outputs, client_timeout=timeout_s)
    for _ in requests:
        done.acquire()
    client.close()
    return max(finished) - start, latencies, errors


def call_with_deadline(url: str, model: str, input_name: str, value, after_s: float) -> str:
    """Send one request and give up after ``after_s``: "answered", or the error's type."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        try:
            client.infer(model, make_request(input_name, value), client_timeout=after_s)
            return "answered"
        except Exception as exc:  # the deadline, as expected
            return type(exc).__name__
