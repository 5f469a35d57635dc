"""Rendered pages degraded the way cameras, scanners and networks degrade them.

Each function takes a ``pages.Rendered`` (lines known) and returns a new one whose truth
boxes follow the image: light and shadow, contrast, JPEG, blur and noise leave the boxes
where they are; rotation, a perspective warp and a border around the page move them.
``degraded_pages()`` is the set the ocr_page tests and scripts/compare_line_finders.py
use: every degradation alone on a one-column page, and the combinations a phone over a
letter or a book page under a lamp gives.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

import pages
from pages import Box, Rendered


def _pixels(page: Rendered) -> np.ndarray:
    return np.asarray(page.image.convert("RGB"), dtype=np.float32)


def _with_pixels(page: Rendered, pixels: np.ndarray, what: str) -> Rendered:
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return Rendered(f"{page.name}, {what}", image, list(page.boxes), list(page.texts))


def _with_image(page: Rendered, image: Image.Image, what: str, boxes: list[Box] | None = None) -> Rendered:
    return Rendered(f"{page.name}, {what}", image.convert("RGB"),
                    list(page.boxes) if boxes is None else boxes, list(page.texts))


def gradient(page: Rendered, low: float = 0.25) -> Rendered:
    """Light falling from full on the right to ``low`` of it on the left (a lamp to one
    side): every line runs from bright paper into dim paper."""
    pixels = _pixels(page)
    ramp = np.linspace(low, 1.0, pixels.shape[1], dtype=np.float32)
    return _with_pixels(page, pixels * ramp[None, :, None], f"light falling to {low:g} on the left")


def shadow(page: Rendered, share: float = 1 / 3, depth: float = 0.4) -> Rendered:
    """A hard-edged shadow (a hand, a phone) over the left ``share`` of the page: the
    shaded part gets ``depth`` of the light, and every line crosses the shadow's edge."""
    pixels = _pixels(page)
    edge = round(pixels.shape[1] * share)
    pixels[:, :edge] *= depth
    return _with_pixels(page, pixels, "a hard shadow over a third")


def low_contrast(page: Rendered, ink=(120, 116, 104), paper=(196, 186, 150)) -> Rendered:
    """Grey ink on yellowish grey paper: black maps to ``ink``, white to ``paper``."""
    pixels = _pixels(page) / 255.0
    ink_, paper_ = np.array(ink, np.float32), np.array(paper, np.float32)
    return _with_pixels(page, ink_ + (paper_ - ink_) * pixels, "low contrast")


def jpeg(page: Rendered, quality: int = 30) -> Rendered:
    buffer = io.BytesIO()
    page.image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return _with_image(page, Image.open(buffer), f"JPEG quality {quality}")


def blur(page: Rendered, radius: float = 1.5) -> Rendered:
    """A slightly out-of-focus camera."""
    return _with_image(page, page.image.filter(ImageFilter.GaussianBlur(radius)), f"blur {radius:g}")


def noise(page: Rendered, sigma: float = 25.0, seed: int = 0) -> Rendered:
    """Sensor noise of a phone camera in poor light."""
    pixels = _pixels(page)
    pixels += np.random.default_rng(seed).normal(0, sigma, pixels.shape).astype(np.float32)
    return _with_pixels(page, pixels, f"noise {sigma:g}")


def rotation(page: Rendered, degrees: float, fill="white") -> Rendered:
    return pages.rotated(page, degrees, fill)


def _homography(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> np.ndarray:
    """The 3x3 projective map taking the four ``source`` points to ``target``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(source, target):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows, float), np.array(rhs, float))
    return np.append(h, 1.0).reshape(3, 3)


def _project(h: np.ndarray, x: float, y: float) -> tuple[float, float]:
    u, v, w = h @ np.array([x, y, 1.0])
    return u / w, v / w


def perspective(page: Rendered, tilt: float = 0.05, fill="white") -> Rendered:
    """The page photographed from a little below its centre: its top edge ``tilt`` of the
    width narrower on each side than its bottom edge, the top a little lower; what the
    picture shows beyond the page is ``fill``."""
    w, h = page.image.size
    inset = tilt * w
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    warped = [(inset, tilt * h), (w - inset, tilt * h), (w, h), (0, h)]
    forward = _homography(corners, warped)
    backward = _homography(warped, corners)  # PIL maps each output pixel back to the input
    image = page.image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(backward.reshape(-1)[:8]),
                                 resample=Image.Resampling.BICUBIC, fillcolor=fill)
    boxes = []
    for x1, y1, x2, y2 in page.boxes:
        points = [_project(forward, x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))]
        boxes.append((min(p[0] for p in points), min(p[1] for p in points),
                      max(p[0] for p in points), max(p[1] for p in points)))
    return _with_image(page, image, f"perspective {tilt:g}", boxes)


TABLE = (74, 58, 44)


def dark_border(page: Rendered, share: float = 0.12, table=TABLE, seed: int = 0) -> Rendered:
    """The page lying on a darker, grainy table, which fills ``share`` of the picture's
    width and height on every side."""
    w, h = page.image.size
    dx, dy = round(w * share), round(h * share)
    rng = np.random.default_rng(seed)
    ground = np.array(table, np.float32) + rng.normal(0, 8, (h + 2 * dy, w + 2 * dx, 1)).astype(np.float32)
    canvas = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    canvas.paste(page.image.convert("RGB"), (dx, dy))
    boxes = [(x1 + dx, y1 + dy, x2 + dx, y2 + dy) for x1, y1, x2, y2 in page.boxes]
    return _with_image(page, canvas, "on a dark table", boxes)


def chain(page: Rendered, *steps: Callable[[Rendered], Rendered], name: str) -> Rendered:
    for step in steps:
        page = step(page)
    page.name = name
    return page


def degraded_pages() -> list[Rendered]:
    """Each degradation alone on one column of 12 lines, then combinations."""
    base = pages.one_column
    singles = [gradient(base()), shadow(base()), low_contrast(base()), jpeg(base()),
               blur(base()), noise(base()), rotation(base(), 3.0), rotation(base(), -4.0),
               rotation(base(), 5.0), perspective(base()), dark_border(base()),
               gradient(pages.light_on_dark())]
    combined = [
        chain(base(seed=21), lambda p: gradient(p, 0.35), lambda p: rotation(p, 3.0), dark_border,
              lambda p: noise(p, 12.0), lambda p: jpeg(p, 50),
              name="phone over a letter: uneven light, turned 3 degrees, on a table, noise, JPEG"),
        chain(base(seed=22), shadow, low_contrast, lambda p: blur(p, 1.0), jpeg,
              name="shadow, low contrast, blur, JPEG 30"),
        chain(pages.two_columns(seed=23), gradient, perspective, lambda p: noise(p, 15.0),
              name="two columns under a lamp: light falling off, perspective, noise"),
        chain(base(seed=24), low_contrast, lambda p: rotation(p, -3.0), dark_border, jpeg,
              name="yellowed page, turned -3 degrees, on a table, JPEG 30"),
        chain(base(seed=25), dark_border, lambda p: rotation(p, 4.0, TABLE), lambda p: jpeg(p, 40),
              name="page and table turned 4 degrees together, JPEG 40"),
        chain(base(seed=26), low_contrast, lambda p: gradient(p, 0.5), dark_border,
              lambda p: perspective(p, 0.03, TABLE), lambda p: blur(p, 1.0),
              name="book page on a table under a lamp: low contrast, light falling off, "
                   "perspective, blur"),
    ]
    for page in singles:  # apart from the clean pages of the same layout
        page.name = f"photographed {page.name}"
    return singles + combined
