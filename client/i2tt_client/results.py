"""Typed results, one per input; each serialises with ``to_dict()`` / ``to_json()``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


class Result:
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)


@dataclass(frozen=True)
class Caption(Result):
    """A caption from ``blip_caption``; ``confidence`` (0..1) is how sure the model was of
    it: the geometric mean of its words' (tokens') probabilities."""

    caption: str
    confidence: float | None = None


@dataclass(frozen=True)
class Entity(Result):
    """A phrase of a grounded caption and where it is in the image.

    ``span`` is the phrase's [start, end) character range in the caption; each box is
    ``(x1, y1, x2, y2)`` normalised to 0..1 of the image's width and height.
    """

    phrase: str
    span: tuple[int, int]
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def pixel_boxes(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        return [(round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
                for x1, y1, x2, y2 in self.boxes]


@dataclass(frozen=True)
class Grounding(Result):
    """A grounded caption from ``kosmos2_caption``: the caption, its entities, and the
    caption's ``confidence`` (0..1, as :class:`Caption`'s)."""

    caption: str
    entities: list[Entity] = field(default_factory=list)
    confidence: float | None = None


@dataclass(frozen=True)
class OCRText(Result):
    """The text that ``trocr_ocr`` read from one line of text in an image, and how sure it
    was of it (``confidence``, 0..1: the geometric mean of its tokens' probabilities)."""

    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class TextLine(Result):
    """One line of a page: its text, its box ``(x1, y1, x2, y2)`` normalised to 0..1 of
    the image's width and height, and ``confidence`` (0..1), how sure the line reader
    (``trocr_ocr``) was of the text."""

    text: str
    box: tuple[float, float, float, float]
    confidence: float | None = None

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = self.box
        return round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height)


@dataclass(frozen=True)
class PageText(Result):
    """The text of a whole page from ``ocr_page``: its lines in reading order, and
    ``text``, the lines' texts joined by newlines (empty for a page without text)."""

    text: str
    lines: list[TextLine] = field(default_factory=list)


@dataclass(frozen=True)
class Tags(Result):
    """Tags for a text from ``t5_tags`` (padding removed)."""

    tags: list[str]


@dataclass(frozen=True)
class Description(Result):
    """A caption and the tags of that caption, from the ``caption_tags`` ensemble."""

    caption: str
    tags: list[str]


@dataclass(frozen=True)
class ModelHealth(Result):
    name: str
    ready: bool


@dataclass(frozen=True)
class Health(Result):
    """Server liveness/readiness, its version, and readiness of each I2TT model.

    A server can report ready while one model's backend has died, so ``ok`` needs every
    model ready too.
    """

    server: str
    live: bool
    ready: bool
    version: str | None
    models: list[ModelHealth]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.live and self.ready and all(m.ready for m in self.models)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}
