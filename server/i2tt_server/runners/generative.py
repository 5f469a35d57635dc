"""The runners that generate text with a transformers model (BLIP, Kosmos-2, TrOCR, T5):
loading the weights folder, choosing device and dtype, the batched generate call, and what
it gives back (the sequences, each row's confidence when asked, the tokens it added)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, ClassVar

from ..errors import InvalidInput
from ..weights_layout import model_dir
from .base import Answers, Runner, Settings, with_confidence
from .device import FixedThreads, cpu_threads, limit_cpu_kernel_caches, pick_device, pick_dtype

log = logging.getLogger("i2tt_server")


@dataclasses.dataclass(frozen=True)
class Generated:
    """One batched generate's output."""

    sequences: Any  # torch.LongTensor [rows, length], prompt included as generate returns it
    confidences: list[float] | None  # one per row, when asked
    new_tokens: int  # tokens generate added, over all rows (prompt and padding not counted)

    def answers(self, results: list[dict[str, Any]]) -> Answers:
        """The per-row results with their CONFIDENCE (where computed) and the token count."""
        return Answers(with_confidence(results, self.confidences), self.new_tokens)


class GenerativeRunner(Runner):
    """A runner over one transformers model: subclasses add ``model_class``,
    ``processor_class``, ``checkpoints`` and ``gpu_dtype`` to the facts, and make their
    ``infer_group`` one ``self.generate`` call whose ``Generated.answers`` it returns."""

    settings_class: ClassVar[type[Settings]] = Settings
    gpu_dtype: ClassVar[str] = "float16"
    # its model's attribute that ``compile_encoder`` compiles ("" where it has none)
    compiled_encoder: ClassVar[str] = ""
    # transformers class names that load its weights folder (model, processor/tokenizer)
    model_class: ClassVar[str]
    processor_class: ClassVar[str]

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

        super().__init__(settings)
        self._tokenizer_lock = threading.Lock()
        self.device = pick_device(settings.device, instance_kind, device_id)
        if settings.torch_threads or self.device.type == "cpu":
            torch.set_num_threads(settings.torch_threads or cpu_threads())
        # the threads it computes with: set once here, unless shared (``share_cores``)
        self.cores = FixedThreads()
        self.dtype = pick_dtype(self.device, settings.dtype, self.gpu_dtype)
        self.path = model_dir(settings.weights, settings.weights_root or None)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.name}: no weights at {self.path} (run `i2tt-server fetch-weights` "
                f"or `i2tt-server make-test-weights`, or set $I2TT_WEIGHTS)")
        log.info("%s: loading %s on %s as %s", self.name, self.path, self.device, self.dtype)
        self.load()
        if settings.compile_encoder:
            from .compiled import compile_encoder

            compile_encoder(self)
        # Served in flight, the model warms up through its step loop instead
        # (TritonModel.serve_in_flight): its static path would never run.
        if settings.warmup and settings.batching == "static":
            self.infer(self.warmup_items())

    def share_cores(self, share) -> None:
        """Compute with the cores ``share`` (a ``device.CoreShare``) leaves this process,
        where its threads are not configured and it runs on the CPU."""
        if self.device.type == "cpu" and not self.settings.torch_threads:
            self.cores = share

    @classmethod
    def serves_in_flight(cls) -> bool:
        return cls.stepped is not GenerativeRunner.stepped

    def stepped(self):
        """Its ``inflight.SteppedGenerator`` over the loaded model, for in-flight
        batching; a runner without one serves static batches only."""
        raise NotImplementedError(f"{self.name} has no in-flight path; serve it with "
                                  f"batching: static")

    def load(self) -> None:
        self.processor, model = self.load_pretrained(self.path, dtype=self.dtype)
        self.model = model.to(self.device)

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

    def generate(self, model, confidence: bool = False, **kwargs) -> Generated:
        """One batched generate; with ``confidence``, each row's confidence as well (the
        step scores that needs are kept only then)."""
        import torch

        with torch.inference_mode(), self.cores.busy():
            output = model.generate(max_new_tokens=self.settings.max_new_tokens,
                                    num_beams=self.settings.num_beams, do_sample=False,
                                    return_dict_in_generate=True, output_scores=confidence,
                                    logits_processor=self.step_hooks(), **kwargs)
            pad = model.generation_config.pad_token_id
            confidences = generated_confidences(model, output, pad) if confidence else None
        sequences = output.sequences
        prompts = kwargs.get("input_ids")
        if prompts is None or model.config.is_encoder_decoder:
            prompts = sequences[:, :1]  # the start token that generate put first
        new_tokens = count_new_tokens(sequences.tolist(), prompts.tolist(), pad)
        return Generated(sequences, confidences, new_tokens)

    def step_hooks(self):
        """Logits processors that change nothing but run at every step of generate: the
        share of cores looked at again (a neighbour may have started or stopped)."""
        from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList

        cores = self.cores
        if isinstance(cores, FixedThreads):
            return LogitsProcessorList()

        class EveryStep(LogitsProcessor):
            def __call__(self, input_ids, scores):
                cores.refresh()
                return scores

        return LogitsProcessorList([EveryStep()])

    def to_device(self, batch):
        """Move a processor's output to the device, floating tensors in the model dtype."""
        return {key: (value.to(self.device, self.dtype) if value.is_floating_point()
                      else value.to(self.device))
                for key, value in batch.items()}


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
    return mean_confidence(chosen, counted)


def mean_confidence(chosen, counted) -> list[float]:
    """Each row's exp(mean of its ``chosen`` log-probabilities where ``counted``): one
    computation for the batched path and the stepped one, so both round alike."""
    import torch

    total = torch.where(counted, chosen, torch.zeros_like(chosen)).sum(dim=1)
    mean = total / counted.sum(dim=1).clamp(min=1)
    return [float(value) for value in torch.exp(mean)]


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

