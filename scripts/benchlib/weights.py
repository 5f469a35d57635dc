"""The weights a run measures: a given root with real checkpoints, or full-size random
weights (real architectures, pinned generation length) built here once."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from .console import log

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "build" / "bench-weights"


def ensure_weights(given: Path | None, folders: list[str], default: Path = DEFAULT_ROOT,
                   lengths: str = "pinned") -> Path:
    """The weights root holding ``folders``: ``given`` (which must hold them all), else
    ``default``, where missing or outdated folders are built (full size, answers of
    ``lengths``: pinned or varied, see i2tt_server.weights.synthetic)."""
    from i2tt_server.weights_layout import missing_folders

    root = given or default
    missing = missing_folders(root, folders)
    if not given and builder_changed(root):
        log(f"the weights builder changed since {root} was built: rebuilding")
        missing = folders
    if missing and given:
        sys.exit(f"error: no weights for {missing} in {root}")
    if missing:
        from i2tt_server.weights.synthetic import make_test_weights

        log(f"building full-size random weights ({lengths} lengths) for {missing} in {root} "
            f"(once)")
        make_test_weights(root, "full", missing, log=log, lengths=lengths)
    return root


def builder_changed(root: Path) -> bool:
    """Whether the weights in ``root`` were built by another version of the builder (then
    stamps the current one). Weights built by an older builder measure something else (a
    changed tokenizer changes every sequence length): they are rebuilt."""
    from i2tt_server.weights import synthetic

    stamp = root / "builder.sha256"
    digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
    changed = stamp.is_file() and stamp.read_text().strip() != digest
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    return changed
