"""The asyncio client: the same methods as :class:`~i2tt_client.I2TTClient`, awaited.

It runs the same flows as the blocking client (see :mod:`i2tt_client.flows`) on
tritonclient's grpc.aio client; a list is worked through by ``max_in_flight`` tasks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .base import ClientBase
from .batches import Batch, Collector, as_item_error
from .effects import Flow, drive_async
from .flows import call_flow


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

    async def _run(self, batch: Batch):
        collector = Collector(batch)
        items = enumerate(batch.items)
        triton = self._triton

        async def worker():
            # Pulling from one shared iterator between awaits is safe in one event loop.
            for index, item in items:
                try:
                    outcome = await drive_async(
                        call_flow(batch.op, item, index, self.settings, batch.options), triton)
                except Exception as exc:
                    outcome = as_item_error(batch.op, exc, index)
                collector.add(index, outcome)

        width = batch.width(self.settings.max_in_flight)
        try:
            await asyncio.gather(*(worker() for _ in range(width)))
        finally:
            collector.close()
        return collector.finish()
