"""The settings both sides run with. Each step's configured settings (its runner's
defaults, then its config.pbtxt parameters) are parsed once; the bench's overrides go on
top of them as config parameter strings, and the config edits derived from the two serve
exactly what the in-process rows run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .targets import config_of


@dataclasses.dataclass(frozen=True)
class Overrides:
    """What the command line changes in the served settings."""

    blip: str  # base | large
    device: str  # cpu | cuda
    torch_threads: int | None
    dtype: str  # auto, or a dtype name
    compile_encoder: bool = False  # every step with an image encoder compiles it


def pinned_new_tokens(folder: Path) -> int | None:
    """max_new_tokens when the weights pin their length (min == max in generation_config)."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    low, high = config.get("min_new_tokens"), config.get("max_new_tokens")
    return high if low is not None and low == high else None


def configured_settings(steps: list[str]) -> dict:
    """Each step's runner Settings as its config gives them."""
    from i2tt_server.runners import RUNNERS

    out = {}
    for step in steps:
        configured = {k: v.string_value for k, v in config_of(step).parameters.items()}
        out[step] = RUNNERS[step].settings_class.from_parameters(configured)
    return out


def weights_folder(step: str, settings, blip: str) -> str:
    """The weights folder a step loads: its configured one, BLIP's of the chosen size."""
    from i2tt_server.runners import BlipCaptioner

    return f"blip-{blip}" if step == BlipCaptioner.name else settings.weights


def served_parameters(configured: dict, overrides: Overrides,
                      weights: Path) -> dict[str, dict[str, str]]:
    """Each step's effective settings with the bench's overrides applied: BLIP size, and
    max_new_tokens set to the length the weights pin (if they pin one)."""
    from i2tt_server.runners import RUNNERS

    out = {}
    for step, settings in configured.items():
        params = {k: str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in dataclasses.asdict(settings).items()}
        params["weights"] = weights_folder(step, settings, overrides.blip)
        pinned = pinned_new_tokens(weights / params["weights"])
        if pinned:
            params["max_new_tokens"] = str(pinned)
        if overrides.device == "cpu":
            params["device"] = "cpu"
        if overrides.torch_threads:
            params["torch_threads"] = str(overrides.torch_threads)
        if overrides.dtype != "auto":
            params["dtype"] = overrides.dtype
        if overrides.compile_encoder and RUNNERS[step].compiled_encoder:
            params["compile_encoder"] = "true"
        out[step] = params
    return out


def config_edits(configured: dict, parameters: dict[str, dict[str, str]]):
    """Config edits that make the served settings the bench's (only where they differ)."""
    from i2tt_server.repository import chain, set_parameter

    edits = []
    for step, params in parameters.items():
        for key, value in params.items():
            if str(getattr(configured[step], key)).lower() != value.lower():
                edits.append(set_parameter(step, key, value))
    return chain(*edits)


def served_dtype(step: str, params: dict[str, str], device: str) -> str:
    """The dtype a served step runs in: its setting, where ``auto`` is resolved as the
    runner resolves it (bfloat16 on CPUs with native bfloat16, half precision on GPUs)."""
    from i2tt_server.runners import RUNNERS
    from i2tt_server.runners.base import auto_dtype

    requested = params.get("dtype", "auto")
    return requested if requested != "auto" else auto_dtype(device, RUNNERS[step].gpu_dtype)
