"""The blocking client: worker threads over one gRPC channel (tritonclient's grpc
client is thread-safe for ``infer``)."""

from __future__ import annotations

import threading
from typing import Any

import tritonclient.grpc as grpcclient

from .base import ClientBase
from .batches import Batch, Collector, as_item_error
from .effects import Flow, drive
from .flows import call_flow


class I2TTClient(ClientBase):
    """Blocking client for one I2TT server.

    >>> with I2TTClient("localhost:8001") as client:
    ...     client.caption("photo.jpg").caption
    ...     [d.tags for d in client.describe(["a.jpg", "https://example.com/b.png"])]
    """

    def __init__(self, server: str = "localhost:8001", **options):
        super().__init__(server, **options)
        self._triton = grpcclient.InferenceServerClient(**self._connection)

    def close(self) -> None:
        self._triton.close()

    def __enter__(self) -> "I2TTClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _drive(self, flow: Flow) -> Any:
        return drive(flow, self._triton)

    def _run(self, batch: Batch):
        collector = Collector(batch)
        items = enumerate(batch.items)
        pull, report, stop = threading.Lock(), threading.Lock(), threading.Event()
        failures: list[BaseException] = []

        def worker():
            # Each worker pulls the next input when its previous request is answered, so
            # at most max_in_flight requests are in flight and a long (lazy) iterable is
            # never read far ahead.
            while not stop.is_set():
                with pull:
                    try:
                        index, item = next(items)
                    except StopIteration:
                        return
                    except BaseException as exc:  # the caller's iterable failed
                        failures.append(exc)
                        stop.set()
                        return
                try:
                    outcome = drive(call_flow(batch.op, item, index, self.settings, batch.options),
                                    self._triton)
                except Exception as exc:
                    outcome = as_item_error(batch.op, exc, index)
                with report:
                    try:
                        collector.add(index, outcome)
                    except BaseException as exc:  # the caller's on_result failed
                        failures.append(exc)
                        stop.set()
                        return

        width = batch.width(self.settings.max_in_flight)
        threads = [threading.Thread(target=worker, daemon=True, name=f"i2tt-{i}")
                   for i in range(width)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                # join with a timeout keeps the main thread responsive to Ctrl-C
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:
            stop.set()
            raise
        finally:
            collector.close()
        if failures:
            raise failures[0]
        return collector.finish()
