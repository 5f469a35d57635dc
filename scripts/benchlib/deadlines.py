"""The deadline check of the benchmark: the shipped queue policy (not the unbounded queues
the capacity rows use) under callers that send no deadline and callers that send the i2tt
CLI's default one. Every admitted request must be answered: none refused for waiting."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from . import served


def callers(count: int, call: Callable[[int], None]) -> tuple[Counter, float]:
    """``count`` concurrent callers of ``call(index)``: outcome counts and wall seconds."""
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            call(index)
            outcome = "answered"
        except Exception as exc:  # noqa: BLE001 - each failure is counted by its kind
            outcome = f"{type(exc).__name__}: {str(exc)[:100]}"
        with lock:
            outcomes[outcome] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - started


def deadline_check(repository: Path, weights: Path, log_file: Path, target: str,
                   image: Callable[[int], bytes], count: int, deadline: float) -> list[str]:
    """Report lines: ``count`` callers without a deadline (plain tritonclient, no timeout),
    then ``count`` through I2TTClient with ``deadline`` seconds, all at once each."""
    import tritonclient.grpc as grpcclient
    from i2tt_client import I2TTClient

    server = served.start_server(repository, weights, log_file)
    lines = []
    try:
        def plain(index: int) -> None:
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                client.infer(target, served.make_request("IMAGE", image(index)))

        def client_call(index: int) -> None:
            with I2TTClient(server.grpc_url, timeout=deadline) as client:
                client.infer(target, {"IMAGE": image(count + index)})

        for what, call in ((f"{count} callers without a deadline", plain),
                           (f"{count} I2TTClient callers with a {deadline:g} s deadline", client_call)):
            outcomes, wall = callers(count, call)
            answered = outcomes.pop("answered", 0)
            verdict = "every request answered" if answered == count else \
                f"NOT every request answered: {dict(outcomes)}"
            lines.append(f"deadline check, {target}, shipped queue policy: {what}: {answered} "
                         f"of {count} answered in {wall:.0f} s ({verdict})")
            print(lines[-1])
    finally:
        server.stop()
    return lines
