"""Decoding caller-supplied image bytes into RGB PIL images, defensively.

Every failure is an InvalidInput naming the problem: the caller's bad image must never
reach the model or cost the other requests of its batch.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; beyond that, a decompression bomb


def decode_image(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "IMAGE") -> Image.Image:
    """Decode encoded image bytes (JPEG, PNG, WebP, GIF, BMP, TIFF, ...) to an RGB image.

    EXIF orientation is applied, since cameras store pixels sideways; every mode is turned
    into 8-bit RGB (alpha is dropped, as ``Image.convert("RGB")`` does in the reference
    transformers code, so answers stay identical to it).
    """
    if not data:
        raise InvalidInput(f"{name} is empty")
    if len(data) > max_bytes:
        raise InvalidInput(f"{name} is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(f"{name} is {width}x{height} pixels, over the "
                                   f"{max_pixels}-pixel limit (decompression bomb?)")
            if width < 1 or height < 1:
                raise InvalidInput(f"{name} has no pixels")
            image.load()
            image = ImageOps.exif_transpose(image)
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"{name} refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{name} is not a decodable image ({len(data)} bytes, "
                           f"starting {data[:8]!r})") from None
    except Exception as exc:  # truncated files, broken chunks, codec errors
        raise InvalidInput(f"{name} could not be decoded: {type(exc).__name__}: {exc}") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale: convert("RGB") would clip everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
