"""The Triton glue of a model that calls another model: ``ocr_page`` has its lines read by
``trocr_ocr`` through Triton's business-logic scripting (BLS).

Everything else is ``TritonModel``'s: each page is decoded and its lines found and cropped
in parallel (a bad page gets INVALID_ARG alone), then ``PageReader.infer`` hands every
crop of every page of the batch to ``BlsLineReader`` at once. It sends each crop as its
own request, concurrently (``async_exec``), so ``trocr_ocr``'s dynamic batcher packs
lines of different pages, and of other callers, into shared batches.

At most ``lines_in_flight`` crops are sent at once: ``trocr_ocr`` sheds load past its queue
limit (UNAVAILABLE), and a 200-line page must not look like a burst to it. A line that is
still shed (other callers filled the queue) is sent again after a short pause, within a
bounded time.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .triton_adapter import TritonModel


RETRY_SECONDS = 30.0  # how long a shed line is retried before its page fails


class BlsLineReader:
    """PNG crops -> their texts, read by a served line model over BLS."""

    def __init__(self, pb_utils, model: str, in_flight: int = 8):
        self.pb, self.model, self.in_flight = pb_utils, model, max(1, in_flight)

    def request(self, crop: bytes):
        image = self.pb.Tensor("IMAGE", np.array([[crop]], dtype=np.object_))
        return self.pb.InferenceRequest(model_name=self.model, inputs=[image],
                                        requested_output_names=["TEXT"])

    def text(self, response) -> str:
        if response.has_error():
            raise RuntimeError(f"{self.model}: {response.error().message()}")
        value = self.pb.get_output_tensor_by_name(response, "TEXT").as_numpy().reshape(-1)[0]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def shed(self, response) -> bool:
        """Refused for overload (queue full), not for the crop: worth sending again."""
        if not response.has_error():
            return False
        error = response.error()
        code = getattr(error, "code", None)
        if callable(code) and code() == getattr(self.pb.TritonError, "UNAVAILABLE", object()):
            return True
        return "queue" in error.message().lower()

    async def _read_one(self, crop: bytes, window: asyncio.Semaphore):
        deadline, pause = time.monotonic() + RETRY_SECONDS, 0.05
        async with window:
            while True:
                response = await self.request(crop).async_exec()
                if not self.shed(response) or time.monotonic() + pause > deadline:
                    return response
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)

    async def _read_all(self, crops: list[bytes]):
        window = asyncio.Semaphore(self.in_flight)
        return await asyncio.gather(*(self._read_one(crop, window) for crop in crops))

    def __call__(self, crops: list[bytes]) -> list[str]:
        return [self.text(response) for response in asyncio.run(self._read_all(crops))]


class PageModel(TritonModel):
    """Base of a model.py whose runner has its lines read by another served model."""

    def setup(self, pb_utils, args) -> None:
        super().setup(pb_utils, args)
        settings = self.runner.settings
        self.runner.read_lines = BlsLineReader(pb_utils, settings.ocr_model, settings.lines_in_flight)
