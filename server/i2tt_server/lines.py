"""Finding the text lines of a page with Tesseract's layout analysis.

Only the layout analysis runs (``AnalyseLayout``: page segmentation, column finding,
block classification and text line finding); recognition is TrOCR's job. Tesseract orders
blocks the way a page is read (columns left to right, each top to bottom), so lines come
out in reading order. Lines of blocks Tesseract classifies as pictures, rules or noise are
left out, which is what makes a photograph without text give no lines.

Photographed pages are cleaned up first (``page_cleanup``): dark text on a light ground,
the uneven light divided out, the page turned straight; the lines' boxes are then turned
back onto the page as it was sent.

Why Tesseract and not an image heuristic (OpenCV morphology was measured too), and why
this clean-up and not Tesseract's own adaptive thresholds: see docs/ocr_page.md. Tesseract
is called through tesserocr, whose wheels carry libtesseract; the layout analysis reads
its parameters from a language's traineddata file (Debian's ``tesseract-ocr-eng``),
without it columns are not separated.
"""

from __future__ import annotations

import math
import os
import queue
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .page_cleanup import flatten, normalise_polarity, skew_angle


TESSDATA_ENV = "TESSDATA_PREFIX"
# Where Debian and Ubuntu packages put the traineddata files (tesseract 5 and 4).
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
LANGUAGE = "eng"
MIN_LINE_PIXELS = 4  # boxes thinner than this are specks, not lines
# A "line" under this share of the page's median line height is a speck (a page corner, a
# crease, dust), not text: footnotes and subscripts are well above it.
MIN_LINE_SHARE = 0.4
# Pages turned less than this are read as they are: Tesseract copes with small skew, and
# turning resamples the page.
DESKEW_DEGREES = 1.0


@dataclass(frozen=True)
class Line:
    """A text line's box in pixels of the page, (x1, y1) inclusive, (x2, y2) exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def width(self) -> int:
        return self.x2 - self.x1


def find_tessdata(explicit: str = "") -> str:
    """The folder holding ``eng.traineddata``: explicit, else $TESSDATA_PREFIX, else the
    distribution's."""
    candidates = [explicit] if explicit else [os.environ.get(TESSDATA_ENV, ""), *TESSDATA_DIRS]
    for folder in candidates:
        if folder and (Path(folder) / f"{LANGUAGE}.traineddata").is_file():
            return folder
    raise FileNotFoundError(
        f"no {LANGUAGE}.traineddata in {explicit or ', '.join(c for c in candidates if c)}: "
        "install Tesseract's English data (Debian/Ubuntu: apt-get install tesseract-ocr-eng) "
        f"or set ${TESSDATA_ENV}")


class TesseractLineFinder:
    """Text lines of a page, in reading order. Thread-safe: each concurrent caller gets its
    own Tesseract handle from a small pool (a handle is not safe to share)."""

    def __init__(self, tessdata: str = "", thresholding_method: int = 0):
        import tesserocr  # noqa: F401  (fail at start-up, not at the first page)

        self.tessdata = find_tessdata(tessdata)
        # 0: Otsu over the whole page (what a flattened page needs); 1: Leptonica's
        # adaptive Otsu, 2: Sauvola (measured against the clean-up in docs/ocr_page.md)
        self.thresholding_method = thresholding_method
        self._handles: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()

    def _handle(self):
        try:
            return self._handles.get_nowait()
        except queue.Empty:
            from tesserocr import PSM, PyTessBaseAPI

            with self._lock:  # Init reads files and is not reentrant
                api = PyTessBaseAPI(path=self.tessdata, lang=LANGUAGE, psm=PSM.AUTO_ONLY)
            api.SetVariable("thresholding_method", str(self.thresholding_method))
            return api

    def __call__(self, grey: Image.Image) -> list[Line]:
        """Lines of a greyscale page with dark text on a light ground."""
        from tesserocr import PT, RIL

        keep = {PT.FLOWING_TEXT, PT.HEADING_TEXT, PT.PULLOUT_TEXT, PT.CAPTION_TEXT, PT.TABLE,
                PT.EQUATION, PT.INLINE_EQUATION}
        api = self._handle()
        try:
            api.SetImage(grey)
            iterator = api.AnalyseLayout()
            lines: list[Line] = []
            while iterator is not None:
                box = iterator.BoundingBox(RIL.TEXTLINE)
                if box is not None and iterator.BlockType() in keep:
                    line = Line(*box)
                    if line.height >= MIN_LINE_PIXELS and line.width >= MIN_LINE_PIXELS:
                        lines.append(line)
                if not iterator.Next(RIL.TEXTLINE):
                    break
            return without_specks(lines)
        finally:
            api.Clear()
            self._handles.put(api)


def without_specks(lines: list[Line]) -> list[Line]:
    """Lines that are not far shorter than the page's typical line."""
    if not lines:
        return lines
    typical = statistics.median(line.height for line in lines)
    return [line for line in lines if line.height >= MIN_LINE_SHARE * typical]


@dataclass
class Layout:
    """A page's lines: ``image`` is the page they were found in (cleaned up, turned
    straight), ``lines`` their boxes there (for cropping), ``boxes`` the same lines on the
    page as it was sent (the axis-aligned bounds of the turned box), ``skew`` the degrees
    the page was turned."""

    image: Image.Image
    lines: list[Line]
    boxes: list[Line]
    skew: float = 0.0


def turned_back(line: Line, degrees: float, page: tuple[int, int], turned: tuple[int, int]) -> Line:
    """A box of the page turned ``degrees`` (``Image.rotate`` with ``expand``) as the
    bounds of the same region on the page itself."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    xs, ys = [], []
    for x, y in ((line.x1, line.y1), (line.x2, line.y1), (line.x1, line.y2), (line.x2, line.y2)):
        dx, dy = x - turned[0] / 2, y - turned[1] / 2
        xs.append(page[0] / 2 + dx * cos - dy * sin)
        ys.append(page[1] / 2 + dx * sin + dy * cos)
    return Line(max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
                min(page[0], math.ceil(max(xs))), min(page[1], math.ceil(max(ys))))


class PageLineFinder:
    """The lines of a page as users send it (a scan, a screenshot, a photograph), in reading
    order. With ``clean_up`` (the default) the page is flattened and turned straight first
    (``page_cleanup``); without it Tesseract reads the greyscale page as it is, which is
    how ocr_page worked before photographs were handled."""

    def __init__(self, tessdata: str = "", clean_up: bool = True, thresholding_method: int = 0):
        self.tesseract = TesseractLineFinder(tessdata, thresholding_method)
        self.clean_up = clean_up

    def __call__(self, image: Image.Image) -> Layout:
        grey = normalise_polarity(image)
        if not self.clean_up:
            lines = self.tesseract(grey)
            return Layout(grey, lines, lines)
        flat = flatten(grey)
        degrees = skew_angle(flat)
        if abs(degrees) < DESKEW_DEGREES:
            lines = self.tesseract(flat)
            return Layout(flat, lines, lines)
        straight = flat.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
        lines = self.tesseract(straight)
        return Layout(straight, lines, [turned_back(line, degrees, flat.size, straight.size)
                                        for line in lines], degrees)
