"""Test pages rendered from known lines with a real TrueType font (DejaVu Sans, Debian's
fonts-dejavu-core), so where every line is, and in which order it is read, is known.

Each page is a ``Rendered``: the image, and the truth boxes (pixels, axis-aligned, in
reading order). Used by the ocr_page tests and by scripts/compare_line_finders.py.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
              "/usr/share/fonts/dejavu/DejaVuSans.ttf")
WORDS = ("invoice total amount paid receipt number date customer order delivery address "
         "street city account balance payment due reference service monthly annual report "
         "summary quarter revenue growth market share product price unit quantity tax net "
         "gross shipping handling discount credit debit transfer bank branch office hours "
         "phone email contact support question answer meeting agenda minutes").split()


def font_path() -> str | None:
    return next((p for p in FONT_PATHS if Path(p).is_file()), None)


def font(size: int) -> ImageFont.FreeTypeFont:
    path = font_path()
    if path is None:
        raise FileNotFoundError("DejaVu Sans not found (Debian/Ubuntu: apt-get install "
                                "fonts-dejavu-core)")
    return ImageFont.truetype(path, size)


def page_tools_missing() -> str | None:
    """Why ocr_page cannot run here (no Tesseract English data, no DejaVu font), or None."""
    from i2tt_server.lines import find_tessdata

    try:
        find_tessdata()
    except FileNotFoundError as exc:
        return str(exc)
    if font_path() is None:
        return "no DejaVu Sans to render test pages (apt-get install fonts-dejavu-core)"
    return None


Box = tuple[float, float, float, float]


@dataclass
class Rendered:
    name: str
    image: Image.Image
    boxes: list[Box] = field(default_factory=list)  # truth, pixels, reading order
    texts: list[str] = field(default_factory=list)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()

    def normalised(self) -> list[Box]:
        w, h = self.image.size
        return [(x1 / w, y1 / h, x2 / w, y2 / h) for x1, y1, x2, y2 in self.boxes]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def width_covered(found: Box, truth: Box) -> float:
    """The share of the true line's width that the found box spans: below 1 where a found
    line lost an end (a shaded end of a photographed line)."""
    return max(0.0, min(found[2], truth[2]) - max(found[0], truth[0])) / (truth[2] - truth[0])


def line_problems(found: list[Box], truth: list[Box]) -> list[str]:
    """What is wrong with lines found on a page whose lines are ``truth`` (same units,
    reading order): not one line each, or line i not truth line i (IoU under 0.5, which
    checks the reading order too) or missing more than a tenth of its width. Empty: right."""
    if len(found) != len(truth):
        return [f"{len(found)} lines found for {len(truth)}"]
    problems = []
    for number, (box, want) in enumerate(zip(found, truth)):
        overlap, covered = iou(box, want), width_covered(box, want)
        if overlap < 0.5 or covered < 0.9:
            problems.append(f"line {number}: IoU {overlap:.2f}, {covered:.0%} of its width")
    return problems


def sentence(rng: random.Random, width: float, typeface, words: int | None = None) -> str:
    """Words up to ``width`` pixels (or exactly ``words`` words)."""
    text = rng.choice(WORDS).capitalize()
    while True:
        candidate = f"{text} {rng.choice(WORDS)}"
        if (words is not None and len(candidate.split()) > words) or \
                typeface.getlength(candidate) > width:
            return text
        text = candidate


def render(name: str, size: tuple[int, int], columns: list[tuple[int, int]], lines_per_column: int,
           font_size: int, pitch: float = 1.8, top: int = 60, seed: int = 0,
           ink="black", paper="white", words: int | None = None, fill: float = 0.75) -> Rendered:
    """Columns given as (left x, width) pixels, filled top to bottom with lines of
    ``fill`` to 1.0 of the column's width."""
    rng = random.Random(seed)
    typeface = font(font_size)
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    page = Rendered(name, image)
    for left, width in columns:
        y = top
        for _ in range(lines_per_column):
            text = sentence(rng, rng.uniform(fill, 1.0) * width, typeface, words)
            draw.text((left, y), text, fill=ink, font=typeface)
            page.boxes.append(draw.textbbox((left, y), text, font=typeface))
            page.texts.append(text)
            y += round(font_size * pitch)
    return page


