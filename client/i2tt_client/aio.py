"""The asyncio client: the same methods as :class:`~i2tt_client.I2TTClient`, awaited.

It runs the same flows as the blocking client (see :mod:`i2tt_client.core`) on
tritonclient's grpc.aio client; a list is worked through by ``max_in_flight`` tasks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .core import Batch, ClientBase, Collector, Flow, call_flow, drive_async, settle


class AsyncI2TTClient(ClientBase):
    """Asyncio client for one I2TT server; every method returns a coroutine.

    >>> async with AsyncI2TTClient("localhost:8001") as client:
    ...     results = await client.caption(["a.jpg", "b.jpg"])
    """

    def __init__(self, server: str = "localhost:8001", **options):
        super().__init__(server, **options)
        self._client = None

    @property
    def _triton(self):
        # Made on first use, inside the running loop that the grpc.aio channel belongs to.
        if self._client is None:
            import tritonclient.grpc.aio as aioclient

            self._client = aioclient.InferenceServerClient(**self._connection)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "AsyncI2TTClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _drive(self, flow: Flow) -> Any:
        return await drive_async(flow, self._triton)

    async def _run(self, batch: Batch, progress: bool, on_result):
        collector = Collector(batch.op.name, batch.total, progress, on_result)
        items = enumerate(batch.items)
        triton = self._triton

        async def worker():
            # Pulling from one shared iterator between awaits is safe in one event loop.
            for index, item in items:
                try:
                    outcome = await drive_async(
                        call_flow(batch.op, item, index, self.settings, batch.timeout), triton)
                except Exception as exc:
                    outcome = settle(batch.op, exc, index)
                collector.add(index, outcome)

        width = 1 if batch.single else self.settings.max_in_flight
        if batch.total is not None:
            width = max(1, min(width, batch.total))
        try:
            await asyncio.gather(*(worker() for _ in range(width)))
        finally:
            collector.close()
        return collector.finish(batch.single, batch.errors)
