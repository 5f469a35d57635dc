"""The Triton glue of a model that calls another model: ``ocr_page`` has its lines read by
``trocr_ocr`` through Triton's business-logic scripting (BLS).

Everything else is ``TritonModel``'s: each page is decoded and its lines found and cropped
in parallel (a bad page gets INVALID_ARG alone), then ``PageReader.infer`` hands every
crop of every page of the batch to ``BlsLineReader`` at once. It sends them as batched
requests of ``lines_per_request`` crops each (crops of different pages together), so
``trocr_ocr``'s dynamic batcher packs lines of different pages, and of other callers, into
shared batches.

One request at a time, from the model's own thread (``exec``): the Python backend's
concurrent BLS calls (``async_exec``, which runs each call on a thread of its own) are
where Triton's Python backend has known intermittent crashes under load, and one request
of several lines keeps ``trocr_ocr`` as busy as several requests of one line. A request
that ``trocr_ocr`` sheds (UNAVAILABLE: its queue is full of other callers' work) is sent
again after a short pause, within a bounded time.
"""

from __future__ import annotations

import time

import numpy as np

from .runners.base import CONFIDENCE
from .runners.ocr_page import Reading
from .triton_adapter import TritonModel


RETRY_SECONDS = 30.0  # how long a shed request is retried before its pages fail


class BlsLineReader:
    """PNG crops -> their readings (text and confidence), by a served line model over BLS."""

    def __init__(self, pb_utils, model: str, per_request: int = 8):
        self.pb, self.model, self.per_request = pb_utils, model, max(1, per_request)

    def request(self, crops: list[bytes]):
        image = self.pb.Tensor("IMAGE", np.array([[crop] for crop in crops], dtype=np.object_))
        return self.pb.InferenceRequest(model_name=self.model, inputs=[image],
                                        requested_output_names=["TEXT", CONFIDENCE])

    def readings(self, response, count: int) -> list[Reading]:
        if response.has_error():
            raise RuntimeError(f"{self.model}: {response.error().message()}")
        output = self.pb.get_output_tensor_by_name
        texts = output(response, "TEXT").as_numpy().reshape(-1)
        confidences = output(response, CONFIDENCE).as_numpy().reshape(-1)
        if not len(texts) == len(confidences) == count:
            raise RuntimeError(f"{self.model} answered {len(texts)} texts and "
                               f"{len(confidences)} confidences for {count} lines")
        return [Reading(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v),
                        float(c))
                for v, c in zip(texts, confidences)]

    def shed(self, response) -> bool:
        """Refused for overload (queue full), not for the crops: worth sending again."""
        if not response.has_error():
            return False
        error = response.error()
        code = getattr(error, "code", None)
        if callable(code) and code() == getattr(self.pb.TritonError, "UNAVAILABLE", object()):
            return True
        return "queue" in error.message().lower()

    def read(self, crops: list[bytes]) -> list[Reading]:
        deadline, pause = time.monotonic() + RETRY_SECONDS, 0.05
        while True:
            response = self.request(crops).exec()
            if not self.shed(response) or time.monotonic() + pause > deadline:
                return self.readings(response, len(crops))
            time.sleep(pause)
            pause = min(1.0, pause * 2)

    def __call__(self, crops: list[bytes]) -> list[Reading]:
        readings: list[Reading] = []
        for start in range(0, len(crops), self.per_request):
            readings += self.read(crops[start:start + self.per_request])
        return readings


class PageModel(TritonModel):
    """Base of a model.py whose runner has its lines read by another served model."""

    def make_runner(self, settings, **placement):
        lines = BlsLineReader(self.pb, settings.ocr_model, settings.lines_per_request)
        return self.runner_class(settings, read_lines=lines, **placement)
