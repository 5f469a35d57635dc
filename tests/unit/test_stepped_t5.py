"""Step-wise T5 generation answers as plain ``generate`` does on each text alone, whichever
sequences it shares its steps with, when they join, end or are dropped."""

from __future__ import annotations

import random

import pytest
import torch

from i2tt_server.runners import T5Tagger
from i2tt_server.runners.stepped import best_beam
from i2tt_server.runners.stepped_t5 import SteppedT5
from i2tt_server.text import clean_tags

DTYPES = ["float32", "bfloat16"]
MAX_NEW_TOKENS = 12  # short: the test runs 8 configurations of 40 texts several times
# The tiny random weights never choose the end token, so every answer would run to
# MAX_NEW_TOKENS; scaling up the end token's row of the tied embedding / lm_head makes
# answers end after 1 to 12 tokens (measured, greedy and 8 beams: 1, 2, 3, 5, 9, 10, 12).
END_BOOST = 2.5
WORDS = "a dog cat on the beach red car man woman street tree sky house".split()
_RANDOM = random.Random(0)
TEXTS = [" ".join(_RANDOM.choice(WORDS) for _ in range(_RANDOM.randint(1, 40)))
         for _ in range(40)]  # 1 to 40 words


def tagger(weights_dir, dtype: str, beams: int, end_boost: float) -> T5Tagger:
    """A runner with its own model, which plain generate (the reference) uses too."""
    t5 = T5Tagger.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                   "device": "cpu", "dtype": dtype, "num_beams": str(beams),
                                   "max_new_tokens": str(MAX_NEW_TOKENS)})
    if end_boost != 1.0:
        end = t5.model.generation_config.eos_token_id
        with torch.no_grad():
            t5.model.shared.weight[end] *= end_boost  # the lm_head is tied to it
    return t5


@torch.inference_mode()
def reference(t5: T5Tagger, text: str) -> list[int]:
    """What generate gives for this one text, as tests/reference.py calls it."""
    inputs = t5.processor([text], max_length=512, truncation=True, return_tensors="pt")
    out = t5.model.generate(**inputs, num_beams=t5.settings.num_beams, do_sample=False,
                            max_new_tokens=MAX_NEW_TOKENS)
    return out[0].tolist()


def tokens_of(state) -> list[int]:
    return state.tokens if state.beams is None else best_beam(state.beams)


def run(generator, texts, join_per_step: int | None, drop_at=None, confidence=False):
    """Every item through the scheduler's loop: all admitted at once (``join_per_step``
    None) or that many new ones before each step; ``drop_at`` maps an index to the step
    count at which its caller goes away. Index -> (tokens, output values), and the steps
    taken. (test_stepped_trocr runs its items through it too.)"""
    drop_at = drop_at or {}
    pending, states, answers, steps = list(range(len(texts))), {}, {}, 0
    while pending or states:
        admit = len(pending) if join_per_step is None else join_per_step
        for key in pending[:admit]:
            states[key] = generator.encode([texts[key]], confidence)[0]
        del pending[:admit]
        for key in [k for k in states if generator.ended(states[k])]:  # ended with the prompt
            answers[key] = (tokens_of(states[key]), generator.finish(states.pop(key)))
        for key in [k for k in states if drop_at.get(k) == states[k].new_tokens]:
            generator.drop(states.pop(key))
        live = list(states)
        if not live:
            continue
        chosen = generator.step([states[key] for key in live])
        steps += 1
        assert len(chosen) == len(live)
        for key in live:
            if generator.ended(states[key]):
                tokens = tokens_of(states[key])
                answers[key] = (tokens, generator.finish(states.pop(key)))
    return answers, steps


@pytest.fixture(scope="module", params=[(d, b, e) for d in DTYPES for b in (1, 8)
                                        for e in (1.0, END_BOOST)],
                ids=lambda p: f"{p[0]}-beams{p[1]}-{'ending' if p[2] != 1 else 'full'}")
