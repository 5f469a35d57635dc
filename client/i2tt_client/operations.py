"""What each I2TT method sends to which Triton model, and how its answer is read.

This is the wire contract on the client side, written once and used by both the sync and
the asyncio client: every input is TYPE_STRING ("BYTES") of shape [1, 1] per request (one
item per request, so the server's dynamic batcher, not the client, forms the batches).

The typed operations (caption, ground, ...) know their model's outputs; :func:`generic`
calls any served model and reads its outputs' shapes from the model's config.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

from .errors import InvalidInputError, ServerError
from .inputs import FetchLimits, image_bytes, text_bytes
from .results import (Caption, Description, Entity, Grounding, OCRText, PageText, Result,
                      Tags, TextLine)



def encode_value(name: str, value: Any, index: int, limits: FetchLimits) -> bytes:
    """The wire bytes of one input value. IMAGE inputs take every image form (path, URL,
    bytes, PIL image, array; may read a file or fetch a URL); the rest take text."""
    if name == "IMAGE":
        return image_bytes(value, index, limits)
    return text_bytes(value, index)


@dataclass(frozen=True)
class Operation:
    """One client method: the model it calls, its main input, extra constant inputs, the
    outputs it asks for, and how to turn them into a result.

    ``input_name`` None means each item is itself a dict of input name -> value (the
    generic call); ``outputs`` empty means every output the model has, read with the shapes
    of the model's config (``needs_config``)."""

    name: str
    model: str
    input_name: str | None  # IMAGE or TEXT; None: items are dicts of inputs
    outputs: tuple[str, ...]
    parse: Callable[[dict[str, np.ndarray]], Any]
    extra: tuple[tuple[str, bytes], ...] = ()
    # Outputs a server may lack (one older than the output): the call is sent again without
    # them, and the result holds None for what they would have given.
    optional: frozenset[str] = frozenset()

    @property
    def needs_config(self) -> bool:
        return not self.outputs

    def encode(self, item: Any, index: int, limits: FetchLimits) -> dict[str, bytes]:
        """The wire bytes of one item's inputs, by input name (blocking: files, URLs)."""
        if self.input_name is None:
            if not isinstance(item, dict) or not item:
                raise InvalidInputError(index, "give the inputs as a dict of input name -> "
                                               f"value, not {type(item).__name__}")
            return {name: encode_value(name, value, index, limits) for name, value in item.items()
                    if value is not None}
        return {self.input_name: encode_value(self.input_name, item, index, limits),
                **dict(self.extra)}

    def asked(self, absent: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """The outputs to ask for, less the optional ones the server is known to lack."""
        return tuple(name for name in self.outputs if name not in absent & self.optional)

    def infer_arguments(self, data: dict[str, bytes], absent: frozenset[str] = frozenset()) -> dict:
        """Keyword arguments of tritonclient's ``infer`` (same for grpc and grpc.aio)."""
        arguments = {"model_name": self.model,
                     "inputs": [_string_input(name, value) for name, value in data.items()]}
        if self.outputs:
            arguments["outputs"] = [InferRequestedOutput(name) for name in self.asked(absent)]
        return arguments

    def lacked_output(self, message: str) -> str | None:
        """The optional output a refusal says the server does not have, if that is why."""
        found = re.search(r"unexpected inference output '([^']+)'", message)
        return found.group(1) if found and found.group(1) in self.optional else None

    def read(self, response: Any, config: dict | None = None,
             absent: frozenset[str] = frozenset()) -> Any:
        if self.needs_config:
            return self.parse(read_all(response, config or {}))
        outputs = {name: response.as_numpy(name) for name in self.asked(absent)}
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


def _confidence(outputs: dict[str, np.ndarray]) -> float | None:
    if "CONFIDENCE" not in outputs:  # a server without the output
        return None
    return float(outputs["CONFIDENCE"].reshape(-1)[0])


def _tag_list(outputs: dict[str, np.ndarray]) -> list[str]:
    # Rows are padded to the batch's longest with b"", which is padding, not a tag.
    return [t for t in (_text(v) for v in outputs["TAGS"].reshape(-1).tolist()) if t]


def variable_outputs(config: dict) -> set[str]:
    """Outputs whose per-item shape is variable (dims [-1], like TAGS): read as lists."""
    return {o["name"] for o in config.get("output", [])
            if [int(d) for d in o.get("dims", [])] == [-1]}


def read_all(response: Any, config: dict) -> dict[str, Any]:
    """Every output of a one-item response: a string, a list of strings (padding dropped)
    for outputs of variable shape, or a number for a numeric output (CONFIDENCE)."""
    lists = variable_outputs(config)
    values: dict[str, Any] = {}
    for output in response.get_response().outputs:
        array = response.as_numpy(output.name).reshape(-1)
        if output.datatype != "BYTES":
            values[output.name] = array[0].item() if len(array) == 1 else array.tolist()
            continue
        row = [_text(v) for v in array.tolist()]
        if output.name in lists:
            values[output.name] = [v for v in row if v]
        else:
            values[output.name] = row[0] if len(row) == 1 else row
    return values


def parse_entities(raw: str) -> list[Entity]:
    entities = []
    for item in json.loads(raw or "[]"):
        span = item.get("span") or (0, 0)
        boxes = [tuple(float(c) for c in box) for box in item.get("boxes", [])]
        entities.append(Entity(phrase=str(item.get("phrase", "")),
                               span=(int(span[0]), int(span[1])), boxes=boxes))
    return entities


def parse_lines(raw: str) -> list[TextLine]:
    lines = []
    for item in json.loads(raw or "[]"):
        confidence = item.get("confidence")
        lines.append(TextLine(text=str(item.get("text", "")),
                              box=tuple(float(c) for c in item["box"]),
                              confidence=None if confidence is None else float(confidence)))
    return lines


# CONFIDENCE came after the models: a newer client still works with an older server.
SCORED = frozenset({"CONFIDENCE"})


def _prompt(prompt: str | None) -> tuple[tuple[str, bytes], ...]:
    return () if prompt is None else (("PROMPT", prompt.encode("utf-8")),)


def caption(prompt: str | None = None) -> Operation:
    return Operation("caption", "blip_caption", "IMAGE", ("CAPTION", "CONFIDENCE"),
                     lambda o: Caption(_first(o, "CAPTION"), _confidence(o)), _prompt(prompt),
                     SCORED)


def ground(prompt: str | None = None) -> Operation:
    def parse(o):
        return Grounding(_first(o, "CAPTION"), parse_entities(_first(o, "ENTITIES")),
                         _confidence(o))

    return Operation("ground", "kosmos2_caption", "IMAGE", ("CAPTION", "ENTITIES", "CONFIDENCE"),
                     parse, _prompt(prompt), SCORED)


def ocr() -> Operation:
    return Operation("ocr", "trocr_ocr", "IMAGE", ("TEXT", "CONFIDENCE"),
                     lambda o: OCRText(_first(o, "TEXT"), _confidence(o)), optional=SCORED)


def ocr_page() -> Operation:
    return Operation("ocr_page", "ocr_page", "IMAGE", ("TEXT", "LINES"),
                     lambda o: PageText(_first(o, "TEXT"), parse_lines(_first(o, "LINES"))))


def tags() -> Operation:
    return Operation("tags", "t5_tags", "TEXT", ("TAGS",), lambda o: Tags(_tag_list(o)))


def describe() -> Operation:
    return Operation("describe", "caption_tags", "IMAGE", ("CAPTION", "TAGS"),
                     lambda o: Description(_first(o, "CAPTION"), _tag_list(o)))


def generic(model: str) -> Operation:
    """Any served model: each item is a dict of its inputs; the result a dict of its outputs."""
    return Operation("infer", model, None, (), lambda outputs: outputs)
