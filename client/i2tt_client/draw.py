"""Drawing results onto their image: Kosmos-2's grounded entities (boxes and phrases) and
the text lines of a page (numbered boxes)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .inputs import image_bytes
from .results import Grounding, PageText

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"]


def open_image(source: Any) -> Image.Image:
    """The image as the server saw it: EXIF orientation applied, RGB."""
    if isinstance(source, Image.Image):
        image = source
    else:
        image = Image.open(io.BytesIO(image_bytes(source)))
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _outline(draw: ImageDraw.ImageDraw, box, label: str, colour: str, size: tuple[int, int],
             line: int, font) -> None:
    """A box outlined in ``colour`` with ``label`` on a filled tab above it (or just inside
    its top edge where there is no room above)."""
    width, height = size
    x1, y1, x2, y2 = box
    x1, x2 = sorted((max(0, min(width - 1, x1)), max(0, min(width - 1, x2))))
    y1, y2 = sorted((max(0, min(height - 1, y1)), max(0, min(height - 1, y2))))
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
    if not label:
        return
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    label_w, label_h = right - left + 2 * line, bottom - top + 2 * line
    label_y = y1 - label_h if y1 - label_h >= 0 else y1
    draw.rectangle([x1, label_y, x1 + label_w, label_y + label_h], fill=colour)
    draw.text((x1 + line - left, label_y + line - top), label, fill="white", font=font)


def draw_grounding(source: Any, grounding: Grounding) -> Image.Image:
    """A copy of the image, at its own size, with each entity's boxes outlined and labelled
    with its phrase; boxes of one entity share a colour."""
    image = open_image(source).copy()
    width, height = image.size
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(width, height) / 150))
    font = _font(max(10, round(min(width, height) / 30)))
    for number, entity in enumerate(grounding.entities):
        colour = PALETTE[number % len(PALETTE)]
        for box in entity.pixel_boxes(width, height):
            _outline(draw, box, entity.phrase, colour, (width, height), line, font)
    return image


def draw_page(source: Any, page: PageText) -> Image.Image:
    """A copy of the image with each text line outlined and numbered in reading order
    (the numbers, not the texts: the texts would hide the lines they were read from)."""
    image = open_image(source).copy()
    width, height = image.size
    draw = ImageDraw.Draw(image)
    line = max(1, round(min(width, height) / 400))
    heights = [y2 - y1 for _, y1, _, y2 in (t.pixel_box(width, height) for t in page.lines)]
    font = _font(max(8, round(min(heights) * 0.6)) if heights else 10)
    for number, text_line in enumerate(page.lines):
        colour = PALETTE[number % len(PALETTE)]
        _outline(draw, text_line.pixel_box(width, height), str(number + 1), colour,
                 (width, height), line, font)
    return image


def draw_result(source: Any, result: Grounding | PageText) -> Image.Image:
    if isinstance(result, PageText):
        return draw_page(source, result)
    return draw_grounding(source, result)


def save_drawing(source: Any, result: Grounding | PageText, path) -> None:
    draw_result(source, result).save(path, format="PNG")
