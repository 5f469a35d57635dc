"""Every config.pbtxt parses as a Triton ModelConfig, and the repository, the runner
registry, the test-weights builders and the configs agree: a model added to one and
forgotten in another fails here."""

import ast
import importlib
import os
from pathlib import Path

import pytest

from i2tt_server.repository import (CPU_DEFAULT_MAX_BATCH, CPU_INSTANCES, CPU_MAX_BATCH,
                                    CPU_QUEUE_DELAY_US, ModelRepository,
                                    chain, cpu_batching, derive_repository, ensemble_steps,
                                    in_flight, model_dirs, read_config, set_parameter,
                                    set_scheduling)
from i2tt_server.runners import RUNNERS, checkpoints, default_folders, runner_for_folder
from i2tt_server.runners.base import Settings
from i2tt_server.triton_adapter import TritonModel
from i2tt_server.weights.synthetic import BUILDERS
from testdata import REPOSITORY, configs
from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

STRING, FP32 = 13, 11  # TYPE_STRING, TYPE_FP32
PYTHON_MODELS = sorted(name for name, c in configs().items() if c.backend == "python")
ENSEMBLES = sorted(name for name, c in configs().items() if c.platform == "ensemble")


def test_every_model_is_a_python_model_or_an_ensemble():
    assert set(configs()) == set(PYTHON_MODELS) | set(ENSEMBLES)
    assert PYTHON_MODELS and ENSEMBLES


def test_every_python_model_has_a_runner_and_every_runner_a_model():
    assert set(PYTHON_MODELS) == set(RUNNERS)


# Runners that load weights of their own; the others (ocr_page) call served models.
WEIGHTED = {name: runner for name, runner in RUNNERS.items() if runner.checkpoints}


def test_every_runner_with_weights_has_folders_and_a_test_weights_builder():
    assert set(BUILDERS) == set(WEIGHTED)
    assert {"blip_caption", "kosmos2_caption", "trocr_ocr", "t5_tags"} <= set(WEIGHTED)
    for runner in WEIGHTED.values():
        assert runner.default_folder() in runner.checkpoints, runner.name
        assert runner.model_class and runner.processor_class
        for folder, hub in runner.checkpoints.items():
            assert runner_for_folder(folder) is runner
            assert hub.count("/") == 1, hub
    assert len(checkpoints()) == sum(len(r.checkpoints) for r in RUNNERS.values()), \
        "two runners claim one weights folder"


def test_runners_without_weights_name_none_and_call_served_models():
    for name in set(RUNNERS) - set(WEIGHTED):
        runner = RUNNERS[name]
        assert runner.default_folder() is None
        assert not hasattr(runner.settings_class(), "weights"), "a weights setting it ignores"
        assert runner.settings_class().ocr_model in configs(), "it calls a model nobody serves"


@pytest.mark.parametrize("name", sorted(configs()))
def test_wire_contract_types_and_shapes(name):
    config = configs()[name]
    assert config.name == name
    assert config.max_batch_size >= 1
    for tensor in config.input:
        assert tensor.data_type == STRING, tensor.name
        assert list(tensor.dims) == [1], tensor.name  # one encoded image or text per item
    for tensor in config.output:
        if tensor.name == "CONFIDENCE":  # the one number: a float per item
            assert (tensor.data_type, list(tensor.dims)) == (FP32, [1])
        else:
            assert tensor.data_type == STRING, tensor.name
            assert list(tensor.dims) in ([1], [-1]), tensor.name


def test_the_models_that_read_or_caption_images_offer_confidence():
    offering = {name for name, config in configs().items()
                if "CONFIDENCE" in {o.name for o in config.output}}
    assert offering == {"blip_caption", "kosmos2_caption", "trocr_ocr"}
    # ensembles pass on only what they were built to: caption_tags is as it was
    assert all("CONFIDENCE" not in dict(step.output_map)
               for name in ENSEMBLES for step in configs()[name].ensemble_scheduling.step)


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_python_models_batch_and_match_their_runner(name):
    config = configs()[name]
    runner = RUNNERS[name]
    assert config.HasField("dynamic_batching"), "no dynamic batching"
    assert all(size <= config.max_batch_size for size in config.dynamic_batching.preferred_batch_size)
    assert tuple(i.name for i in config.input) == runner.inputs
    assert [i.name for i in config.input if i.optional] == list(runner.inputs[1:])
    assert tuple(o.name for o in config.output) == runner.outputs
    params = {k: v.string_value for k, v in config.parameters.items()}
    settings = runner.settings_class.from_parameters(params)  # unknown keys raise
    if runner.checkpoints:
        assert settings.weights in runner.checkpoints
    # Triton 2.51 caches a Python-backend error as an empty success: no cache on these
    assert not config.response_cache.enable
    # one config for CPU and GPU: a KIND_GPU group would fail to load on a CPU-only host
    assert all(g.kind != ModelInstanceGroup.KIND_GPU for g in config.instance_group)


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_python_models_shed_load_and_honour_callers_deadlines(name):
    policy = configs()[name].dynamic_batching.default_queue_policy
    assert policy.timeout_action == 0  # REJECT: an expired request is answered, never run
    assert policy.allow_timeout_override  # the caller's deadline, sent as its timeout
    # Triton lets a request's timeout only lower the default, so the default is the ceiling
    # of every caller's deadline: at least an hour, so no admitted request is refused for
    # waiting and the client's deadlines (120 s in the CLI) all hold.
    assert policy.default_timeout_microseconds >= 3600 * 1_000_000
    assert policy.max_queue_size >= 2 * configs()[name].max_batch_size


