"""Drawing Kosmos-2's grounded entities (boxes and phrases) onto the image."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .inputs import image_bytes
from .results import Grounding

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
        for x1, y1, x2, y2 in entity.pixel_boxes(width, height):
            x1, x2 = sorted((max(0, min(width - 1, x1)), max(0, min(width - 1, x2))))
            y1, y2 = sorted((max(0, min(height - 1, y1)), max(0, min(height - 1, y2))))
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
            left, top, right, bottom = draw.textbbox((0, 0), entity.phrase, font=font)
            label_w, label_h = right - left + 2 * line, bottom - top + 2 * line
            # Above the box when there is room, else just inside its top edge.
            label_y = y1 - label_h if y1 - label_h >= 0 else y1
            draw.rectangle([x1, label_y, x1 + label_w, label_y + label_h], fill=colour)
            draw.text((x1 + line - left, label_y + line - top), entity.phrase, fill="white",
                      font=font)
    return image


def save_grounding(source: Any, grounding: Grounding, path) -> None:
    draw_grounding(source, grounding).save(path, format="PNG")
