"""The test data the project carries (tests/data/) and the model repository's facts, for
tests, load tests and benchmarks alike.

tests/data/ holds three real photographs and expected.json: what the public checkpoints
answered for them (checked only where the real weights are present).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
REPOSITORY = ROOT / "model_repository"
SEED_NAMES = ("example1.jpg", "example2.png", "human1.png")
# The tiny random TrOCR never chooses its end token on its own; generate's sequence bias
# raising it by this much ends pages.text_lines() after 1 to 16 tokens (measured in float32,
# max_new_tokens 16: 1, 2, 3, 4, 8, 13 and 16 among them), so lines leave steps early.
TROCR_END_BIAS = 10.8


def seed_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def expected_cases() -> list[dict]:
    return json.loads((DATA / "expected.json").read_text())["cases"]


def configs() -> dict:
    """model name -> its ModelConfig, from the shipped repository."""
    from i2tt_server.repository import read_configs

    return read_configs(REPOSITORY)


def list_outputs(config) -> set[str]:
    """Outputs of variable per-item shape (dims [-1], like TAGS): lists of strings."""
    return {o.name for o in config.output if list(o.dims) == [-1]}


def log_tail(path, lines: int = 60) -> str:
    """The last ``lines`` lines of a server's log, for a failure message."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except (OSError, TypeError):  # no log file, or none was asked for
        return "(no log)"
