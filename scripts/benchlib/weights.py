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
    if missing and given:
        sys.exit(f"error: no weights for {missing} in {root}")
    if not given:
        outdated = [f for f in folders if f not in missing and built_by_another(root / f)]
        if outdated:
            log(f"the weights builder changed since {outdated} were built: rebuilding them")
        missing += outdated
    if missing:
        from i2tt_server.weights.synthetic import make_test_weights

        log(f"building full-size random weights ({lengths} lengths) for {missing} in {root} "
            f"(once)")
        make_test_weights(root, "full", missing, log=log, lengths=lengths)
        for folder in missing:
            (root / folder / STAMP).write_text(builder_digest() + "\n")
    return root


STAMP = "builder.sha256"  # in each folder built: the builder's digest


def builder_digest() -> str:
    from i2tt_server.weights import synthetic

    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()


def built_by_another(folder: Path) -> bool:
    """Whether the weights in ``folder`` were built by another version of the builder (or
    before folders were stamped). Weights built by an older builder measure something else
    (a changed tokenizer changes every sequence length): they are rebuilt."""
    stamp = folder / STAMP
    return not stamp.is_file() or stamp.read_text().strip() != builder_digest()
