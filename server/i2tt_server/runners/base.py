"""What every runner shares: its facts (Triton name, inputs, outputs, transformers
classes, weights folders), settings from config parameters, device and dtype choice, input
decoding, grouping a batch by what changes its computation, and the generate call.

A runner class is the one place a model's facts live: the weights tooling, the fetcher,
the benchmark and the tests read them from the registry (``runners.RUNNERS``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, ClassVar, Hashable, NamedTuple, Sequence

from PIL import Image

from ..errors import InvalidInput
from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from ..weights_layout import model_dir

log = logging.getLogger("i2tt_server")

MAX_TEXT_CHARS = 100_000  # beyond this a TEXT/PROMPT is refused rather than tokenised
# The optional output of the runners that read or caption images: how sure the model was of
# its answer, 0..1. It costs the scores of every generate step, so it is computed only for
# batches where some request asked for it.
CONFIDENCE = "CONFIDENCE"


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
    """Settings every model runner reads from its config.pbtxt parameters."""

    weights: str = ""
    weights_root: str = ""  # empty: $I2TT_WEIGHTS, else the per-user cache
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (see auto_dtype) | float32 | float16 | bfloat16
    max_new_tokens: int = 30
    num_beams: int = 1
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    torch_threads: int = 0  # 0: auto (see cpu_threads)
    warmup: bool = True


# oneDNN (torch's CPU kernels for bfloat16 matmuls) keeps every primitive it compiles for
# a tensor shape, twice over: in its own primitive cache and in ideep's LRU cache above it,
# 1024 entries each by default. Generation makes new shapes at every step (batch size x
# tokens so far), so under load a model process fills both and keeps them full. Measured
# with TrOCR in bfloat16, batches of 1-16 lines: tiny weights 375 MB -> 1.36 GB (trocr_ocr
# in the soak: 374 MB -> 1.33 GB), full-size weights 3.4 GB against 1.5 GB capped, at the
# same speed within the noise (0.44 / 0.42 items/s). Caches this small keep the shapes
# every step reuses (the linear layers'); details in docs/load.md ("Memory"). Set before
# the first primitive is compiled, i.e. before a model runs; values already in the
# environment win.
CPU_KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "1"}


def limit_cpu_kernel_caches(environ=os.environ) -> None:
    for name, value in CPU_KERNEL_CACHES.items():
        environ.setdefault(name, value)


def pick_device(requested: str = "auto", instance_kind: str = "", device_id: int = 0):
    import torch

    if requested != "auto":
        return torch.device(requested)
    if instance_kind.upper() != "CPU" and torch.cuda.is_available():
        return torch.device("cuda", device_id)
    return torch.device("cpu")


def cpu_threads() -> int:
    """Half the cores for each model process. Every process would otherwise start one
    OpenMP thread per core, and the ensemble's two steps run at the same time: with more
    threads than cores OpenMP threads spin at barriers and throughput collapses (measured
    2-4x slower on 2 cores, docs/benchmarks/FINDINGS.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


# CPU flags that mean native bfloat16 matrix arithmetic (oneDNN then runs bfloat16 matmuls
# at about twice the float32 rate; without them bfloat16 is emulated and slower).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent, e.g. macOS)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_dtype(device_type: str, gpu_dtype: str, flags: frozenset[str] | None = None) -> str:
    """What ``dtype: auto`` means: the runner's half precision on a GPU, bfloat16 on a CPU
    with native bfloat16 (AVX512_BF16 or AMX), float32 elsewhere."""
    if device_type == "cuda":
        return gpu_dtype
    if device_type == "cpu" and BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags):
        return "bfloat16"
    return "float32"


def pick_dtype(device, requested: str, gpu_dtype: str):
    import torch

    return getattr(torch, requested if requested != "auto" else auto_dtype(device.type, gpu_dtype))