def rotated(page: Rendered, degrees: float, fill="white") -> Rendered:
    """The page turned ``degrees`` counter-clockwise about its centre, the corners it
    uncovers filled with ``fill``; truth boxes are the axis-aligned bounds of the turned
    boxes."""
    image = page.image.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=fill)
    cx, cy = page.image.width / 2, page.image.height / 2
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def turn(x, y):
        return cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c

    boxes = []
    for x1, y1, x2, y2 in page.boxes:
        corners = [turn(x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return Rendered(f"{page.name}, turned {degrees:g} degrees", image, boxes, page.texts)


def one_column(seed: int = 1) -> Rendered:
    return render("one column", (1000, 900), [(70, 860)], 12, 26, seed=seed)


def two_columns(seed: int = 2) -> Rendered:
    return render("two columns", (1240, 1000), [(60, 520), (660, 520)], 14, 24, seed=seed)


def skewed(degrees: float = 3.0, seed: int = 3) -> Rendered:
    """Long lines turned a few degrees: a 900-pixel line turned 3 degrees climbs 47 pixels,
    more than its own height, so its box overlaps its neighbours'."""
    return rotated(render("one column", (1100, 900), [(70, 900)], 10, 26, top=120, seed=seed),
                   degrees)


def small(seed: int = 4) -> Rendered:
    return render("small", (480, 300), [(20, 440)], 5, 18, top=30, seed=seed)


def large(seed: int = 5) -> Rendered:
    return render("large", (2400, 3200), [(200, 2000)], 14, 64, top=200, seed=seed)


def light_on_dark(seed: int = 6) -> Rendered:
    return render("light on dark", (1000, 700), [(70, 860)], 8, 28, seed=seed,
                  ink=(235, 235, 225), paper=(28, 32, 40))


def narrow_gutter(seed: int = 9) -> Rendered:
    """Two columns of justified-looking lines 28 px apart (about two letters' width)."""
    return render("two columns, narrow gutter", (1160, 900), [(40, 526), (594, 526)], 12, 24,
                  seed=seed, fill=0.97)


def heading_and_columns(seed: int = 10) -> Rendered:
    """A large heading across the page, then two columns: read heading, left, right."""
    page = render("heading and two columns", (1240, 1000), [(60, 520), (660, 520)], 12, 24,
                  top=200, seed=seed)
    typeface = font(56)
    draw = ImageDraw.Draw(page.image)
    text = "Quarterly report summary"
    draw.text((60, 60), text, fill="black", font=typeface)
    page.boxes.insert(0, draw.textbbox((60, 60), text, font=typeface))
    page.texts.insert(0, text)
    return page


def noisy_scan(seed: int = 11) -> Rendered:
    """A page as a cheap scanner gives it: grey paper, noise, a little blur, JPEG."""
    from PIL import ImageFilter

    page = render("noisy scan", (1000, 900), [(70, 860)], 12, 26, seed=seed,
                  ink=(40, 40, 40), paper=(225, 222, 215))
    rng = np.random.default_rng(seed)
    pixels = np.asarray(page.image.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    pixels += rng.normal(0, 18, pixels.shape)
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=60)
    page.image = Image.open(buffer).convert("RGB")
    return page


def text_lines(count: int = 24, seed: int = 0) -> list[Image.Image]:
    """Single lines of 1 to 6 words, grey ink on grey paper of varied shades: what a line
    model reads (trocr_ocr's tests)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        paper, ink = rng.randint(150, 255), rng.randint(0, 90)
        image = Image.new("RGB", (20 + 14 * len(text), 40), (paper,) * 3)
        ImageDraw.Draw(image).text((10, 8), text, fill=(ink,) * 3, font=font(22))
        lines.append(image)
    return lines


def blank() -> Rendered:
    return Rendered("blank", Image.new("RGB", (900, 1200), "white"))


def many_short_lines(seed: int = 7) -> Rendered:
    return render("200 short lines", (520, 6200), [(40, 440)], 200, 18, pitch=1.65, top=40,
                  seed=seed, words=3)


def photo(data: bytes) -> Rendered:
    return Rendered("photo without text", Image.open(io.BytesIO(data)).convert("RGB"))


def text_pages() -> list[Rendered]:
    """Every page with text, in the order reports list them."""
    return [one_column(), two_columns(), narrow_gutter(), heading_and_columns(), skewed(3.0),
            skewed(-2.0, seed=8), small(), large(), light_on_dark(), noisy_scan(),
            many_short_lines()]
