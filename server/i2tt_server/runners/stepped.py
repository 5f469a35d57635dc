"""Encoder-decoder generation one decoding step at a time (``inflight.SteppedGenerator``):
what T5 and TrOCR share. The model-specific half (the encoder pass and the cross-attention
keys it gives, the decoder's forward, the answer) lives in ``stepped_t5`` and
``stepped_trocr``.

Each sequence keeps its own cross-attention keys and values and its own self-attention
cache, so sequences at different steps can share one decoder forward: their self-attention
caches are LEFT-padded to the longest (the query then sits at the same column for every
row, which T5's relative position bias needs; TrOCR's learned positions are given per row
instead), the cross-attention keys RIGHT-padded to the longest encoder output, and both
paddings masked. Greedy search picks the argmax of each row; beam search keeps, per
request, the state ``GenerationMixin._beam_search`` keeps for one batch element and
advances it with the model's own helpers, so an answer rests only on its rows' logits and
equals ``generate`` on that item alone."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from typing import Any, Hashable, Sequence

from .base import CONFIDENCE
from .generative import mean_confidence

# The only stopping criteria a sequence may meet, each checkable on its own rows alone.
STOPPING_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria"}


# Logits processors that act on each row from its own tokens and scores alone, so one
# request's rows processed apart from the others get what generate's whole batch gets.
ROW_PROCESSORS = {"MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
                  "SequenceBiasLogitsProcessor", "RepetitionPenaltyLogitsProcessor",
                  "NoRepeatNGramLogitsProcessor", "ExponentialDecayLengthPenalty",
                  "SuppressTokensLogitsProcessor", "NoBadWordsLogitsProcessor"}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What ``generate`` prepares for one item whose decoding starts from
    ``prompt_length`` tokens (1 for an encoder-decoder's start token)."""

    config: Any  # GenerationConfig, max_length set
    processors: Any  # LogitsProcessorList
    criteria: Any  # StoppingCriteriaList
    prompt_length: int


def generation_setup(model, max_new_tokens: int, num_beams: int, prompt_length: int = 1,
                     **overrides) -> Setup:
    """The generation config, logits processors and stopping criteria as ``generate``
    prepares them for one item with these settings (``overrides``: what a caller of
    ``generate`` adds, as BLIP its end token). A processor that would make the scores
    depend on more than the row's own tokens and logits (another row, the encoder's
    input), which nothing here reproduces, is refused rather than answered differently."""
    import torch
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    config, _ = model._prepare_generation_config(None, max_new_tokens=max_new_tokens,
                                                 num_beams=num_beams, do_sample=False,
                                                 **overrides)
    model._prepare_special_tokens(config, True, device=model.device)
    # the prompt (an encoder-decoder's: its start token) and the new tokens, as
    # _prepare_generated_length makes it
    config.max_length = max_new_tokens + prompt_length
    prompt = torch.ones((1, prompt_length), dtype=torch.long, device=model.device)
    processors = model._get_logits_processor(
        generation_config=config, input_ids_seq_length=prompt_length, encoder_input_ids=prompt,
        prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(),
        device=model.device, model_kwargs={})
    unknown = {type(p).__name__ for p in processors} - ROW_PROCESSORS
    if unknown:
        raise NotImplementedError(f"stepped generation cannot apply {sorted(unknown)}")
    criteria = model._get_stopping_criteria(config, StoppingCriteriaList())
    unknown = {type(c).__name__ for c in criteria} - STOPPING_CRITERIA
    if unknown:
        raise NotImplementedError(f"stepped generation cannot check {sorted(unknown)}")
    return Setup(config, processors, criteria, prompt_length)


