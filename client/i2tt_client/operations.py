"""What each I2TT method sends to which Triton model, and how its answer is read.

This is the wire contract on the client side, written once and used by both the sync and
the asyncio client: every input is TYPE_STRING ("BYTES") of shape [1, 1] per request (one
item per request, so the server's dynamic batcher, not the client, forms the batches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

from .errors import ServerError
from .inputs import FetchLimits, image_bytes, text_bytes
from .results import Caption, Description, Entity, Grounding, OCRText, Result, Tags

MODELS = ("blip_caption", "kosmos2_caption", "trocr_ocr", "t5_tags", "caption_tags")
DEFAULT_GROUNDING_PROMPT = "<grounding>An image of"


@dataclass(frozen=True)
class Operation:
    """One client method: the model it calls, its main input, extra constant inputs, the
    outputs it asks for, and how to turn them into a result."""

    name: str
    model: str
    input_name: str  # IMAGE or TEXT
    outputs: tuple[str, ...]
    parse: Callable[[dict[str, np.ndarray]], Result]
    extra: tuple[tuple[str, bytes], ...] = ()

    @property
    def takes_images(self) -> bool:
        return self.input_name == "IMAGE"

    def encode(self, item: Any, index: int, limits: FetchLimits) -> bytes:
        """The wire bytes of one input. May read a file or fetch a URL (blocking)."""
        if self.takes_images:
            return image_bytes(item, index, limits)
        return text_bytes(item, index)

    def infer_arguments(self, data: bytes) -> dict:
        """Keyword arguments of tritonclient's ``infer`` (same for grpc and grpc.aio)."""
        inputs = [_string_input(self.input_name, data)]
        inputs += [_string_input(name, value) for name, value in self.extra]
        return {"model_name": self.model, "inputs": inputs,
                "outputs": [InferRequestedOutput(name) for name in self.outputs]}

    def read(self, response: Any) -> Result:
        outputs = {name: response.as_numpy(name) for name in self.outputs}
        missing = [name for name, value in outputs.items() if value is None]
        if missing:
            raise ServerError(f"{self.model}: response has no {', '.join(missing)} output",
                              model=self.model)
        try:
            return self.parse(outputs)
        except Exception as exc:  # a contract mismatch is the server's fault, not the input's
            raise ServerError(f"{self.model}: unexpected response ({exc})", model=self.model) from exc


def _string_input(name: str, value: bytes) -> InferInput:
    tensor = InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _first(outputs: dict[str, np.ndarray], name: str) -> str:
    return _text(outputs[name].reshape(-1)[0])


def _tag_list(outputs: dict[str, np.ndarray]) -> list[str]:
    # Rows are padded to the batch's longest with b"", which is padding, not a tag.
    return [t for t in (_text(v) for v in outputs["TAGS"].reshape(-1).tolist()) if t]


def parse_entities(raw: str) -> list[Entity]:
    entities = []
    for item in json.loads(raw or "[]"):
        span = item.get("span") or (0, 0)
        boxes = [tuple(float(c) for c in box) for box in item.get("boxes", [])]
        entities.append(Entity(phrase=str(item.get("phrase", "")),
                               span=(int(span[0]), int(span[1])), boxes=boxes))
    return entities


def _prompt(prompt: str | None) -> tuple[tuple[str, bytes], ...]:
    return () if prompt is None else (("PROMPT", prompt.encode("utf-8")),)


def caption(prompt: str | None = None) -> Operation:
    return Operation("caption", "blip_caption", "IMAGE", ("CAPTION",),
                     lambda o: Caption(_first(o, "CAPTION")), _prompt(prompt))


def ground(prompt: str | None = None) -> Operation:
    return Operation("ground", "kosmos2_caption", "IMAGE", ("CAPTION", "ENTITIES"),
                     lambda o: Grounding(_first(o, "CAPTION"), parse_entities(_first(o, "ENTITIES"))),
                     _prompt(prompt))


def ocr() -> Operation:
    return Operation("ocr", "trocr_ocr", "IMAGE", ("TEXT",), lambda o: OCRText(_first(o, "TEXT")))


def tags() -> Operation:
    return Operation("tags", "t5_tags", "TEXT", ("TAGS",), lambda o: Tags(_tag_list(o)))


def describe() -> Operation:
    return Operation("describe", "caption_tags", "IMAGE", ("CAPTION", "TAGS"),
                     lambda o: Description(_first(o, "CAPTION"), _tag_list(o)))
