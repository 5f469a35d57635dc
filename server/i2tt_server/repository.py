"""Reading, checking and deriving model repositories.

Configs are parsed as Triton ModelConfig protobufs, so a typo in a config.pbtxt fails a
test instead of a deployment, and variants (a longer queue delay for tests, batching off
for benchmarks) are derived by code rather than kept as edited copies.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig

REPOSITORY_ENV = "I2TT_MODEL_REPOSITORY"
# In a source checkout (editable install) the repository sits beside server/.
CHECKOUT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def find_repository(explicit: str | os.PathLike | None = None) -> Path:
    """The model repository to serve: an explicit path, else $I2TT_MODEL_REPOSITORY, else
    ./model_repository, else the source checkout's. A regular install (``pip install
    ./server``, as in the container) has no checkout beside it, so it needs one of the
    first two; the container sets the variable to /models."""
    for candidate, origin in ((explicit, "--model-repository"),
                              (os.environ.get(REPOSITORY_ENV), f"${REPOSITORY_ENV}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"{origin}: no model repository at {path}")
            return path
    for path in (Path.cwd() / "model_repository", CHECKOUT_REPOSITORY):
        if path.is_dir():
            return path
    raise FileNotFoundError("no model repository found: pass --model-repository or set "
                            f"${REPOSITORY_ENV}")


def read_config(model_dir: Path) -> ModelConfig:
    return text_format.Parse((Path(model_dir) / "config.pbtxt").read_text(), ModelConfig())


def write_config(model_dir: Path, config: ModelConfig) -> None:
    (Path(model_dir) / "config.pbtxt").write_text(text_format.MessageToString(config))


def model_dirs(repository: Path) -> list[Path]:
    return sorted(p.parent for p in Path(repository).glob("*/config.pbtxt"))


def read_configs(repository: Path) -> dict[str, ModelConfig]:
    """Every model's config, by model name."""
    return {d.name: read_config(d) for d in model_dirs(repository)}


def ensemble_steps(config: ModelConfig) -> list[str]:
    """The models an ensemble runs, in order; a plain model is its own single step."""
    if config.platform != "ensemble":
        return [config.name]
    return [step.model_name for step in config.ensemble_scheduling.step]


def business_calls(config: ModelConfig) -> list[str]:
    """The served models a Python model calls itself (business-logic calls), as its runner
    says for its parameters; none for an ensemble or a model without a runner."""
    from .runners import RUNNERS

    if config.name not in RUNNERS:
        return []
    params = {k: v.string_value for k, v in config.parameters.items()}
    return RUNNERS[config.name].called_models(params)


@dataclass(frozen=True, eq=False)
class ModelRepository:
    """A model repository read once: its folder and every model's config, by model name.
    What serving needs to know of it (the models a model calls, the weights folders, the
    order to stop taking requests in) is answered from these configs."""

    path: Path
    configs: dict[str, ModelConfig]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ModelRepository":
        return cls(Path(path), read_configs(Path(path)))

    @classmethod
    def find(cls, explicit: str | os.PathLike | None = None) -> "ModelRepository":
        """The repository ``find_repository`` finds, read."""
        return cls.read(find_repository(explicit))

    @property
    def names(self) -> list[str]:
        return list(self.configs)

    def calls(self, model: str) -> set[str]:
        """The served models ``model`` needs: an ensemble's steps, a business-logic call's
        target."""
        config = self.configs[model]
        return ((set(ensemble_steps(config)) - {model}) | set(business_calls(config))) \
            & set(self.configs)

    def with_called_models(self, models: list[str] | None) -> list[str] | None:
        """``models`` plus the models they call through business-logic calls (ocr_page calls
        trocr_ocr), which Triton does not load by itself as it does an ensemble's steps."""
        if not models:
            return models
        wanted = list(models)
        for name in wanted:  # grows while it is walked: calls of calls
            if name in self.configs:
                for called in business_calls(self.configs[name]):
                    if called not in wanted:
                        wanted.append(called)
        return wanted

    def callers_first(self) -> list[list[str]]:
        """The models in layers, each model in a layer before every model it calls: the
        order to stop taking requests in, so that nothing accepted finds a model it needs
        already gone."""
        calls = {name: self.calls(name) for name in self.configs}
        layers, left = [], set(self.configs)
        while left:
            # models no remaining model calls
            layer = sorted(m for m in left if not any(m in calls[o] for o in left if o != m))
            if not layer:  # a cycle: stop the rest together
                layer = sorted(left)
            layers.append(layer)
            left -= set(layer)
        return layers

    def served_folders(self, models: list[str] | None = None) -> list[str]:
        """The weights folders the served configs name (their ``weights`` parameter, else
        the runner's default); absolute paths are the configs' own business."""
        from .runners import RUNNERS

        folders: list[str] = []
        for name, config in self.configs.items():
            if name in RUNNERS and RUNNERS[name].checkpoints and (not models or name in models):
                folder = config.parameters["weights"].string_value \
                    if "weights" in config.parameters else RUNNERS[name].default_folder()
                if not Path(folder).is_absolute() and folder not in folders:
                    folders.append(folder)
        return folders


