"""Where each model's weights live: ``<weights root>/<folder>/`` in save_pretrained layout.

The folder names are part of the configuration surface: a model's config.pbtxt names its
folder with the ``weights`` parameter, so switching BLIP base/large or TrOCR
printed/handwritten is a one-word config change.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "I2TT_WEIGHTS"
DEFAULT_ROOT = Path.home() / ".cache" / "i2tt" / "weights"


def weights_root(explicit: str | os.PathLike | None = None) -> Path:
    """The weights root: an explicit path, else $I2TT_WEIGHTS, else the per-user cache."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_ROOT


def model_dir(folder: str, root: str | os.PathLike | None = None) -> Path:
    """Resolve a model's weights folder; an absolute ``folder`` is used as it is."""
    path = Path(folder).expanduser()
    return path if path.is_absolute() else weights_root(root) / folder


def missing_folders(root: Path, folders) -> list[str]:
    return [f for f in folders if not (root / f / "config.json").is_file()]
