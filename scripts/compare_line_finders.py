#!/usr/bin/env python3
"""Compare line finders for ocr_page on pages rendered from known lines (tests/pages.py).

The finders, in one run on the same pages:
  tesseract  Tesseract's layout analysis through tesserocr (what ocr_page uses)
  opencv     OpenCV morphology: Otsu binarisation, a horizontal dilation sized from the
             median character height, external contours, columns by x-overlap

Per page type it prints the truth and found line counts, recall (truth lines matched by a
found line at IoU >= 0.5), the mean IoU of those matches, whether the reading order is
right, and the median time per page, then the time ratio. Both finders get the same
greyscale page with dark text (ocr_page's polarity step), so only line finding differs.

With --photographed it compares, on the degraded pages of tests/photographed.py (and the
clean pages and photographs, which must not get worse), how the light of a photograph is
handled before Tesseract's layout analysis:
  as-is            the greyscale page as it is, Tesseract's default global Otsu threshold
                   (ocr_page before photographs were handled)
  tess-adaptive    Tesseract 5's Leptonica adaptive Otsu (thresholding_method=1)
  tess-sauvola     Tesseract 5's Sauvola thresholding (thresholding_method=2)
  cv-adaptive      OpenCV's Gaussian adaptive threshold, the binary page given to Tesseract
  cleaned          page_cleanup: background divided out, page turned straight, then
                   Tesseract's Otsu (what ocr_page does)
  cleaned-sauvola  the same clean-up, then Sauvola
A page passes when every line is found once, in reading order, at IoU >= 0.5 with its
true box and covering at least 90 % of its width (tests/pages.py line_problems).

    .venv/bin/python scripts/compare_line_finders.py [--repeat 3]
    .venv/bin/python scripts/compare_line_finders.py --photographed [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import pages  # noqa: E402
import photographed  # noqa: E402
from i2tt_server.lines import Line, PageLineFinder, TesseractLineFinder  # noqa: E402
from i2tt_server.page_cleanup import normalise_polarity  # noqa: E402


class OpenCVLineFinder:
    """Lines as connected blobs of ink after joining letters and words horizontally."""

    def __call__(self, grey) -> list[Line]:
        import cv2

        ink = np.asarray(grey)
        _, binary = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
        count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        heights = stats[1:, cv2.CC_STAT_HEIGHT]
        heights = heights[heights >= 3]
        if len(heights) == 0:
            return []
        char = float(np.median(heights))
        # wider than a word gap, narrower than a column gutter
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, round(char * 1.5)), 1))
        joined = cv2.dilate(binary, kernel)
        contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        lines = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if h >= 0.5 * char and w >= 2 * char:
                lines.append(Line(x, y, x + w, y + h))
        return reading_order(lines)


def reading_order(lines: list[Line]) -> list[Line]:
    """Columns (runs of lines whose x-ranges overlap) left to right, each top to bottom."""
    columns: list[list[Line]] = []
    for line in sorted(lines, key=lambda l: l.x1):
        for column in columns:
            if line.x1 < max(l.x2 for l in column) and line.x2 > min(l.x1 for l in column):
                column.append(line)
                break
        else:
            columns.append([line])
    columns.sort(key=lambda c: min(l.x1 for l in c))
    return [line for column in columns for line in sorted(column, key=lambda l: l.y1)]


def score(found: list[Line], truth: list[tuple]) -> dict:
    """Greedy one-to-one matching by IoU; order is right when the matches of the truth
    lines, taken in truth order, come in increasing found order."""
    boxes = [(l.x1, l.y1, l.x2, l.y2) for l in found]
    pairs = sorted(((pages.iou(b, t), i, j) for i, b in enumerate(boxes)
                    for j, t in enumerate(truth)), reverse=True)
    used_found, match = set(), {}
    for overlap, i, j in pairs:
        if overlap < 0.5:
            break
        if i not in used_found and j not in match:
            used_found.add(i)
            match[j] = (i, overlap)
    order = [match[j][0] for j in sorted(match)]
    return {"found": len(found), "truth": len(truth),
            "recall": len(match) / len(truth) if truth else None,
            "false": len(found) - len(match),
            "iou": statistics.mean(m[1] for m in match.values()) if match else None,
            "order": order == sorted(order) and len(match) == len(truth)}


def test_pages() -> list[pages.Rendered]:
    photos = [pages.photo((ROOT / "tests" / "data" / n).read_bytes())
              for n in ("example1.jpg", "example2.png", "human1.png")]
    for number, photo in enumerate(photos):
        photo.name = f"photo without text {number + 1}"
    # beyond "a few degrees": where whole lines stop (not part of the tests)
    return [*pages.text_pages(), pages.skewed(5.0), pages.blank(), *photos]


def run(repeat: int) -> list[dict]:
    finders = {"tesseract": TesseractLineFinder(), "opencv": OpenCVLineFinder()}
    rows = []
    for page in test_pages():
        grey = normalise_polarity(page.image)
        for name, finder in finders.items():
            finder(grey)  # warm
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                found = finder(grey)
                times.append(time.perf_counter() - start)
            rows.append({"page": page.name, "finder": name, "ms": 1000 * statistics.median(times),
                         **score(found, page.boxes)})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| page | finder | truth | found | recall @ IoU 0.5 | false lines | mean IoU | reading order | ms / page |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        iou = f"{r['iou']:.3f}" if r["iou"] is not None else "-"
        order = ("yes" if r["order"] else "no") if r["truth"] else "-"
        recall = f"{r['recall']:.2f}" if r["recall"] is not None else "-"
        out.append(f"| {r['page']} | {r['finder']} | {r['truth']} | {r['found']} | {recall} | "
                   f"{r['false']} | {iou} | {order} | {r['ms']:.0f} |")
    total = {f: sum(r["ms"] for r in rows if r["finder"] == f) for f in ("tesseract", "opencv")}
    out.append("")
    out.append(f"All pages: tesseract {total['tesseract']:.0f} ms, opencv {total['opencv']:.0f} ms "
               f"(tesseract / opencv = {total['tesseract'] / total['opencv']:.1f}x)")
    return "\n".join(out)


class OpenCVAdaptiveFinder:
    """Tesseract's layout analysis of a page binarised by OpenCV's Gaussian adaptive
    threshold (a window of about two text lines, as its documentation suggests)."""

    def __init__(self):
        self.tesseract = TesseractLineFinder()

    def __call__(self, image) -> list[Line]:
        import cv2
        from PIL import Image

        grey = np.asarray(normalise_polarity(image))
        window = max(15, (max(grey.shape) // 20) | 1)
        binary = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
                                       cv2.THRESH_BINARY, window, 15)
        return self.tesseract(Image.fromarray(binary))


def photographed_finders() -> dict:
    """Each finder: page image -> its lines' boxes on the page as sent."""
    def layout(finder):
        return lambda image: finder(image).boxes

    return {"as-is": layout(PageLineFinder(clean_up=False)),
            "tess-adaptive": layout(PageLineFinder(clean_up=False, thresholding_method=1)),
            "tess-sauvola": layout(PageLineFinder(clean_up=False, thresholding_method=2)),
            "cv-adaptive": OpenCVAdaptiveFinder(),
            "cleaned": layout(PageLineFinder()),
            "cleaned-sauvola": layout(PageLineFinder(thresholding_method=2))}


