"""Turning what callers hold into the encoded image bytes that travel on the wire.

Images go to the server encoded (tens of KB, always batchable as TYPE_STRING) and are
decoded there, so a file's bytes are sent as they are. Pixels the caller already decoded
(a PIL image, a numpy array) are encoded losslessly as PNG so the server sees exactly
those pixels. URLs are fetched here, never by the server.
"""

from __future__ import annotations

import functools
import http.client
import io
import os
import socket
import stat
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InvalidInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class FetchLimits:
    """How long fetching a URL may take in all (connecting, TLS, headers and body), and
    how large its body may be."""

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024

    def within(self, seconds: float | None) -> "FetchLimits":
        """These limits, with the time cut to ``seconds`` when that is shorter."""
        if seconds is None or seconds >= self.timeout:
            return self
        return replace(self, timeout=seconds)


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
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidInputError(index, f"is a directory, not an image: {path}")
        if not stat.S_ISREG(mode):  # a pipe or a device could block for ever
            raise InvalidInputError(index, f"not a regular file: {path}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(index, f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInputError(index, f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise InvalidInputError(index, f"empty file: {path}")
    return data


class FetchDeadline:
    """Ends a fetch at its total deadline by shutting its connections down.

    Socket timeouts limit each read, not the whole: a server that sends a byte a second
    would keep a fetch going for ever. Each connection's socket is duplicated when it is
    made, and at the deadline the duplicate is shut down, which wakes whatever read is
    blocked on the connection (TLS handshake included) and ends it.
    """

    def __init__(self, seconds: float):
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._pass)
        self._timer.daemon = True
        self._timer.start()

    def create_connection(self, *args, **kwargs) -> socket.socket:
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self._sockets.append(sock.dup())
            if self.passed:
                _shutdown(self._sockets[-1])
        return sock

    def _pass(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                _shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side


class _UnderDeadline:
    """A urllib handler whose connections are ended by a :class:`FetchDeadline`."""

    def __init__(self, deadline: FetchDeadline):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, request, **kwargs):
        return super().do_open(functools.partial(_connection_under, http_class, self.deadline),
                               request, **kwargs)


class _DeadlineHTTPHandler(_UnderDeadline, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPSHandler(_UnderDeadline, urllib.request.HTTPSHandler):
    pass


def _connection_under(connection_class, deadline: FetchDeadline, *args, **kwargs):
    connection = connection_class(*args, **kwargs)
    connection._create_connection = deadline.create_connection
    return connection


def fetch_url(url: str, index: int | None, limits: FetchLimits) -> bytes:
    """The body of an http(s) URL, fetched within ``limits.timeout`` seconds in all."""
    request = urllib.request.Request(url, headers={"User-Agent": "i2tt-client"})
    if limits.timeout <= 0:
        raise InvalidInputError(index, f"{url}: timed out: no time left to fetch it")
    deadline = FetchDeadline(limits.timeout)
    expired = InvalidInputError(index, f"{url}: timed out: not fetched within {limits.timeout:g}s")
    opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline),
                                         _DeadlineHTTPSHandler(deadline))
    try:
        with opener.open(request, timeout=limits.timeout) as response:
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
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        if deadline.passed:
            raise expired from None
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            reason = f"timed out after {limits.timeout:g}s"
        raise InvalidInputError(index, f"{url}: cannot fetch ({reason})") from None
    finally:
        deadline.close()
    if deadline.passed:  # the body may have been cut short
        raise expired
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