def group_indices(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Indices of equal keys, groups in first-seen order, indices ascending."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


class Runner:
    """Base class: subclasses set the class attributes and implement ``parse_one``,
    ``infer_group`` and ``warmup_items`` (and ``group_key`` where items of one batch must
    not share a forward pass)."""

    name: ClassVar[str]  # the Triton model name it serves
    inputs: ClassVar[tuple[str, ...]]  # first one required, the rest optional
    outputs: ClassVar[tuple[str, ...]]
    settings_class: ClassVar[type[Settings]] = Settings
    gpu_dtype: ClassVar[str] = "float16"
    # transformers class names that load its weights folder (model, processor/tokenizer)
    model_class: ClassVar[str]
    processor_class: ClassVar[str]
    # weights folder -> the public checkpoint on the Hugging Face hub it holds; the
    # default folder is the Settings' ``weights``
    checkpoints: ClassVar[dict[str, str]]
    # the kind of input benchmarks and load tests send it: "photo", "line" (an image of one
    # line of text) or "text"
    sample: ClassVar[str] = "photo"
    generated_tokens = 0  # tokens generated so far (the i2tt_generated_tokens_total metric)

    @classmethod
    def default_folder(cls) -> str | None:
        """The weights folder it loads unless its config names another; None for a runner
        without weights of its own (ocr_page, which has trocr_ocr read its lines)."""
        return cls.settings_class().weights if cls.checkpoints else None

    @classmethod
    def load_pretrained(cls, path, **model_kwargs):
        """(processor, model) from a weights folder (or hub id), model in eval mode."""
        import transformers

        processor = getattr(transformers, cls.processor_class).from_pretrained(path)
        model = getattr(transformers, cls.model_class).from_pretrained(path, **model_kwargs)
        return processor, model.eval()

    def __init__(self, settings: Settings, instance_kind: str = "", device_id: int = 0):
        limit_cpu_kernel_caches()
        import torch

        self.settings = settings
        self._tokenizer_lock = threading.Lock()
        self.device = pick_device(settings.device, instance_kind, device_id)
        if settings.torch_threads or self.device.type == "cpu":
            torch.set_num_threads(settings.torch_threads or cpu_threads())
        self.dtype = pick_dtype(self.device, settings.dtype, self.gpu_dtype)
        self.path = model_dir(settings.weights, settings.weights_root or None)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.name}: no weights at {self.path} (run `i2tt-server fetch-weights` "
                f"or `i2tt-server make-test-weights`, or set $I2TT_WEIGHTS)")
        log.info("%s: loading %s on %s as %s", self.name, self.path, self.device, self.dtype)
        self.load()
        if settings.warmup:
            self.infer(self.warmup_items())

    @classmethod
    def called_models(cls, params: dict[str, str]) -> list[str]:
        """Served models it calls itself (business-logic calls), given its parameters."""
        return []

    @classmethod
    def from_parameters(cls, params: dict[str, str], **kwargs):
        return cls(cls.settings_class.from_parameters(params), **kwargs)

    def load(self) -> None:
        self.processor, model = self.load_pretrained(self.path, dtype=self.dtype)
        self.model = model.to(self.device)

    # -- to implement -------------------------------------------------------------------
    def parse_one(self, values: dict[str, bytes]) -> Any:
        """One item from its raw input bytes (optional inputs absent); raises InvalidInput."""
        raise NotImplementedError

    def infer_group(self, items: Sequence[Any], key: Hashable,
                    confidence: bool) -> list[dict[str, Any]]:
        """One batched generate for items that share ``key``; one dict per item (with
        CONFIDENCE when ``confidence`` is asked and the runner has that output)."""
        raise NotImplementedError

    def warmup_items(self) -> list[Any]:
        raise NotImplementedError

    def group_key(self, item: Any) -> Hashable:
        """What must be equal for items to share one forward pass. BLIP and Kosmos-2 give
        different answers when prompts of different lengths share one padded batch, so
        they group by prompt; the default is one group."""
        return None

    def infer(self, items: Sequence[Any], confidence: bool = False) -> list[dict[str, Any]]:
        """All items in as few batched generate calls as parity allows; one dict per item,
        in order. ``confidence``: also compute CONFIDENCE (where the runner has it)."""
        results: list[dict[str, Any]] = [{}] * len(items)
        for key, indices in group_indices([self.group_key(item) for item in items]).items():
            group = self.infer_group([items[i] for i in indices], key, confidence)
            for index, result in zip(indices, group):
                results[index] = result
        return results

    # -- shared -------------------------------------------------------------------------
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

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model reads it (special tokens included). Requests are
        parsed in parallel threads, and a fast tokenizer must not be entered twice at once."""
        with self._tokenizer_lock:
            return len(self.tokenizer(text)["input_ids"])

    def check_tokens(self, text: str, name: str, limit: int) -> str:
        """``text`` if it is at most ``limit`` tokens, else InvalidInput: a longer one would
        fail or slow down the whole batch it lands in."""
        count = self.count_tokens(text)
        if count > limit:
            raise InvalidInput(f"{name} is {count} tokens long; {self.name} takes at most {limit}")
        return text

    def image(self, data: bytes, name: str = "IMAGE") -> Image.Image:
        return decode_image(data, self.settings.max_image_bytes,
                            self.settings.max_image_pixels, name)

    def generate(self, model, confidence: bool = False, **kwargs) -> Generated:
        """One batched generate; with ``confidence``, each row's confidence as well (the
        step scores that needs are kept only then)."""
        import torch

        with torch.inference_mode():
            output = model.generate(max_new_tokens=self.settings.max_new_tokens,
                                    num_beams=self.settings.num_beams, do_sample=False,
                                    return_dict_in_generate=True, output_scores=confidence,
                                    **kwargs)
            pad = model.generation_config.pad_token_id
            confidences = generated_confidences(model, output, pad) if confidence else None
        sequences = output.sequences
        prompts = kwargs.get("input_ids")
        if prompts is None or model.config.is_encoder_decoder:
            prompts = sequences[:, :1]  # the start token that generate put first
        self.generated_tokens += count_new_tokens(sequences.tolist(), prompts.tolist(), pad)
        return Generated(sequences, confidences)

    def to_device(self, batch):
        """Move a processor's output to the device, floating tensors in the model dtype."""
        return {key: (value.to(self.device, self.dtype) if value.is_floating_point()
                      else value.to(self.device))
                for key, value in batch.items()}


