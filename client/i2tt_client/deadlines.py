"""How long one call may take, and how long it waits out a crashed model process."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """When one call must be answered by (``seconds`` from its start; None: never)."""

    seconds: float | None
    at: float | None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        return cls(seconds, None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def allows(self, delay: float) -> bool:
        """Whether a pause of ``delay`` seconds still leaves time for another attempt."""
        return self.at is None or time.monotonic() + delay < self.at


def attempt_arguments(deadline: Deadline) -> dict:
    """The deadline of one attempt, for tritonclient: ``client_timeout`` (seconds) ends the
    call here, and ``timeout`` (microseconds) tells the server, whose queue policy then
    drops the request, rather than run it, when its caller has gone."""
    remaining = deadline.remaining()
    if remaining is None:
        return {}
    return {"client_timeout": remaining, "timeout": max(1, int(remaining * 1_000_000))}


class Healing:
    """How long a call waits out a crashed model process: short pauses (another process of
    the model may serve the next attempt at once; a reload takes seconds), within the
    call's deadline, and at most ``HEAL_WAIT_S`` in all for a call without one."""

    HEAL_WAIT_S = 300.0
    PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(self):
        self.started, self.count = time.monotonic(), 0

    def delay(self) -> float:
        pause = self.PAUSES[min(self.count, len(self.PAUSES) - 1)]
        self.count += 1
        return pause * random.uniform(0.5, 1.0)

    def allows(self, deadline: Deadline) -> bool:
        if time.monotonic() - self.started > self.HEAL_WAIT_S:
            return False
        return deadline.allows(self.PAUSES[min(self.count, len(self.PAUSES) - 1)])