def derive_repository(source: Path, dest: Path,
                      edit: Callable[[ModelConfig], None] | None = None,
                      models: list[str] | None = None) -> Path:
    """Copy ``source`` to ``dest`` (only ``models`` if given), applying ``edit`` to each config."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for model_dir in model_dirs(source):
        if models and model_dir.name not in models:
            continue
        shutil.copytree(model_dir, dest / model_dir.name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        if edit:
            config = read_config(dest / model_dir.name)
            edit(config)
            write_config(dest / model_dir.name, config)
    return dest


def set_queue_delay(microseconds: int) -> Callable[[ModelConfig], None]:
    def edit(config: ModelConfig) -> None:
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = microseconds
    return edit


def set_parameter(model: str, key: str, value: str) -> Callable[[ModelConfig], None]:
    def edit(config: ModelConfig) -> None:
        if config.name == model:
            config.parameters[key].string_value = value
    return edit


SCHEDULING = ("config", "static", "inflight")


def in_flight(config: ModelConfig) -> bool:
    """Whether the config serves its model in flight (its ``batching`` parameter)."""
    return ("batching" in config.parameters
            and config.parameters["batching"].string_value == "inflight")


def set_scheduling(mode: str) -> Callable[[ModelConfig], None]:
    """Every model with an in-flight path served ``mode`` (static or inflight), whatever
    its config says; ``config`` leaves each as its config says."""
    if mode not in SCHEDULING:
        raise ValueError(f"scheduling must be one of {SCHEDULING}, not {mode!r}")

    def edit(config: ModelConfig) -> None:
        from .runners import RUNNERS

        runner = RUNNERS.get(config.name)
        if mode != "config" and runner is not None and runner.serves_in_flight():
            config.parameters["batching"].string_value = mode
    return edit


def batching_off(config: ModelConfig) -> None:
    """max_batch_size 1 and no dynamic batcher: every request is its own execution."""
    config.max_batch_size = 1
    config.ClearField("dynamic_batching")


# CPU batching profile: the largest batch per model, chosen from the batch-size sweep
# (scripts/sweep.py, docs/benchmarks/SWEEP.md: seconds per item at batch 1..16, bfloat16,
# one thread per model process). A batch is worth taking while it still lowers the cost
# per item; past that it only adds latency. GPUs keep the shipped configs.
CPU_MAX_BATCH = {"blip_caption": 4, "t5_tags": 16, "trocr_ocr": 16, "kosmos2_caption": 4}
CPU_DEFAULT_MAX_BATCH = 4  # a model not swept
# Model processes per model on a CPU (one torch thread each): a second blip_caption runs
# in the time t5_tags, faster per item at its batch size, leaves its core idle.
CPU_INSTANCES = {"blip_caption": 2}
# One item takes seconds on a CPU, so waiting 50 ms for company costs a lone request under
# 2 % of its latency per step, and lets requests that arrive together share a batch.
CPU_QUEUE_DELAY_US = 50_000


def cpu_batching(config: ModelConfig) -> None:
    """The CPU profile: each model's batch cap, preferring full batches, with at least the
    CPU queue delay, and queues that hold as many batches as the shipped config's; an
    ensemble is capped at its smallest step's cap (it must not exceed them)."""
    if config.platform == "ensemble":
        cap = min(CPU_MAX_BATCH.get(s, CPU_DEFAULT_MAX_BATCH) for s in ensemble_steps(config))
    else:
        cap = CPU_MAX_BATCH.get(config.name, CPU_DEFAULT_MAX_BATCH)
    shipped, config.max_batch_size = config.max_batch_size, min(config.max_batch_size, cap)
    if CPU_INSTANCES.get(config.name, 1) > 1 and (os.cpu_count() or 1) > 1:
        del config.instance_group[:]
        config.instance_group.add(count=CPU_INSTANCES[config.name],
                                  kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    if in_flight(config):
        # The live sequences are what is batched: as many as a batch would hold here.
        # Waiting for company gains nothing when requests join between steps anyway.
        config.parameters["max_running"].string_value = str(config.max_batch_size)
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        del batching.preferred_batch_size[:]
        batching.preferred_batch_size.append(config.max_batch_size)
        if not in_flight(config):
            batching.max_queue_delay_microseconds = max(
                CPU_QUEUE_DELAY_US, batching.max_queue_delay_microseconds)
        policy = batching.default_queue_policy
        if policy.max_queue_size and shipped:
            policy.max_queue_size = max(config.max_batch_size,
                                        policy.max_queue_size * config.max_batch_size // shipped)


def unbounded_queues(config: ModelConfig) -> None:
    """No queue limit or timeout: for benchmarks that measure capacity with more clients
    than the queues admit."""
    if config.HasField("dynamic_batching"):
        config.dynamic_batching.ClearField("default_queue_policy")


def chain(*edits: Callable[[ModelConfig], None]) -> Callable[[ModelConfig], None]:
    def edit(config: ModelConfig) -> None:
        for one in edits:
            one(config)
    return edit
