"""Making a photographed page look like a scan before its lines are looked for.

Tesseract's layout analysis binarises the page with one threshold. On a photograph the
light is uneven (a lamp to one side, a hand's shadow, a page on a darker table), so one
threshold calls the shaded paper ink and the shaded ends of lines vanish or merge; and
beyond about 3.5 degrees of skew its layout analysis finds nothing at all. Three steps,
plain numpy and Pillow, measured against Tesseract's own adaptive thresholding methods in
docs/ocr_page.md:

- ``normalise_polarity``: dark text on a light ground, decided from local contrast (text
  is the minority in every tile that holds any), so a dark table or a shadow does not flip
  a light page;
- ``flatten``: divide the page by its background (a grey closing, which removes strokes
  thinner than the kernel and keeps the edges of shadows and of the page sharp), so paper
  is white wherever it lies and ink is dark relative to the paper around it;
- ``skew_angle``: the angle that makes the rows of ink sharpest (projection profile), so a
  page turned a few degrees can be turned straight before layout analysis.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# Background estimation runs on a copy at most this many pixels on its long side: the
# background varies slowly, and the closing costs kernel x pixels.
BACKGROUND_SIDE = 500
# The closing's kernel, as a share of the long side: wider than any stroke (a 26 px line
# of body text has 3 px strokes; a 64 px heading 8 px), so ink leaves no trace in the
# background, yet local enough to follow a lamp's falloff.
BACKGROUND_KERNEL = 0.03
# Sensor noise is smoothed out of the background estimate: a closing of a noisy image
# follows the noise's peaks and would leave shaded paper grey.
BACKGROUND_MEDIAN = 5
# Skew is searched within +-SKEW_LIMIT degrees, first in whole degrees, then in tenths.
SKEW_LIMIT = 8
# Polarity is read from at most this many pixels along the long side.
POLARITY_SIDE = 1000
SKEW_SIDE = 400


def _shrunk(grey: Image.Image, side: int) -> Image.Image:
    scale = min(1.0, side / max(grey.size))
    if scale >= 1.0:
        return grey
    return grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                       Image.Resampling.BOX)


def normalise_polarity(image: Image.Image) -> Image.Image:
    """Greyscale with dark text on a light ground (light text on a dark ground, a dark-mode
    screenshot, is inverted). In a tile holding text the text is the minority, so the
    tile's median lies near its ground: near its brightest pixels for dark text, near its
    darkest for light text. Tiles vote with that asymmetry; plain tiles (paper, a table,
    the inside of a shadow) have none and do not vote."""
    grey = image.convert("L")
    pixels = np.asarray(grey)
    # every step-th pixel: the same distribution of grey levels at a fraction of the cost
    step = -(-max(pixels.shape) // POLARITY_SIDE)
    pixels = pixels[::step, ::step].astype(np.float32)
    tile = max(8, max(pixels.shape) // 24)
    rows, columns = pixels.shape[0] // tile, pixels.shape[1] // tile
    if rows == 0 or columns == 0:
        return grey
    tiles = (pixels[:rows * tile, :columns * tile]
             .reshape(rows, tile, columns, tile).transpose(0, 2, 1, 3).reshape(-1, tile * tile))
    dark, middle, light = np.percentile(tiles, [5, 50, 95], axis=1)
    lean = 2 * middle - dark - light  # > 0: the median near the light end
    # A tile votes when it leans clearly (over half its contrast): text does, noise and
    # plain paper do not; tiles astride a page's edge lean either way and cancel out.
    votes = np.sign(lean) * (np.abs(lean) > 0.5 * (light - dark))
    return grey if votes.sum() >= 0 else ImageOps.invert(grey)


def _sliding(values: np.ndarray, size: int, axis: int, reduce) -> np.ndarray:
    """``reduce`` (np.maximum or np.minimum) over a window of ``size`` along ``axis``."""
    half = size // 2
    padding = [(half, half) if i == axis else (0, 0) for i in range(values.ndim)]
    padded = np.pad(values, padding, mode="edge")
    length = values.shape[axis]
    out = np.take(padded, np.arange(length), axis=axis)
    for shift in range(1, size):
        reduce(out, np.take(padded, np.arange(shift, shift + length), axis=axis), out=out)
    return out


def background(grey: Image.Image) -> np.ndarray:
    """The paper's brightness at every pixel: a grey closing (a maximum, then a minimum,
    over a square), which removes dark strokes narrower than the square and leaves the
    edges of shadows and of the page where they are."""
    small = _shrunk(grey, BACKGROUND_SIDE).filter(ImageFilter.MedianFilter(BACKGROUND_MEDIAN))
    values = np.asarray(small, dtype=np.uint8)
    size = max(3, round(BACKGROUND_KERNEL * max(values.shape)) | 1)
    for reduce in (np.maximum, np.minimum):
        values = _sliding(_sliding(values, size, 0, reduce), size, 1, reduce)
    if small.size != grey.size:
        values = np.asarray(Image.fromarray(values).resize(grey.size, Image.Resampling.BILINEAR))
    return values


def flatten(grey: Image.Image) -> Image.Image:
    """The page divided by its background: paper white wherever the light falls, ink as
    dark as it is against the paper around it."""
    ground = np.maximum(background(grey).astype(np.float32), 1.0)
    pixels = np.asarray(grey, dtype=np.float32)
    return Image.fromarray(np.clip(pixels * (255.0 / ground), 0, 255).astype(np.uint8))


def otsu_threshold(values: np.ndarray) -> int:
    """The grey level that best splits ``values`` into two classes (Otsu)."""
    histogram = np.bincount(values.reshape(-1), minlength=256).astype(np.float64)
    weight = np.cumsum(histogram)
    total = weight[-1]
    mass = np.cumsum(histogram * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * weight / total - mass) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between, nan=-1.0, posinf=-1.0)
    return int(np.argmax(between)) if between.max() > 0 else 128


def skew_angle(grey: Image.Image) -> float:
    """Degrees to turn the page (counter-clockwise, as ``Image.rotate``) to make its text
    lines horizontal: the turn that makes the row sums of ink change most sharply (a text
    line's rows are dense, the gaps between lines empty). 0 for a page without ink."""
    small = np.asarray(_shrunk(grey, SKEW_SIDE), dtype=np.uint8)
    ink = Image.fromarray(np.where(small < otsu_threshold(small), 255, 0).astype(np.uint8))

    def sharpness(degrees: float) -> float:
        turned = ink.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=0)
        rows = np.asarray(turned, dtype=np.float32).sum(axis=1)
        return float(np.square(np.diff(rows)).sum())

    coarse = max(range(-SKEW_LIMIT, SKEW_LIMIT + 1), key=lambda d: (sharpness(d), -abs(d)))
    fine = [coarse + tenth / 10 for tenth in range(-6, 7)]
    return round(max(fine, key=lambda d: (sharpness(d), -abs(d))), 1)
