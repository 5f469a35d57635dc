"""What the ``i2tt`` command was given, as the list of its inputs: files, folders walked
for images, URLs, and lines of stdin."""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..inputs import IMAGE_SUFFIXES, is_url


@dataclass(frozen=True)
class Unreadable:
    """An entry of a folder that cannot be used (a symlink loop, a dangling link, an
    unlistable folder, a pipe): it gets an error row of its own."""

    path: str
    reason: str

    def __str__(self) -> str:
        return self.path


def expand_images(arguments: Iterable[str], stdin=None) -> list[str | Unreadable]:
    """Files as given, directories recursively (image files only, sorted), URLs as they
    are, and ``-`` for one path or URL per line of stdin."""
    found: list[str | Unreadable] = []
    for argument in arguments:
        if argument == "-":
            lines = [line.strip() for line in (stdin or sys.stdin)]
            found += expand_images([line for line in lines if line and line != "-"])
        elif is_url(argument):
            found.append(argument)
        elif os.path.isdir(argument):
            found += sorted(walk_images(argument), key=str)
        else:
            found.append(argument)  # a missing file becomes that item's error, not an abort
    return found


def walk_images(folder: str, ancestors: frozenset = frozenset()) -> list[str | Unreadable]:
    """Image files under ``folder``, following symlinks; what cannot be read is reported,
    never skipped in silence. ``ancestors`` (device, inode) of the folders above catch
    a link back up the tree."""
    try:
        status = os.stat(folder)
        identity = (status.st_dev, status.st_ino)
        if identity in ancestors:
            return [Unreadable(folder, f"symlink loop: {folder} leads back to a folder above it")]
        with os.scandir(folder) as entries:
            paths = [entry.path for entry in entries]
    except OSError as exc:
        return [Unreadable(folder, f"cannot list folder {folder}: {os_reason(exc)}")]
    found: list[str | Unreadable] = []
    for path in paths:
        try:
            mode = os.stat(path).st_mode  # follows links: loops and dangling links fail here
        except OSError as exc:
            found.append(Unreadable(path, f"cannot read {path}: {os_reason(exc)}"))
            continue
        if stat.S_ISDIR(mode):
            found += walk_images(path, ancestors | {identity})
        elif Path(path).suffix.lower() in IMAGE_SUFFIXES:
            found.append(path if stat.S_ISREG(mode)
                         else Unreadable(path, f"not a regular file: {path}"))
    return found


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "dangling symlink (its target does not exist)"
    return exc.strerror or str(exc)


def expand_texts(arguments: Iterable[str], stdin=None) -> list[str]:
    texts: list[str] = []
    for argument in arguments:
        if argument == "-":
            texts += [line.rstrip("\n") for line in (stdin or sys.stdin) if line.strip()]
        else:
            texts.append(argument)
    return texts
