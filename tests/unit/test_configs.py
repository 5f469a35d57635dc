"""Every config.pbtxt parses as a Triton ModelConfig and matches the wire contract."""

from pathlib import Path

import pytest

from i2tt_server.repository import (CPU_MAX_BATCH, cpu_batching, derive_repository,
                                    model_dirs, read_config)
from i2tt_server.runners import RUNNERS
from i2tt_server.runners.base import Settings
from i2tt_server.weights.layout import CHECKPOINTS

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
STRING = 13  # TYPE_STRING

# The wire contract of DESIGN.md: model -> (inputs, optional inputs, outputs)
CONTRACT = {
    "blip_caption": ({"IMAGE", "PROMPT"}, {"PROMPT"}, {"CAPTION": [1]}),
    "kosmos2_caption": ({"IMAGE", "PROMPT"}, {"PROMPT"}, {"CAPTION": [1], "ENTITIES": [1]}),
    "trocr_ocr": ({"IMAGE"}, set(), {"TEXT": [1]}),
    "t5_tags": ({"TEXT"}, set(), {"TAGS": [-1]}),
    "caption_tags": ({"IMAGE"}, set(), {"CAPTION": [1], "TAGS": [-1]}),
}


def configs():
    return {d.name: read_config(d) for d in model_dirs(REPOSITORY)}


def test_repository_holds_exactly_the_contract_models():
    assert set(configs()) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_config_matches_contract(name):
    config = configs()[name]
    inputs, optional, outputs = CONTRACT[name]
    assert config.name == name
    assert {i.name for i in config.input} == inputs
    assert {i.name for i in config.input if i.optional} == optional
    assert {o.name: list(o.dims) for o in config.output} == outputs
    for tensor in [*config.input, *config.output]:
        assert tensor.data_type == STRING, tensor.name
    assert config.max_batch_size >= 1
    for i in config.input:
        assert list(i.dims) == [1]


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_python_models_batch_and_match_their_runner(name):
    config = configs()[name]
    runner = RUNNERS[name]
    assert config.backend == "python"
    assert config.HasField("dynamic_batching"), "no dynamic batching"
    assert all(size <= config.max_batch_size for size in config.dynamic_batching.preferred_batch_size)
    assert tuple(i.name for i in config.input) == runner.inputs
    assert tuple(o.name for o in config.output) == runner.outputs
    params = {k: v.string_value for k, v in config.parameters.items()}
    settings = runner.settings_class.from_parameters(params)  # unknown keys raise
    assert settings.weights in CHECKPOINTS
    # Triton 2.51 caches a Python-backend error as an empty success: no cache on these
    assert not config.response_cache.enable
    # one config for CPU and GPU: a KIND_GPU group would fail to load on a CPU-only host
    assert all(g.kind != 2 for g in config.instance_group)
    model_py = (REPOSITORY / name / "1" / "model.py").read_text()
    assert runner.__name__ in model_py and "triton_model" in model_py


def test_ensemble_chains_caption_into_tags():
    config = configs()["caption_tags"]
    all_configs = configs()
    assert config.platform == "ensemble"
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["blip_caption", "t5_tags"]
    assert dict(steps[0].input_map) == {"IMAGE": "IMAGE"}
    assert dict(steps[1].input_map) == {"TEXT": dict(steps[0].output_map)["CAPTION"]}
    assert set(dict(steps[1].output_map).values()) == {"TAGS"}
    for step in steps:
        assert config.max_batch_size <= all_configs[step.model_name].max_batch_size
    assert not (ROOT / "model_repository" / "caption_tags" / "1" / "model.py").exists()
    assert config.response_cache.enable


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
    for model_dir in model_dirs(derived):
        config, original = read_config(model_dir), shipped[model_dir.name]
        assert config.max_batch_size == min(original.max_batch_size, CPU_MAX_BATCH)
        assert all(s <= CPU_MAX_BATCH for s in config.dynamic_batching.preferred_batch_size)
        config.max_batch_size = original.max_batch_size
        del config.dynamic_batching.preferred_batch_size[:]
        del original.dynamic_batching.preferred_batch_size[:]
        assert config == original  # nothing but the batch sizes changed
        assert (model_dir / "1").is_dir()


def test_serve_checks_the_weights_folders_the_configs_name(tmp_path):
    from i2tt_server.cli import served_folders
    from i2tt_server.repository import set_parameter

    assert set(served_folders(REPOSITORY, None)) == {"blip-large", "kosmos-2", "trocr-printed", "t5-tags"}
    assert served_folders(REPOSITORY, ["t5_tags", "caption_tags"]) == ["t5-tags"]
    derived = derive_repository(REPOSITORY, tmp_path / "r", set_parameter("blip_caption", "weights", "blip-base"))
    assert "blip-base" in served_folders(derived, None)