@dataclasses.dataclass(eq=False)
class BeamState:
    """One request's beam search as ``_beam_search`` holds it for a batch of one."""

    running_sequences: Any  # [1, beams, max_length]
    running_beam_scores: Any  # [1, beams]
    sequences: Any  # finished hypotheses [1, beams, max_length]
    beam_scores: Any  # [1, beams]
    is_sent_finished: Any  # [1, beams]
    is_early_stop_heuristic_unsatisfied: Any  # [1, 1]
    next_token_hits_stopping_criteria: Any  # [1, beams]
    running_beam_indices: Any  # [1, beams, max_length - 1]
    beam_indices: Any  # [1, beams, max_length - 1]
    cur_len: int = 1

    @classmethod
    def start(cls, config, num_beams: int, device) -> BeamState:
        import torch

        pad, eos = config._pad_token_tensor, config._eos_token_tensor
        fill = pad or eos[0] if eos is not None else -1  # as _beam_search fills its rows
        running = torch.full((1, num_beams, config.max_length), fill_value=fill,
                             dtype=torch.int64, device=device)
        running[:, :, 0] = config._decoder_start_token_tensor
        scores = torch.zeros((1, num_beams), dtype=torch.float, device=device)
        scores[:, 1:] = -1e9  # only the first beam's tokens count at the first step
        indices = torch.full((1, num_beams, config.max_length - 1), fill_value=-1,
                             dtype=torch.int32, device=device)
        flags = torch.zeros((1, num_beams), dtype=torch.bool, device=device)
        return cls(running, scores, running.clone(),
                   torch.full((1, num_beams), -1e9, dtype=torch.float, device=device),
                   flags, torch.ones((1, 1), dtype=torch.bool, device=device), flags.clone(),
                   indices, indices.clone())


_SERIALS = itertools.count()


@dataclasses.dataclass(eq=False)
class StepSequence:
    """One live request: its cross-attention keys/values per decoder layer ([1, heads,
    encoder length, head dim], shared by its beams), its self-attention cache per layer
    ([rows, heads, steps, head dim]) and its tokens (greedy: the prompt first) or beams;
    with ``scores`` (greedy, CONFIDENCE asked) each chosen token's log-probability."""

    group: Hashable
    setup: Setup
    cross: list | None
    text_length: int  # the encoder output's length
    rows: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    beams: BeamState | None = None
    cache: list | None = None
    done: bool = False
    new_tokens: int = 0
    scores: list[float] | None = None
    serial: int = dataclasses.field(default_factory=lambda: next(_SERIALS))

    def last_tokens(self) -> list[int]:
        if self.beams is None:
            return [self.tokens[-1]]
        return self.beams.running_sequences[0, :, self.beams.cur_len - 1].tolist()


def cached_steps(state: StepSequence) -> int:
    return state.cache[0][0].shape[2] if state.cache else 0