def photographed_run(repeat: int) -> str:
    """A matrix: a row per page, a column per finder; a cell is found/true lines and
    whether the page passes (with what went wrong first)."""
    finders = photographed_finders()
    out = ["| page | " + " | ".join(finders) + " |", "|---|" + "---|" * len(finders)]
    passed = {name: 0 for name in finders}
    spent = {name: 0.0 for name in finders}
    sets = [*photographed.degraded_pages(), *test_pages()]
    for page in sets:
        cells = []
        for name, finder in finders.items():
            finder(page.image)  # warm
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                found = finder(page.image)
                times.append(time.perf_counter() - start)
            spent[name] += statistics.median(times)
            problems = pages.line_problems([(l.x1, l.y1, l.x2, l.y2) for l in found], page.boxes)
            passed[name] += not problems
            cell = f"{len(found)}/{len(page.boxes)} " + ("**ok**" if not problems else "no")
            if problems and len(found) == len(page.boxes):
                cell += f" ({problems[0].split(': ', 1)[1]})"
            cells.append(cell)
        out.append(f"| {page.name} | " + " | ".join(cells) + " |")
    out.append(f"| **pages passed (of {len(sets)})** | "
               + " | ".join(str(passed[n]) for n in finders) + " |")
    out.append("| **ms, all pages** | " + " | ".join(f"{1000 * spent[n]:.0f}" for n in finders) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per page and finder")
    parser.add_argument("--photographed", action="store_true",
                        help="compare the handling of photographs' light on degraded pages")
    args = parser.parse_args(argv)
    print(photographed_run(args.repeat) if args.photographed else table(run(args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
