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


def end_at_varied_lengths(runner, items) -> float:
    """Make the runner's model end its answers to ``items`` (and the like) at varied
    lengths: generate's ``sequence_bias`` on the end token of the generation config its
    generate reads (BLIP's and Kosmos-2's text models have their own), by
    ``varied_end_bias``; the bias."""
    model = runner.model
    config = generating_module(runner).generation_config
    if type(model).__name__ == "BlipForConditionalGeneration":
        end = model.config.text_config.sep_token_id
    else:
        end = config.eos_token_id
    config.sequence_bias = None  # measured without one
    bias = varied_end_bias(runner, items, end)
    config.sequence_bias = [[[end], bias]]
    return bias


def generating_module(runner):
    """The module whose generation config the runner's generate reads: BLIP's and
    Kosmos-2's text models have their own."""
    model = runner.model
    kind = type(model).__name__
    if kind == "BlipForConditionalGeneration":
        return model.text_decoder
    if kind == "Kosmos2ForConditionalGeneration":
        return model.text_model
    return model


def varied_end_bias(runner, items, end_token: int) -> float:
    """An end-token bias (generate's ``sequence_bias``) that makes ``runner``'s answers to
    ``items`` end at varied lengths, some at once: the tiny random weights (which each
    environment's torch draws anew) rarely choose their end token on their own.

    One plain run per item records, at each step, how far the end token's score is below
    the best other one. With a bias b, greedy search takes the same tokens until the
    first step where that gap is below b and then ends; so each candidate b (just above a
    recorded gap) gives known lengths, and the one with the most distinct lengths, some
    ending at their first token and some running (nearly) to the end, is taken."""
    from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList

    gaps: list[list[float]] = []

    class Gaps(LogitsProcessor):
        def __call__(self, input_ids, scores):
            others = scores[0].clone()
            others[end_token] = float("-inf")
            gaps[-1].append(float(others.max() - scores[0, end_token]))
            return scores

    hooks = runner.step_hooks
    runner.step_hooks = lambda: LogitsProcessorList([Gaps()])
    try:
        for item in items:
            gaps.append([])
            runner.infer([item])
    finally:
        runner.step_hooks = hooks

    def lengths(bias: float) -> list[int]:
        return [next((t + 1 for t, gap in enumerate(row) if gap < bias), len(row))
                for row in gaps]

    longest = max(len(row) for row in gaps)

    def spread(bias: float) -> tuple:
        made = lengths(bias)
        return min(made) == 1, max(made) >= longest * 3 // 4, len(set(made))

    return max(sorted({gap + 1e-3 for row in gaps for gap in row if gap > 0}), key=spread)


def cpp_compiler_missing() -> bool:
    """torch.compile on a CPU builds its kernels with a C++ compiler (compile_encoder)."""
    import shutil

    return shutil.which("g++") is None and shutil.which("c++") is None