def test_an_ensembles_later_steps_queue_at_least_as_many_batches_as_its_first():
    for name in ENSEMBLES:
        first, *later = (configs()[step] for step in ensemble_steps(configs()[name]))
        for step in later:
            batches = lambda c: c.dynamic_batching.default_queue_policy.max_queue_size / c.max_batch_size  # noqa: E731
            assert batches(step) >= batches(first), (name, step.name)


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_settings_defaults_live_once(name):
    # A parameter in config.pbtxt that repeats its Settings default is a second copy that
    # would silently diverge: configs hold only what they change.
    defaults = RUNNERS[name].settings_class()
    for key, value in configs()[name].parameters.items():
        assert str(getattr(defaults, key)).lower() != value.string_value.lower(), key


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_model_py_subclasses_the_adapter_with_its_runner(name):
    tree = ast.parse((REPOSITORY / name / "1" / "model.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert cls.name == "TritonPythonModel"
    (base,) = [b.id for b in cls.bases]
    # the base is TritonModel or one of its subclasses in i2tt_server (e.g. PageModel)
    (module,) = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)
                 and base in [a.name for a in n.names]]
    assert module.startswith("i2tt_server.")
    assert issubclass(getattr(importlib.import_module(module), base), TritonModel)
    (assign,) = [n for n in cls.body if isinstance(n, ast.Assign)]
    assert assign.targets[0].id == "runner_class"
    assert assign.value.id == RUNNERS[name].__name__


@pytest.mark.parametrize("name", ENSEMBLES)
def test_ensembles_wire_existing_steps(name):
    config = configs()[name]
    all_configs = configs()
    steps = config.ensemble_scheduling.step
    available = {i.name for i in config.input}
    for step in steps:
        target = all_configs[step.model_name]
        assert config.max_batch_size <= target.max_batch_size
        assert set(step.input_map) <= {i.name for i in target.input}
        assert set(step.input_map.values()) <= available, "a step reads a tensor nobody made"
        assert set(step.output_map) <= {o.name for o in target.output}
        available |= set(step.output_map.values())
    assert {o.name for o in config.output} <= available
    assert not (REPOSITORY / name / "1" / "model.py").exists()
    assert config.response_cache.enable


def test_caption_tags_chains_caption_into_tags():
    config = configs()["caption_tags"]
    assert ensemble_steps(config) == ["blip_caption", "t5_tags"]
    steps = config.ensemble_scheduling.step
    assert dict(steps[1].input_map) == {"TEXT": dict(steps[0].output_map)["CAPTION"]}


def test_settings_reject_typos_and_bad_values():
    with pytest.raises(ValueError, match="unknown parameters"):
        Settings.from_parameters({"max_new_token": "5"})
    with pytest.raises(ValueError):
        Settings.from_parameters({"max_new_tokens": "many"})
    with pytest.raises(ValueError, match="true or false"):
        Settings.from_parameters({"warmup": "maybe"})
    assert Settings.from_parameters({"max_new_tokens": "5", "warmup": "false"}).max_new_tokens == 5


