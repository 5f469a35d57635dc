"""Effects: the I/O a flow asks its driver to do, and the two drivers.

A flow (:mod:`i2tt_client.flows`) is a generator that *yields* the I/O it needs
(:class:`Rpc`, :class:`Blocking`, :class:`Sleep`) instead of doing it. The sync client
drives it with plain calls (:func:`drive`), the asyncio client with awaits
(:func:`drive_async`), so the logic of a call is written once for both.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator


@dataclass(frozen=True)
class Rpc:
    """Call a method of the tritonclient client (grpc or grpc.aio: same names)."""

    method: str
    kwargs: dict = field(default_factory=dict)

    def run(self, triton):
        return getattr(triton, self.method)(**self.kwargs)

    async def run_async(self, triton):
        return await getattr(triton, self.method)(**self.kwargs)


@dataclass(frozen=True)
class Blocking:
    """Blocking local work (reading a file, fetching a URL, encoding pixels)."""

    function: Callable
    args: tuple = ()

    def run(self, triton):
        return self.function(*self.args)

    async def run_async(self, triton):
        # Off the event loop: a slow URL must not stall every other request in flight.
        return await asyncio.to_thread(self.function, *self.args)


@dataclass(frozen=True)
class Sleep:
    seconds: float

    def run(self, triton):
        time.sleep(self.seconds)

    async def run_async(self, triton):
        await asyncio.sleep(self.seconds)


Flow = Generator[Any, Any, Any]


def drive(flow: Flow, triton) -> Any:
    """Run a flow with blocking calls; exceptions go back into the flow where it yielded."""
    value, error = None, None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = effect.run(triton)
        except Exception as exc:
            error = exc


async def drive_async(flow: Flow, triton) -> Any:
    """The same as :func:`drive`, awaiting each effect."""
    value, error = None, None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await effect.run_async(triton)
        except Exception as exc:
            error = exc
