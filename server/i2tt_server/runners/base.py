"""What every runner shares: its facts (Triton name, inputs, outputs, weights folders,
settings, the kind of sample it takes), settings from config parameters, input decoding,
and grouping a batch by what changes its computation. Loading a model and generating live
in ``generative`` (``GenerativeRunner``), device and dtype choice in ``device``.

A runner class is the one place a model's facts live: the weights tooling, the fetcher,
the benchmark and the tests read them from the registry (``runners.RUNNERS``)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Hashable, Iterable, Sequence

from PIL import Image

from ..errors import InvalidInput
from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
# Importable from here, where launchers, benchmarks and tests have always found them.
from .device import (BF16_CPU_FLAGS, CPU_KERNEL_CACHES, auto_dtype, cpu_flags,  # noqa: F401
                     cpu_threads, limit_cpu_kernel_caches, pick_device, pick_dtype)

MAX_TEXT_CHARS = 100_000  # beyond this a TEXT/PROMPT is refused rather than tokenised
# The optional output of the runners that read or caption images: how sure the model was of
# its answer, 0..1. It costs the scores of every generate step, so it is computed only for
# batches where some request asked for it.
CONFIDENCE = "CONFIDENCE"
BATCHING = ("static", "inflight")


class Parameters:
    """A dataclass of settings read from config.pbtxt parameters (all strings there)."""

    @classmethod
    def from_parameters(cls, params: dict[str, str]):
        """Typed settings from string parameters; unknown keys are an error (typos fail loudly)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(fields)}")
        values = {}
        for key, raw in params.items():
            kind = type(fields[key].default)
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(f"parameter {key} must be true or false, not {raw!r}")
                values[key] = raw.lower() in ("true", "1", "yes")
            else:
                values[key] = kind(raw)
        return cls(**values)


@dataclasses.dataclass
class Settings(Parameters):
    """Settings every generative runner reads from its config.pbtxt parameters."""

    weights: str = ""
    weights_root: str = ""  # empty: $I2TT_WEIGHTS, else the per-user cache
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (see auto_dtype) | float32 | float16 | bfloat16
    max_new_tokens: int = 30
    num_beams: int = 1
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    torch_threads: int = 0  # 0: auto (see cpu_threads)
    # Served on the CPU: take the cores that the server's busy model processes leave
    # instead of half (device.CoreShare), so a model alone gets every core. Only where
    # nothing else computes on these cores: threads beyond the free cores spin (a step of
    # the tiny T5 took 230 ms instead of 7.7 with another process busy on both cores).
    share_cores: bool = False
    warmup: bool = True
    # torch.compile the image encoder at load (runners.compiled), before the model is ready
    compile_encoder: bool = False
    # static: Triton's dynamic batches, each generated to its end (one generate call).
    # inflight: one decoding step at a time over every live request, which joins and
    # leaves between steps (i2tt_server.inflight_adapter); only where the runner has a
    # stepped generator (``GenerativeRunner.stepped``).
    batching: str = "static"
    max_running: int = 32  # inflight: live requests stepped together, at most

    def __post_init__(self):
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, not {self.batching!r}")
        if self.max_running < 1:
            raise ValueError(f"max_running must be at least 1, not {self.max_running}")