class Generated(NamedTuple):
    sequences: Any  # torch.LongTensor [rows, length], prompt included as generate returns it
    confidences: list[float] | None  # one per row, when asked


def generated_confidences(model, output, pad_token_id: int | None) -> list[float]:
    """Each row's confidence: the geometric mean of its chosen tokens' probabilities, i.e.
    exp of the mean log-probability of the tokens generate added (the end token included;
    the prompt and the padding after the end not). Greedy ``scores`` are the processed
    logits of each step, normalised here; beam search's are already log-probabilities,
    gathered along the chosen beam by its ``beam_indices`` (-1 after that beam ended), so
    the value is the chosen beam's own, as its length-normalised ``sequences_scores``."""
    import torch

    beams = getattr(output, "beam_indices", None)
    scores = output.scores if beams is not None else \
        tuple(step.log_softmax(dim=-1) for step in output.scores)
    chosen = model.compute_transition_scores(output.sequences, scores, beams)
    if beams is not None:
        counted = beams[:, :chosen.shape[1]] >= 0
    else:  # a row that ended before the others is padded with pad_token_id
        counted = output.sequences[:, -chosen.shape[1]:] != pad_token_id
    total = torch.where(counted, chosen, torch.zeros_like(chosen)).sum(dim=1)
    mean = total / counted.sum(dim=1).clamp(min=1)
    return [float(value) for value in torch.exp(mean)]


def with_confidence(results: list[dict[str, Any]],
                    confidences: list[float] | None) -> list[dict[str, Any]]:
    """The results with each one's CONFIDENCE added, where it was computed."""
    if confidences is not None:
        for result, value in zip(results, confidences):
            result[CONFIDENCE] = value
    return results


def count_new_tokens(sequences: list[list[int]], prompts: list[list[int]],
                     pad_token_id: int | None) -> int:
    """Tokens that generate added: each output row less the prompt it starts with and its
    padding. The shared prefix is measured rather than assumed, because BLIP drops its
    prompt's trailing [SEP] from the output."""
    total = 0
    for row, prompt in zip(sequences, prompts):
        start = 0
        while start < min(len(row), len(prompt)) and row[start] == prompt[start]:
            start += 1
        total += sum(1 for token in row[start:] if token != pad_token_id)
    return total


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
