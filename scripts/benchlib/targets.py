"""What the benchmark measures, read from the model repository's configs and the runners
registry (``i2tt_server.runners.RUNNERS``): it keeps no list of models of its own."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def config_of(model: str):
    from i2tt_server.repository import read_config

    return read_config(REPOSITORY / model)


def steps_of(model: str) -> list[str]:
    """The Python models a served model runs, in order (an ensemble runs several)."""
    from i2tt_server.repository import ensemble_steps

    return ensemble_steps(config_of(model))


def is_ensemble(model: str) -> bool:
    """Ensembles get every concurrency level and the batching-off server; the single
    models get the short set of rows (--single-concurrency, --single-requests)."""
    return config_of(model).platform == "ensemble"


def caches_responses(model: str) -> bool:
    """Whether the config enables the response cache (only ensembles do: Triton would
    cache a single Python model's errors as empty successes)."""
    return config_of(model).response_cache.enable


def input_of(model: str) -> tuple[str, str]:
    """(payload kind, input name) of a served model: what its first step reads."""
    from i2tt_server.runners import RUNNERS

    runner = RUNNERS[steps_of(model)[0]]
    return runner.sample, runner.inputs[0]


def measured_models() -> tuple[str, ...]:
    """Every served model, ensembles included, whose steps all run weights of their own:
    the bench compares them with the seed's one-at-a-time transformers calls. ocr_page
    runs no model of its own (Tesseract finds the lines, trocr_ocr reads them), so it has
    no seed-style side."""
    from i2tt_server.runners import RUNNERS

    served = sorted(p.parent.name for p in REPOSITORY.glob("*/config.pbtxt"))
    return tuple(m for m in served if all(RUNNERS[s].checkpoints for s in steps_of(m)))


def max_batch_size(step: str, device: str) -> int:
    """The largest batch the server would run for ``step`` (the CPU profile's on a CPU)."""
    from i2tt_server.repository import cpu_batching

    config = config_of(step)
    if device != "cuda":
        cpu_batching(config)
    return config.max_batch_size
