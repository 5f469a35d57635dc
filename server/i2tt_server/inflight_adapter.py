"""In-flight batching behind Triton: requests join and leave the running decode loop at
every step (``batching: inflight`` in a model's config parameters).

Triton's dynamic batcher still admits the requests, so its queue policy stays in force
(overload refused at once past ``max_queue_size``, callers' timeouts while queued, and
priority levels). ``execute`` reads and parses a batch as the static path does, hands
each request's items to one ``StepScheduler`` and returns None; the scheduler's thread
steps every live sequence together, and each request is answered through its response
sender (one final response: the model is not decoupled, so unary gRPC and HTTP infer,
ensembles and the ensemble's response cache work as before) as soon as its last item
ends. ``execute`` returns only once the scheduler has room for more, so what the model
cannot take yet waits in Triton's queue, under its limits, not in ours.

A request leaves within one step once its caller has gone: cancelled (a gRPC caller that
gave up, which ``is_cancelled`` reports) or past its timeout (which Triton passes on
through ensembles, where cancellation is not). The timeout is counted from when the model
took the request, since the backend cannot see how long it queued before.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import traceback
from typing import Any, Sequence

from .execution import CANCELLED, INTERNAL, UNAVAILABLE, RequestRecord
from .runners.base import CONFIDENCE
from .step_scheduler import CallerGone, SchedulerStopped, StepScheduler

log = logging.getLogger("i2tt_server")

# is_cancelled is a message to the server process (about 40 us, measured on 2.51): asked
# once per request per step, its items share the answer within this window.
CANCEL_CHECK_SECONDS = 0.001


class CallerWatch:
    """Whether a request's caller has gone: cancelled, or past its timeout."""

    def __init__(self, request):
        self.request = request
        start = time.monotonic()
        try:
            timeout_us = int(request.timeout())
        except Exception:  # a backend that cannot tell
            timeout_us = 0
        self.deadline = start + timeout_us / 1e6 if timeout_us > 0 else None
        self._checked, self._gone = 0.0, False

    def __call__(self) -> bool:
        if self._gone:
            return True
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self._gone = True
        elif now - self._checked >= CANCEL_CHECK_SECONDS:
            self._checked = now
            try:
                self._gone = bool(self.request.is_cancelled())
            except Exception:  # older backends cannot tell
                self._gone = False
        return self._gone


@dataclasses.dataclass(eq=False)
class Pending:
    """One request whose items are in the scheduler: answered when the last one is."""

    record: RequestRecord
    sender: Any
    futures: list[concurrent.futures.Future]


class InflightServing:
    """The ``execute`` of a model served in flight, over its ``TritonModel`` (which reads,
    parses and answers requests as on the static path) and its runner's stepped generator."""

    def __init__(self, model, generator, max_running: int, observer=None):
        self.model = model
        self.scheduler = StepScheduler(generator, max_running=max_running, observer=observer,
                                       name=f"{model.name}-steps")

    def execute(self, requests) -> None:
        records = [RequestRecord(request) for request in requests]
        senders = [request.get_response_sender() for request in requests]
        try:
            live = [r for r in records if not self.model.skip_cancelled(r)]
            if live:
                self.model.read_inputs(live)
                self.model.parse_inputs(live)
        except Exception as exc:  # a bug here must still answer every request, once
            log.error("%s: %s", self.model.name, traceback.format_exc())
            for record in records:
                record.fail(INTERNAL, f"internal error: {exc}")
        for record, sender in zip(records, senders):
            if record.failed or not record.items:
                self.send(Pending(record, sender, []))
            else:
                self.submit(record, sender)
        # Take no more work until there is room: the rest waits in Triton's queue.
        self.scheduler.wait_for_room()
        return None

    def submit(self, record: RequestRecord, sender) -> None:
        gone = CallerWatch(record.request)
        confidence = CONFIDENCE in record.outputs
        pending = Pending(record, sender, [self.scheduler.submit(item, confidence, gone)
                                           for item in record.items])
        remaining, lock = [len(pending.futures)], threading.Lock()

        def item_done(_future):
            # The step loop's thread sets the futures, but a future already done when its
            # callback is added runs it here, on execute's thread: count under a lock.
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self.send(pending)

        for future in pending.futures:
            future.add_done_callback(item_done)

    def send(self, pending: Pending) -> None:
        """Answer the request: its error, or every item's outputs."""
        record = pending.record
        if pending.futures and not record.failed:
            settle(record, pending.futures)
            self.model.observer.answered(record)
        try:
            pending.sender.send(self.model.respond(record),
                                flags=self.model.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:  # the caller may be gone; nothing else may fail for it
            log.warning("%s: could not send a response: %s", self.model.name,
                        traceback.format_exc())

    def close(self, timeout: float | None = 5.0) -> None:
        self.scheduler.close(timeout)


def settle(record: RequestRecord, futures: Sequence[concurrent.futures.Future]) -> None:
    """The record's results from its items' futures (all done), or its first error."""
    results = []
    for future in futures:
        error = future.exception() if not future.cancelled() else CallerGone()
        if error is None:
            results.append(future.result())
        elif isinstance(error, CallerGone):
            record.fail(CANCELLED, "cancelled: the caller has gone")
        elif isinstance(error, SchedulerStopped):
            record.fail(UNAVAILABLE, f"unavailable: {error}")
        else:
            record.fail(INTERNAL, f"inference failed: {error}")
        if record.failed:
            return
    record.results = results