def test_cpu_profile_caps_batches_and_keeps_everything_else(tmp_path):
    derived = derive_repository(REPOSITORY, tmp_path / "cpu", cpu_batching)
    shipped = configs()
    caps = {}
    for model_dir in model_dirs(derived):
        config, original = read_config(model_dir), shipped[model_dir.name]
        caps[config.name] = config.max_batch_size
        assert config.max_batch_size <= original.max_batch_size
        if config.platform != "ensemble":
            assert config.max_batch_size == min(original.max_batch_size,
                                                CPU_MAX_BATCH.get(config.name, CPU_DEFAULT_MAX_BATCH))
            assert list(config.dynamic_batching.preferred_batch_size) == [config.max_batch_size]
            assert config.dynamic_batching.max_queue_delay_microseconds == max(
                CPU_QUEUE_DELAY_US, original.dynamic_batching.max_queue_delay_microseconds)
            # queues hold as many batches as the shipped ones (at least one batch)
            queue, shipped_queue = (c.dynamic_batching.default_queue_policy.max_queue_size
                                    for c in (config, original))
            if shipped_queue:
                assert queue == max(config.max_batch_size,
                                    shipped_queue * config.max_batch_size // original.max_batch_size)
            config.dynamic_batching.default_queue_policy.max_queue_size = shipped_queue
        shipped_instances = sum(g.count for g in original.instance_group) or 1
        instances = CPU_INSTANCES.get(config.name, shipped_instances) \
            if (os.cpu_count() or 1) > 1 else shipped_instances
        assert (sum(g.count for g in config.instance_group) or 1) == instances
        config.max_batch_size = original.max_batch_size
        for one in (config, original):
            del one.instance_group[:]
            if one.HasField("dynamic_batching"):  # (one of the scheduling oneof: test first)
                del one.dynamic_batching.preferred_batch_size[:]
                one.dynamic_batching.max_queue_delay_microseconds = 0
        assert config == original  # nothing but the batching values, queues and instances changed
        assert (model_dir / "1").is_dir()
    # an ensemble never takes a batch larger than one of its steps would
    for name, config in shipped.items():
        if config.platform == "ensemble":
            assert caps[name] <= min(caps[step.model_name] for step in config.ensemble_scheduling.step)


@pytest.mark.parametrize("mode", ["inflight", "static"])
def test_the_scheduling_switch_reaches_the_models_with_an_in_flight_path(tmp_path, mode):
    served = derive_repository(REPOSITORY, tmp_path / mode,
                               chain(set_scheduling(mode), cpu_batching))
    capable = {name for name, runner in RUNNERS.items() if runner.serves_in_flight()}
    assert {"t5_tags", "trocr_ocr", "blip_caption", "kosmos2_caption"} <= capable
    for model_dir in model_dirs(served):
        config, shipped = read_config(model_dir), configs()[model_dir.name]
        if model_dir.name not in capable:
            assert "batching" not in config.parameters
            continue
        assert config.parameters["batching"].string_value == mode
        if mode == "inflight":
            # as many live sequences as the CPU batch; no waiting for company
            assert in_flight(config)
            assert config.parameters["max_running"].string_value == str(config.max_batch_size)
            assert config.dynamic_batching.max_queue_delay_microseconds == \
                shipped.dynamic_batching.max_queue_delay_microseconds
        else:
            assert not in_flight(config) and "max_running" not in config.parameters
    with pytest.raises(ValueError, match="scheduling must be one of"):
        set_scheduling("continuous")


def test_serve_checks_the_weights_folders_the_configs_name(tmp_path):
    shipped = ModelRepository.read(REPOSITORY)
    assert set(shipped.served_folders()) == set(default_folders())
    assert shipped.served_folders(["t5_tags", "caption_tags"]) == ["t5-tags"]
    derived = derive_repository(REPOSITORY, tmp_path / "r", set_parameter("blip_caption", "weights", "blip-base"))
    assert "blip-base" in ModelRepository.read(derived).served_folders()


def test_serving_a_model_also_serves_the_models_it_calls(tmp_path):
    shipped = ModelRepository.read(REPOSITORY)
    assert shipped.with_called_models(["ocr_page"]) == ["ocr_page", "trocr_ocr"]
    assert shipped.with_called_models(["t5_tags"]) == ["t5_tags"]
    assert shipped.with_called_models(None) is None
    assert shipped.served_folders(shipped.with_called_models(["ocr_page"])) == ["trocr-printed"]
    derived = derive_repository(REPOSITORY, tmp_path / "r", set_parameter("ocr_page", "ocr_model", "t5_tags"))
    assert ModelRepository.read(derived).with_called_models(["ocr_page"]) == ["ocr_page", "t5_tags"]


def test_model_repository_is_found_from_a_regular_install(tmp_path, monkeypatch):
    from i2tt_server.repository import REPOSITORY_ENV, find_repository

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(REPOSITORY_ENV, str(REPOSITORY))
    assert find_repository() == REPOSITORY
    assert find_repository(tmp_path) == tmp_path  # explicit wins
    monkeypatch.setenv(REPOSITORY_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no model repository"):
        find_repository()
    monkeypatch.delenv(REPOSITORY_ENV)
    (tmp_path / "model_repository").mkdir()
    assert find_repository() == Path("model_repository").resolve()


def test_stopping_order_puts_callers_before_the_models_they_call():
    layers = ModelRepository.read(REPOSITORY).callers_first()
    position = {m: i for i, layer in enumerate(layers) for m in layer}
    assert set(position) == set(configs())
    assert position["caption_tags"] < position["blip_caption"]
    assert position["caption_tags"] < position["t5_tags"]
    assert position["ocr_page"] < position["trocr_ocr"]
