"""Whole pages of text: find the lines (Tesseract's layout analysis), crop each line,
have every line read by a line reader (``trocr_ocr``), assemble the page.

The page logic is plain Python: ``parse`` decodes a page and finds and crops its lines,
``infer`` hands the crops of all pages of a batch to the line reader it was made with
(``read_lines``) in one call and assembles each page's TEXT and LINES. It generates
nothing itself, so it is a peer of the generative runners, not one of them. In Triton,
``read_lines`` sends every crop to ``trocr_ocr`` through business-logic calls
(i2tt_server.pages_adapter), so the lines of all pages share ``trocr_ocr``'s dynamic
batcher with every other caller; outside Triton any callable from PNG crops to (text,
confidence) readings will do (a TrOCRReader, a tritonclient call).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from PIL import Image

from ..errors import InvalidInput
from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from ..lines import Line, PageLineFinder
from .base import Answers, Parameters, Runner


class Reading(NamedTuple):
    """What the line reader made of one crop: its text and the recognition's confidence."""

    text: str
    confidence: float


LineReader = Callable[[list[bytes]], list[Reading]]


@dataclasses.dataclass
class PageSettings(Parameters):
    """ocr_page's config.pbtxt parameters. It has no weights of its own: ``ocr_model``
    reads the lines."""

    ocr_model: str = "trocr_ocr"
    # A page with more lines is refused (INVALID_ARG) rather than queued as hundreds of
    # line reads: 256 is about two dense columns of an A4 page at 300 dpi.
    max_lines: int = 256
    # Margin added around each line's box before cropping, as a share of the line's
    # height: TrOCR reads better with a little room around the ink.
    line_margin: float = 0.15
    # Lines per request to ocr_model (one request at a time per instance): enough to fill
    # its batches, no more than its max_batch_size, and leaving room in its batches for
    # other callers' lines.
    lines_per_request: int = 8
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    tessdata: str = ""  # empty: $TESSDATA_PREFIX, else the distribution's folder
    # Flatten the light and turn the page straight before looking for lines (photographs;
    # docs/ocr_page.md). false: Tesseract reads the greyscale page as it is.
    clean_up: bool = True


@dataclass
class Page:
    """One page, parsed: its size, its lines (pixels, reading order) and their crops."""

    width: int
    height: int
    lines: list[Line]
    crops: list[bytes]


def crop_box(line: Line, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    pad = round(line.height * margin)
    return (max(0, line.x1 - pad), max(0, line.y1 - pad),
            min(width, line.x2 + pad), min(height, line.y2 + pad))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: crops live for one request
    return buffer.getvalue()


def lines_json(page: Page, readings: Sequence[Reading]) -> str:
    """Each line's text, box (normalised to 0..1 of the page's width and height, as
    kosmos2_caption's entities) and confidence: the line reader's, as Tesseract's layout
    analysis says nothing about how well a line was read."""
    return json.dumps([{"text": text,
                        "box": [round(line.x1 / page.width, 6), round(line.y1 / page.height, 6),
                                round(line.x2 / page.width, 6), round(line.y2 / page.height, 6)],
                        "confidence": round(float(confidence), 6)}
                       for line, (text, confidence) in zip(page.lines, readings)],
                      ensure_ascii=False)


class PageReader(Runner):
    name = "ocr_page"
    inputs = ("IMAGE",)
    outputs = ("TEXT", "LINES")
    sample = "page"  # what the benchmark and load test send it
    settings_class = PageSettings
    # no weights of its own (``checkpoints`` stays empty): ``ocr_model`` reads the lines

    @classmethod
    def called_models(cls, params: dict[str, str]) -> list[str]:
        return [cls.settings_class.from_parameters(params).ocr_model]

    def __init__(self, settings: PageSettings, read_lines: LineReader | None = None, **_):
        super().__init__(settings)
        self.device = "cpu"  # line finding runs on the CPU; the reader chooses its own
        self.find_lines = PageLineFinder(settings.tessdata, settings.clean_up)
        self.read_lines = read_lines

    def parse_one(self, values) -> Page:
        image = decode_image(values["IMAGE"], self.settings.max_image_bytes,
                             self.settings.max_image_pixels)
        return self.page(image)

    def page(self, image: Image.Image) -> Page:
        """Find and crop the lines of a decoded page. Crops come from the cleaned-up,
        straightened page (what TrOCR reads best); boxes are on the page as it was sent."""
        layout = self.find_lines(image)
        if len(layout.lines) > self.settings.max_lines:
            raise InvalidInput(f"IMAGE has {len(layout.lines)} text lines, over the limit of "
                               f"{self.settings.max_lines} per page (split the page)")
        cleaned = layout.image
        crops = [png(cleaned.crop(crop_box(line, cleaned.width, cleaned.height,
                                           self.settings.line_margin)).convert("RGB"))
                 for line in layout.lines]
        return Page(image.width, image.height, layout.boxes, crops)

    def infer(self, items: Sequence[Page], confidence: bool = False) -> Answers:
        """All lines of all pages read in one call; TEXT and LINES for each page (LINES
        always carry each line's confidence: ``confidence`` asks for no more)."""
        crops = [crop for page in items for crop in page.crops]
        if self.read_lines is None:
            raise RuntimeError("ocr_page has no line reader")
        readings = self.read_lines(crops) if crops else []
        if len(readings) != len(crops):
            raise RuntimeError(f"the line reader gave {len(readings)} texts for {len(crops)} lines")
        results, start = Answers(), 0
        for page in items:
            mine = readings[start:start + len(page.lines)]
            start += len(page.lines)
            results.append({"TEXT": "\n".join(text for text, _ in mine),
                            "LINES": lines_json(page, mine)})
        return results
