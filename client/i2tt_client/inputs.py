"""Turning what callers hold into the encoded image bytes that travel on the wire.

Images go to the server encoded (tens of KB, always batchable as TYPE_STRING) and are
decoded there, so a file's bytes are sent as they are. Pixels the caller already decoded
(a PIL image, a numpy array) are encoded losslessly as PNG so the server sees exactly
those pixels. URLs are fetched here, never by the server.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InvalidInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class FetchLimits:
    """How long a URL may take and how large its body may be."""

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(URL_SCHEMES)


def is_batch(value: Any) -> bool:
    """A list-like of inputs, as opposed to one input (a str, bytes, image or array)."""
    if isinstance(value, (str, bytes, bytearray, memoryview, np.ndarray, Image.Image, os.PathLike,
                          dict)):  # a dict is one request's inputs (the generic call)
        return False
    return isinstance(value, (list, tuple)) or hasattr(value, "__iter__")


def image_bytes(value: Any, index: int | None = None, limits: FetchLimits = FetchLimits()) -> bytes:
    """Encoded image bytes for one image input; raises InvalidInputError naming ``index``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise InvalidInputError(index, "empty image bytes")
        return data
    if is_url(value):
        return fetch_url(value, index, limits)
    if isinstance(value, (str, os.PathLike)):
        return read_file(Path(value), index)
    if isinstance(value, Image.Image):
        return encode_pil(value)
    if isinstance(value, np.ndarray):
        return encode_array(value, index)
    if hasattr(value, "read"):  # an open binary file
        return image_bytes(value.read(), index, limits)
    raise InvalidInputError(index, f"unsupported image input type {type(value).__name__}; "
                                   "give a path, an http(s) URL, bytes, a PIL image or a numpy array")


def read_file(path: Path, index: int | None) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(index, f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(index, f"is a directory, not an image: {path}") from None
    except OSError as exc:
        raise InvalidInputError(index, f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise InvalidInputError(index, f"empty file: {path}")
    return data


def fetch_url(url: str, index: int | None, limits: FetchLimits) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "i2tt-client"})
    try:
        with urllib.request.urlopen(request, timeout=limits.timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limits.max_bytes:
                raise InvalidInputError(index, f"{url}: {int(length)} bytes is over the "
                                               f"{limits.max_bytes}-byte limit")
            # Read one byte past the limit: a server that sends no Content-Length (or lies)
            # must not make the client buffer an unbounded body.
            data = response.read(limits.max_bytes + 1)
    except InvalidInputError:
        raise
    except urllib.error.HTTPError as exc:
        raise InvalidInputError(index, f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            reason = f"timed out after {limits.timeout:g}s"
        raise InvalidInputError(index, f"{url}: cannot fetch ({reason})") from None
    if len(data) > limits.max_bytes:
        raise InvalidInputError(index, f"{url}: body is over the {limits.max_bytes}-byte limit")
    if not data:
        raise InvalidInputError(index, f"{url}: empty body")
    return data


def encode_pil(image: Image.Image) -> bytes:
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_array(array: np.ndarray, index: int | None) -> bytes:
    """HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA); uint8, or floats in 0..1."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidInputError(index, f"array of shape {array.shape} is not an image; "
                                       "expected HxW, HxWx3 or HxWx4")
    if array.size == 0:
        raise InvalidInputError(index, "empty array")
    if np.issubdtype(array.dtype, np.floating):
        if np.nanmin(array) < 0 or np.nanmax(array) > 1:
            raise InvalidInputError(index, "float arrays must hold values in 0..1")
        array = np.round(array * 255)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise InvalidInputError(index, f"{array.dtype} array has values outside 0..255")
    return encode_pil(Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)))


def text_bytes(value: Any, index: int | None = None) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise InvalidInputError(index, f"text input must be str or bytes, not {type(value).__name__}")