def group_indices(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Indices of equal keys, groups in first-seen order, indices ascending."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


class Answers(list):
    """What ``infer`` gives back: one dict of output values per item, in item order, and
    ``generated_tokens``, the tokens generate added to produce them (the
    i2tt_generated_tokens_total metric)."""

    def __init__(self, results: Iterable[dict[str, Any]] = (), generated_tokens: int = 0):
        super().__init__(results)
        self.generated_tokens = generated_tokens


class Runner:
    """Base class: subclasses set the class attributes and implement ``parse_one``,
    ``infer_group`` and ``warmup_items`` (and ``group_key`` where items of one batch must
    not share a forward pass)."""

    name: ClassVar[str]  # the Triton model name it serves
    inputs: ClassVar[tuple[str, ...]]  # first one required, the rest optional
    outputs: ClassVar[tuple[str, ...]]
    settings_class: ClassVar[type[Parameters]]
    # weights folder -> the public checkpoint on the Hugging Face hub it holds; the
    # default folder is the Settings' ``weights``; empty for a runner without weights
    checkpoints: ClassVar[dict[str, str]] = {}
    # the kind of input benchmarks and load tests send it: "photo", "line" (an image of one
    # line of text), "text" or "page"
    sample: ClassVar[str] = "photo"

    def __init__(self, settings):
        self.settings = settings

    @classmethod
    def default_folder(cls) -> str | None:
        """The weights folder it loads unless its config names another; None for a runner
        without weights of its own (ocr_page, which has trocr_ocr read its lines)."""
        return cls.settings_class().weights if cls.checkpoints else None

    @classmethod
    def serves_in_flight(cls) -> bool:
        """Whether it has an in-flight path (``batching: inflight``)."""
        return False

    @classmethod
    def called_models(cls, params: dict[str, str]) -> list[str]:
        """Served models it calls itself (business-logic calls), given its parameters."""
        return []

    @classmethod
    def from_parameters(cls, params: dict[str, str], **kwargs):
        return cls(cls.settings_class.from_parameters(params), **kwargs)

    # -- to implement -------------------------------------------------------------------
    def parse_one(self, values: dict[str, bytes]) -> Any:
        """One item from its raw input bytes (optional inputs absent); raises InvalidInput."""
        raise NotImplementedError

    def infer_group(self, items: Sequence[Any], key: Hashable, confidence: bool) -> Answers:
        """All items that share ``key`` at once (one batched generate); one dict per item
        (with CONFIDENCE when ``confidence`` is asked and the runner has that output)."""
        raise NotImplementedError

    def warmup_items(self) -> list[Any]:
        raise NotImplementedError

    def group_key(self, item: Any) -> Hashable:
        """What must be equal for items to share one forward pass. BLIP and Kosmos-2 give
        different answers when prompts of different lengths share one padded batch, so
        they group by prompt; the default is one group."""
        return None

    # -- shared -------------------------------------------------------------------------
    def infer(self, items: Sequence[Any], confidence: bool = False) -> Answers:
        """All items in as few batched generate calls as parity allows; one dict per item,
        in order, and the tokens generated. ``confidence``: also compute CONFIDENCE (where
        the runner has it)."""
        answers = Answers([{}] * len(items))
        for key, indices in group_indices([self.group_key(item) for item in items]).items():
            group = self.infer_group([items[i] for i in indices], key, confidence)
            for index, result in zip(indices, group):
                answers[index] = result
            answers.generated_tokens += group.generated_tokens
        return answers

    def parse(self, tensors: dict[str, list[bytes] | None]) -> list[Any]:
        """Items of one request: ``tensors`` maps input name -> its values (None if absent)."""
        first = tensors.get(self.inputs[0])
        if first is None:
            raise InvalidInput(f"{self.inputs[0]} is required")
        for name, values in tensors.items():
            if values is not None and len(values) != len(first):
                raise InvalidInput(f"{name} has {len(values)} values but "
                                   f"{self.inputs[0]} has {len(first)}")
        return [self.parse_one({name: values[i] for name, values in tensors.items()
                                if values is not None})
                for i in range(len(first))]

    def image(self, data: bytes, name: str = "IMAGE") -> Image.Image:
        return decode_image(data, self.settings.max_image_bytes,
                            self.settings.max_image_pixels, name)


def with_confidence(results: list[dict[str, Any]],
                    confidences: list[float] | None) -> list[dict[str, Any]]:
    """The results with each one's CONFIDENCE added, where it was computed."""
    if confidences is not None:
        for result, value in zip(results, confidences):
            result[CONFIDENCE] = value
    return results


def read_text(data: bytes | None, name: str, required: bool = True) -> str | None:
    """Decode a UTF-8 text input; empty means absent for optional inputs."""
    if data is None or data == b"":
        if required:
            raise InvalidInput(f"{name} is empty")
        return None
    if len(data) > MAX_TEXT_CHARS * 4:
        raise InvalidInput(f"{name} is {len(data)} bytes, over the limit")
    try:
        value = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not value.strip():
        if required:
            raise InvalidInput(f"{name} is blank")
        return None
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character")
    return value


def gray_image(size: int = 64) -> Image.Image:
    """A stand-in image for warmup."""
    return Image.new("RGB", (size, size), (127, 127, 127))
