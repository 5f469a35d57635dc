"""The Triton glue of a model that calls another model: ``ocr_page`` has its lines read by
``trocr_ocr`` through Triton's business-logic scripting (BLS).

Everything else is ``TritonModel``'s: each page is decoded and its lines found and cropped
in parallel (a bad page gets INVALID_ARG alone), then ``PageReader.infer`` hands every
crop of every page of the batch to ``BlsLineReader`` at once. It sends each crop as its
own request, all of them concurrently (``async_exec``), so ``trocr_ocr``'s dynamic batcher
packs lines of different pages, and of other callers, into shared batches.
"""

from __future__ import annotations

import asyncio

import numpy as np

from .triton_adapter import TritonModel


class BlsLineReader:
    """PNG crops -> their texts, read by a served line model over BLS."""

    def __init__(self, pb_utils, model: str):
        self.pb, self.model = pb_utils, model

    def request(self, crop: bytes):
        image = self.pb.Tensor("IMAGE", np.array([[crop]], dtype=np.object_))
        return self.pb.InferenceRequest(model_name=self.model, inputs=[image],
                                        requested_output_names=["TEXT"])

    def text(self, response) -> str:
        if response.has_error():
            raise RuntimeError(f"{self.model}: {response.error().message()}")
        value = self.pb.get_output_tensor_by_name(response, "TEXT").as_numpy().reshape(-1)[0]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    async def _read_all(self, crops: list[bytes]):
        return await asyncio.gather(*(self.request(crop).async_exec() for crop in crops))

    def __call__(self, crops: list[bytes]) -> list[str]:
        return [self.text(response) for response in asyncio.run(self._read_all(crops))]


class PageModel(TritonModel):
    """Base of a model.py whose runner has its lines read by another served model."""

    def setup(self, pb_utils, args) -> None:
        super().setup(pb_utils, args)
        self.runner.read_lines = BlsLineReader(pb_utils, self.runner.settings.ocr_model)