def pad_steps(state: StepSequence, layer: int, which: int, steps: int):
    """The state's self-attention keys (which 0) or values (1) of ``layer`` as [rows,
    heads, steps, head dim], zeros on the LEFT (all zeros for a state yet to take a step)."""
    import torch
    import torch.nn.functional as F

    if not state.cache:
        like = state.cross[layer][which]
        return torch.zeros((state.rows, like.shape[1], steps, like.shape[3]),
                           dtype=like.dtype, device=like.device)
    tensor = state.cache[layer][which]
    # (as it is where no padding is needed: F.pad would copy it, and the join copies again)
    missing = steps - tensor.shape[2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


def pad_text(tensor, length: int, rows: int):
    """[1, heads, s, d] -> [rows, heads, length, d], zeros on the RIGHT."""
    import torch.nn.functional as F

    missing = length - tensor.shape[2]
    return (F.pad(tensor, (0, 0, 0, missing)) if missing else tensor).expand(rows, -1, -1, -1)


@dataclasses.dataclass
class StepBatch:
    """The caches one step ran on, batched: kept for the next step, which runs on them as
    they are when the same sequences step again, or on their rows when some left, instead
    of padding and joining every sequence's caches again (a copy of all of them)."""

    serials: tuple[int, ...]  # the sequences, in row order
    rows: list[int]  # each one's rows
    self_layers: list  # per layer (keys, values) [rows, heads, steps, head dim], left-padded
    cross_layers: list  # per layer (keys, values) [rows, heads, encoder length, head dim]

    def subset(self, states: Sequence[StepSequence]) -> StepBatch | None:
        """The batch of ``states``, when they are these sequences less some (in order)."""
        import torch

        serials = tuple(s.serial for s in states)
        if serials == self.serials:
            return self
        position = {serial: i for i, serial in enumerate(self.serials)}
        kept = [position.get(serial) for serial in serials]
        if None in kept or kept != sorted(kept):
            return None
        starts = [sum(self.rows[:i]) for i in range(len(self.rows))]
        device = (self.self_layers or self.cross_layers)[0][0].device
        index = torch.tensor([r for i in kept for r in range(starts[i], starts[i] + self.rows[i])],
                             device=device)
        pick = [[(k.index_select(0, index), v.index_select(0, index)) for k, v in layers]
                for layers in (self.self_layers, self.cross_layers)]
        return StepBatch(serials, [self.rows[i] for i in kept], *pick)


def batched_caches(states: Sequence[StepSequence], layers: int, steps: int,
                   length: int) -> StepBatch:
    """Every state's caches padded and joined (its self-attention keys to ``steps``
    columns on the left, its cross-attention keys, where the model has them, to ``length``
    on the right)."""
    import torch

    self_layers, cross_layers = [], []
    for layer in range(layers):
        if steps:
            self_layers.append(tuple(torch.cat([pad_steps(s, layer, i, steps) for s in states])
                                     for i in (0, 1)))
        if states[0].cross:
            cross_layers.append(tuple(torch.cat([pad_text(s.cross[layer][i], length, s.rows)
                                                 for s in states]) for i in (0, 1)))
    return StepBatch(tuple(s.serial for s in states), [s.rows for s in states], self_layers,
                     cross_layers)


@dataclasses.dataclass
class StepInputs:
    """What one decoder forward over every state's rows takes, model aside."""

    rows: int
    steps: int  # self-attention columns cached (the longest state's, padding included)
    length: int  # cross-attention columns (the longest encoder output)
    tokens: Any  # [rows, 1]: each row's last token
    positions: Any  # [rows, 1]: each row's own position (its tokens so far, less one)
    cache: Any  # EncoderDecoderCache over the batched caches (no cross part: decoder-only)
    decoder_mask: Any  # [rows, steps + 1], or None where no row is padded
    full_mask: Any  # the same mask, all ones where no row is padded (decoder-only models'
    # generate always passes one)
    text_mask: Any  # [rows, length]
    padded_text: bool  # whether some encoder output is shorter than ``length``


def step_inputs(states: Sequence[StepSequence], layers: int, device,
                last: StepBatch | None = None) -> tuple[StepInputs, StepBatch]:
    """The inputs of one decoder forward over all the states' rows, and the batch of
    caches they use (``last``'s, or its rows, where it holds these states)."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    batch = last.subset(states) if last is not None else None
    if batch is not None:  # every state stepped last time: its caches are in the batch
        # (wider than these states need once a longer one left: the extra columns are
        # masked, as the padding to the longest always was)
        steps = batch.self_layers[0][0].shape[2] if batch.self_layers else 0
        length = batch.cross_layers[0][0].shape[2] if batch.cross_layers else 0
    else:
        steps = max(cached_steps(s) for s in states)
        length = max(s.text_length for s in states)
        batch = batched_caches(states, layers, steps, length)
    rows = sum(s.rows for s in states)
    self_cache, cross_cache = DynamicCache(), DynamicCache()
    for layer in range(layers):
        if steps:
            self_cache.update(*batch.self_layers[layer], layer)
        if batch.cross_layers:
            cross_cache.update(*batch.cross_layers[layer], layer)
    decoder_mask = torch.zeros((rows, steps + 1), dtype=torch.long, device=device)
    text_mask = torch.zeros((rows, length), dtype=torch.long, device=device)
    positions, row = [], 0
    for s in states:
        cached = cached_steps(s)
        decoder_mask[row:row + s.rows, steps - cached:] = 1
        text_mask[row:row + s.rows, :s.text_length] = 1
        positions += [cached] * s.rows
        row += s.rows
    tokens = [t for s in states for t in s.last_tokens()]
    return StepInputs(
        rows, steps, length, torch.tensor([[t] for t in tokens], device=device),
        torch.tensor([[p] for p in positions], device=device),
        EncoderDecoderCache(self_cache, cross_cache),
        # no padding to mask (the states are as long): as generate calls it, without one
        None if bool(decoder_mask.all()) else decoder_mask, decoder_mask, text_mask,
        any(s.text_length < length for s in states)), batch


@functools.lru_cache(maxsize=None)
def _forward_takes_cache(forward) -> bool:
    return "cache" in inspect.signature(forward).parameters


def cache_argument(model) -> str:
    """The forward's name for the cache: ``cache`` in transformers 5.24, where
    ``past_key_values`` is deprecated; ``past_key_values`` in 5.20, which has no other."""
    return "cache" if _forward_takes_cache(type(model).forward) else "past_key_values"


def output_cache(output):
    """The forward's cache (``cache`` in transformers 5.24, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache


def output_layers(output) -> list:
    """The forward's self-attention cache, per layer (keys, values)."""
    cache = output_cache(output)
    cache = getattr(cache, "self_attention_cache", cache)  # a decoder alone: the cache itself
    return [(layer.keys, layer.values) for layer in cache.layers]


def split_cache(layers, states: Sequence[StepSequence]) -> None:
    """Give each state its rows of the batched self-attention cache, less the padding
    (views: nothing is copied)."""
    row = 0
    for s in states:
        cached = cached_steps(s) + 1
        s.cache = [(k[row:row + s.rows, :, -cached:], v[row:row + s.rows, :, -cached:])
                   for k, v in layers]
        row += s.rows


def advance_beams(model, setup: Setup, beams: BeamState, log_probs) -> Any:
    """One step of ``_beam_search`` for a batch of one on this request's [beams, vocab]
    log-probabilities, in its order and with its helpers; the beam each new running beam
    came from (to reorder the cache by)."""
    import torch

    config, criteria, b = setup.config, setup.criteria, beams
    num_beams, eos = config.num_beams, config._eos_token_tensor
    keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * num_beams
    top_mask = torch.cat((torch.ones(num_beams, dtype=torch.bool),
                          torch.zeros(keep - num_beams, dtype=torch.bool))).to(log_probs.device)
    scores = (log_probs[None] + b.running_beam_scores[:, :, None]).reshape(1, -1)
    top_scores, top_sequences, top_indices = model._get_top_k_continuations(
        accumulated_log_probs=scores, running_sequences=b.running_sequences,
        running_beam_indices=b.running_beam_indices, cur_len=b.cur_len, decoder_prompt_len=1,
        do_sample=False, beams_to_keep=keep, num_beams=num_beams, batch_size=1)
    hits = criteria(model._flatten_beam_dim(top_sequences[:, :, :b.cur_len + 1]), None)
    b.next_token_hits_stopping_criteria = model._unflatten_beam_dim(hits, 1, keep)
    b.running_sequences, b.running_beam_scores, b.running_beam_indices = \
        model._get_running_beams_for_next_iteration(
            topk_log_probs=top_scores, topk_running_sequences=top_sequences,
            topk_running_beam_indices=top_indices,
            next_token_hits_stopping_criteria=b.next_token_hits_stopping_criteria,
            num_beams=num_beams)
    b.sequences, b.beam_scores, b.beam_indices, b.is_sent_finished = model._update_finished_beams(
        sequences=b.sequences, topk_running_sequences=top_sequences, beam_scores=b.beam_scores,
        topk_log_probs=top_scores, beam_indices=b.beam_indices,
        topk_running_beam_indices=top_indices,
        is_early_stop_heuristic_unsatisfied=b.is_early_stop_heuristic_unsatisfied,
        is_sent_finished=b.is_sent_finished,
        next_token_hits_stopping_criteria=b.next_token_hits_stopping_criteria,
        top_num_beam_mask=top_mask, num_beams=num_beams, cur_len=b.cur_len,
        decoder_prompt_len=1, length_penalty=config.length_penalty,
        early_stopping=config.early_stopping)
    origin = model._flatten_beam_dim(b.running_beam_indices[..., b.cur_len - 1])
    b.cur_len += 1
    b.is_early_stop_heuristic_unsatisfied = model._check_early_stop_heuristic(
        is_early_stop_heuristic_unsatisfied=b.is_early_stop_heuristic_unsatisfied,
        running_beam_scores=b.running_beam_scores, beam_scores=b.beam_scores,
        is_sent_finished=b.is_sent_finished, cur_len=b.cur_len, max_length=config.max_length,
        decoder_prompt_len=1, early_stopping=config.early_stopping,
        length_penalty=config.length_penalty)
    return origin


def best_beam(beams: BeamState) -> list[int]:
    """The best finished hypothesis, cut as ``_beam_search`` cuts its output."""
    generated = int(((beams.beam_indices[0, 0] + 1).bool()).sum())
    return beams.sequences[0, 0, :1 + generated].tolist()


class SteppedEncoderDecoder:
    """``SteppedGenerator`` over a loaded ``GenerativeRunner`` of an encoder-decoder model,
    its settings' max_new_tokens and num_beams. A subclass gives the model's half:

    - ``encoder_pass(item)``: (group, cross-attention keys/values per decoder layer,
      encoder output length) for one parsed item, through the encoder alone; or
      ``begin(item, confidence)`` where a prompt must be read first (BLIP, and Kosmos-2,
      a decoder alone: its image is part of its prompt, and it has no cross-attention);
    - ``forward(inputs)``: the decoder's output (logits, cache) for ``StepInputs``;
    - ``answer(tokens, state)``: the output values of a finished token sequence;
    - ``layers``: the decoder's layer count.

    ``generation_model`` is the model whose ``generate`` runs the loop (BLIP's text
    decoder; else the model itself), ``overrides`` what its caller adds to the call.
    CONFIDENCE (``encode(..., confidence=True)``) is kept for greedy search: beam search
    would need every step's scores of every beam, and is refused at load instead."""

    layers: int

    def __init__(self, runner, confidence_output: bool = False, generation_model=None,
                 **overrides):
        self.runner = runner
        self.model = runner.model
        self.generation_model = generation_model if generation_model is not None else self.model
        self.num_beams = runner.settings.num_beams
        if confidence_output and self.num_beams > 1:
            raise NotImplementedError(f"{runner.name}: in-flight batching computes CONFIDENCE "
                                      f"for greedy search only (num_beams 1, not "
                                      f"{self.num_beams}); serve it with batching: static")
        self._overrides = overrides
        self._setups: dict[int, Setup] = {}
        # the setup of a one-token start (refused processors fail the load, not a request)
        setup = self.setup_for(1)
        self.config, self.processors, self.criteria = setup.config, setup.processors, setup.criteria
        self.pad = self.config.pad_token_id
        # generate has a forward over a prompt compute the last position's logits alone
        # where the model can (a product over one row rounds unlike one over the prompt's)
        self.last_logits = {"logits_to_keep": 1} \
            if self.generation_model._supports_logits_to_keep() else {}
        self._last: StepBatch | None = None  # the caches the last step ran on

    def setup_for(self, prompt_length: int) -> Setup:
        if prompt_length not in self._setups:
            self._setups[prompt_length] = generation_setup(
                self.generation_model, self.runner.settings.max_new_tokens, self.num_beams,
                prompt_length, **self._overrides)
        return self._setups[prompt_length]

    # -- the model's half ------------------------------------------------------------------
    def encoder_pass(self, item) -> tuple[Hashable, list, int]:
        raise NotImplementedError

    def begin(self, item, confidence: bool) -> StepSequence:
        """A new sequence for one parsed item, ready for its first step."""
        return self.start(*self.encoder_pass(item), confidence)

    def forward(self, inputs: StepInputs):
        raise NotImplementedError

    def answer(self, tokens: list[int], state: StepSequence) -> dict[str, Any]:
        raise NotImplementedError

    # -- SteppedGenerator ------------------------------------------------------------------
    def encode(self, items: Sequence[Any], confidence: bool = False) -> list[StepSequence]:
        import torch

        # One item at a time: a padded batch through the encoder need not round as the
        # item alone does, and generate on one item is what an answer must equal.
        with torch.inference_mode(), self.runner.cores.busy():
            return [self.begin(item, confidence) for item in items]

    def start(self, group, cross, length: int, confidence: bool,
              prompt: list[int] | None = None) -> StepSequence:
        """A sequence whose decoding starts from ``prompt`` (default: the start token)."""
        tokens = prompt or [int(self.config._decoder_start_token_tensor)]
        setup = self.setup_for(len(tokens))
        if self.num_beams > 1:
            if len(tokens) > 1:  # BeamState starts from the start token alone
                raise NotImplementedError("stepped beam search starts from one token")
            beams = BeamState.start(setup.config, self.num_beams, self.model.device)
            return StepSequence(group, setup, cross, length, self.num_beams, beams=beams)
        return StepSequence(group, setup, cross, length, 1, tokens=list(tokens),
                            scores=[] if confidence else None)

    def step(self, states: Sequence[StepSequence]) -> list[int]:
        import torch

        if not states:
            return []
        if any(s.done or s.cross is None for s in states):
            raise ValueError("only live sequences take a step")
        if len({s.group for s in states}) > 1:
            raise ValueError("only sequences of one group share a step")
        last, self._last = self._last, None  # kept again only once this step succeeds
        with torch.inference_mode(), self.runner.cores.busy():
            inputs, batch = step_inputs(states, self.layers, self.model.device, last)
            output = self.forward(inputs)
            chosen, layers = self.choose(states, output)
            split_cache(layers, states)
            self._last = StepBatch(batch.serials, batch.rows, layers, batch.cross_layers)
        return chosen

    def choose(self, states: Sequence[StepSequence], output) -> tuple[list[int], list]:
        """Each state's next token from a forward's last logits (its rows, in order), and
        the forward's self-attention cache per layer, beams reordered."""
        import torch

        layers = output_layers(output)
        logits = output.logits[:, -1, :].to(copy=True, dtype=torch.float32)
        if self.num_beams == 1:
            logits = self._process_greedy(states, logits)
            picks = torch.argmax(logits, dim=-1)
            if any(s.scores is not None for s in states):  # as generate's scores
                chosen_scores = logits.log_softmax(dim=-1).gather(1, picks[:, None])
                for s, value in zip(states, chosen_scores[:, 0].tolist()):
                    if s.scores is not None:
                        s.scores.append(value)
            # one transfer for all rows' choices
            return [self._advance_greedy(s, token) for s, token in zip(states, picks.tolist())], \
                layers
        chosen, origins, row = [], [], 0
        for s in states:
            token, origin = self._advance_beams(s, logits[row:row + s.rows])
            chosen.append(token)
            origins.append(origin + row)
            row += s.rows
        # every request's beams reordered in one gather per layer
        index = torch.cat(origins)
        return chosen, [(k.index_select(0, index), v.index_select(0, index)) for k, v in layers]

    def _process_greedy(self, states, logits):
        """The processors on every row's logits, as _sample applies them: each row with its
        own tokens (all rows at once where they are equally long, with one setup)."""
        import torch

        device = logits.device
        processors = states[0].setup.processors
        if not any(len(s.setup.processors) for s in states):
            return logits
        if len({len(s.tokens) for s in states}) == 1 and \
                all(s.setup is states[0].setup for s in states):
            return processors(torch.tensor([s.tokens for s in states], device=device), logits)
        return torch.cat([s.setup.processors(torch.tensor([s.tokens], device=device),
                                             logits[i:i + 1]) for i, s in enumerate(states)])

    def _advance_greedy(self, state: StepSequence, token: int) -> int:
        import torch

        state.new_tokens += 1
        state.tokens.append(token)
        tokens = torch.tensor([state.tokens], device=self.model.device)
        state.done = bool(state.setup.criteria(tokens, None)[0])
        return token

    def _advance_beams(self, state: StepSequence, logits) -> tuple[int, Any]:
        """(the token of its best running beam, the beam each running beam came from)."""
        import torch

        state.new_tokens += 1
        setup, b = state.setup, state.beams
        log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
        if len(setup.processors):  # as _beam_search: on the log-probabilities
            log_probs = setup.processors(b.running_sequences[0, :, :b.cur_len], log_probs)
        origin = advance_beams(self.generation_model, setup, b, log_probs)
        state.done = not bool(self.generation_model._beam_search_has_unfinished_sequences(
            b.is_early_stop_heuristic_unsatisfied, b.is_sent_finished,
            b.next_token_hits_stopping_criteria, setup.config.early_stopping))
        return int(b.running_sequences[0, 0, b.cur_len - 1]), origin

    def ended(self, state: StepSequence) -> bool:
        return state.done

    def finish(self, state: StepSequence) -> dict[str, Any]:
        if not state.done or state.cross is None:
            raise ValueError("finish takes an ended sequence, once")
        tokens = state.tokens if state.beams is None else best_beam(state.beams)
        scores = state.scores
        self.drop(state)
        values = self.answer(tokens, state)
        if scores is not None:
            values[CONFIDENCE] = self.confidence(tokens[state.setup.prompt_length:], scores)
        return values

    def confidence(self, new_tokens: list[int], scores: list[float]) -> float:
        """As ``generative.generated_confidences`` for this sequence alone: the chosen
        tokens' log-probabilities, the pad token's not counted."""
        import torch

        chosen = torch.tensor([scores], dtype=torch.float32)
        counted = torch.tensor([[token != self.pad for token in new_tokens]])
        return mean_confidence(chosen, counted)[0]

    def drop(self, state: StepSequence) -> None:
        state.cross = state.cache = state.beams = state.scores = None
        state.done = True