def case(request, weights_dir):
    dtype, beams, boost = request.param
    t5 = tagger(weights_dir, dtype, beams, boost)
    want = [reference(t5, text) for text in TEXTS]
    return t5, SteppedT5(t5), want, boost


def assert_same(answers, want, t5, indices) -> None:
    decoded = t5.processor.batch_decode([want[i] for i in indices], skip_special_tokens=True)
    got = [answers[i] for i in indices]
    assert [tokens for tokens, _ in got] == [want[i] for i in indices]
    assert [values["TAGS"] for _, values in got] == [clean_tags(raw) for raw in decoded]


def test_all_joining_at_once(case):
    t5, generator, want, _ = case
    answers, steps = run(generator, TEXTS, None)
    assert_same(answers, want, t5, range(len(TEXTS)))
    if t5.settings.num_beams == 1:  # as many steps as the longest answer has tokens
        assert steps == max(len(w) for w in want) - 1
    assert len({tuple(values["TAGS"]) for _, values in answers.values()}) > 1


def test_one_joining_at_every_step(case):
    t5, generator, want, _ = case
    answers, _ = run(generator, TEXTS, 1)
    assert_same(answers, want, t5, range(len(TEXTS)))


def test_lengths_vary_where_the_end_token_is_likely(case):
    t5, generator, want, boost = case
    lengths = [len(w) - 1 for w in want]
    if boost == 1.0:
        assert set(lengths) == {MAX_NEW_TOKENS}  # the plain tiny weights: never the end token
        return
    assert len(set(lengths)) >= 4 and min(lengths) < MAX_NEW_TOKENS // 2
    assert max(lengths) == MAX_NEW_TOKENS
    if t5.settings.num_beams == 1:  # greedy: one step per token, the end token included
        states = generator.encode(TEXTS)
        while not all(generator.ended(s) for s in states):
            generator.step([s for s in states if not generator.ended(s)])
        assert [s.new_tokens for s in states] == lengths


def test_dropping_running_sequences_leaves_the_others_unchanged(case):
    t5, generator, want, _ = case
    drop_at = {i: 1 + i % 5 for i in range(0, len(TEXTS), 3)}
    answers, _ = run(generator, TEXTS, 2, drop_at)
    dropped = {i for i in drop_at if i not in answers}
    assert dropped, "some sequences must have been dropped while running"
    assert_same(answers, want, t5, sorted(set(range(len(TEXTS))) - dropped))


def test_a_dropped_sequence_holds_nothing_and_takes_no_step(weights_dir):
    t5 = tagger(weights_dir, "float32", 8, 1.0)
    generator = SteppedT5(t5)
    (state,) = generator.encode(TEXTS[:1])
    generator.step([state])
    generator.drop(state)
    assert state.cache is None and state.cross is None and state.beams is None
    with pytest.raises(ValueError, match="live sequences"):
        generator.step([state])
    with pytest.raises(ValueError, match="once"):
        generator.finish(state)


@pytest.mark.parametrize("beams", [1, 8])
@pytest.mark.parametrize("setting", [{"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2},
                                     {"min_new_tokens": 3}, {"sequence_bias": [[[1], 4.0]]}],
                         ids=lambda s: next(iter(s)))
def test_logits_processors_of_each_row_alone_give_generates_answers(weights_dir, setting,
                                                                     beams):
    t5 = tagger(weights_dir, "float32", beams, END_BOOST)
    for key, value in setting.items():
        setattr(t5.model.generation_config, key, value)
    generator = SteppedT5(t5)
    assert len(generator.processors) == 1
    texts = TEXTS[:12]
    want = [reference(t5, text) for text in texts]
    answers, _ = run(generator, texts, 1)  # rows of different lengths share every step
    assert_same(answers, want, t5, range(len(texts)))


def test_a_processor_that_reads_more_than_its_row_is_refused(weights_dir):
    t5 = tagger(weights_dir, "float32", 8, 1.0)
    t5.model.generation_config.encoder_repetition_penalty = 1.3  # reads the encoder's input
    with pytest.raises(NotImplementedError, match="cannot apply"):
        SteppedT5(t5)
