"""Finding the text lines of a page with Tesseract's layout analysis.

Only the layout analysis runs (``AnalyseLayout``: page segmentation, column finding,
block classification and text line finding); recognition is TrOCR's job. Tesseract orders
blocks the way a page is read (columns left to right, each top to bottom), so lines come
out in reading order. Lines of blocks Tesseract classifies as pictures, rules or noise are
left out, which is what makes a photograph without text give no lines.

Why Tesseract and not an image heuristic (OpenCV morphology was measured too): see
docs/ocr_page.md. Tesseract is called through tesserocr, whose wheels carry libtesseract;
the layout analysis reads its parameters from a language's traineddata file (Debian's
``tesseract-ocr-eng``), without it columns are not separated.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps


TESSDATA_ENV = "TESSDATA_PREFIX"
# Where Debian and Ubuntu packages put the traineddata files (tesseract 5 and 4).
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
LANGUAGE = "eng"
MIN_LINE_PIXELS = 4  # boxes thinner than this are specks, not lines


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


def normalise_polarity(image: Image.Image) -> Image.Image:
    """Greyscale with dark text on a light ground. Tesseract's line finder looks for dark
    ink; a page whose median is dark (light text on a dark ground, a dark-mode screenshot)
    is inverted first."""
    grey = image.convert("L")
    histogram = grey.histogram()
    half, seen = grey.width * grey.height / 2, 0
    for value, count in enumerate(histogram):
        seen += count
        if seen >= half:
            return ImageOps.invert(grey) if value < 128 else grey
    return grey


class TesseractLineFinder:
    """Text lines of a page, in reading order. Thread-safe: each concurrent caller gets its
    own Tesseract handle from a small pool (a handle is not safe to share)."""

    def __init__(self, tessdata: str = ""):
        import tesserocr  # noqa: F401  (fail at start-up, not at the first page)

        self.tessdata = find_tessdata(tessdata)
        self._handles: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()

    def _handle(self):
        try:
            return self._handles.get_nowait()
        except queue.Empty:
            from tesserocr import PSM, PyTessBaseAPI

            with self._lock:  # Init reads files and is not reentrant
                return PyTessBaseAPI(path=self.tessdata, lang=LANGUAGE, psm=PSM.AUTO_ONLY)

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
            return lines
        finally:
            api.Clear()
            self._handles.put(api)
