"""Step-wise BLIP and Kosmos-2 answer as plain ``generate`` does on each image alone (the
static path's answer to it, CONFIDENCE included), with their prompts, whichever sequences
share their steps (prompts of other lengths too), when they join, end (at their very first
token too) or are dropped: each row at its own position."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pytest
from PIL import Image

from i2tt_server.runners import BlipCaptioner, Kosmos2Grounder
from i2tt_server.runners.prompted import PromptedImage
from i2tt_server.step_scheduler import StepScheduler
from reference import shared_step_tolerance
from test_stepped_t5 import run
from testdata import SEED_NAMES, end_at_varied_lengths, seed_bytes

DTYPES = ["float32", "bfloat16"]
MAX_NEW_TOKENS = 16


@dataclass(frozen=True)
class Model:
    runner: type
    prompts: list


# Answers end at varied lengths, some at their first token: testdata.end_at_varied_lengths
MODELS = {
    "blip": Model(BlipCaptioner, [None, "a photography of", "a"]),
    "kosmos2": Model(Kosmos2Grounder, ["<grounding>An image of", "<grounding>",
                                       "<grounding>A photo of a dog sitting on the"]),
}


def crops(count: int = 12) -> list[Image.Image]:
    rng = random.Random(0)
    seeds = [Image.open(io.BytesIO(seed_bytes(n))).convert("RGB") for n in SEED_NAMES]
    images = []
    for i in range(count):
        seed = seeds[i % len(seeds)]
        w, h = seed.size
        cw, ch = int(w * rng.uniform(0.3, 1)), int(h * rng.uniform(0.3, 1))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        images.append(seed.crop((x, y, x + cw, y + ch)))
    return images


def loaded(weights_dir, name: str, dtype: str):
    model = MODELS[name]
    runner = model.runner.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                           "device": "cpu", "dtype": dtype,
                                           "max_new_tokens": str(MAX_NEW_TOKENS)})
    items = [PromptedImage(image, model.prompts[i % len(model.prompts)])
             for i, image in enumerate(crops())]
    end_at_varied_lengths(runner, items)
    return runner, items


@pytest.fixture(scope="module", params=[(n, d) for n in MODELS for d in DTYPES],
            ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, weights_dir):
    runner, items = loaded(weights_dir, *request.param)
    # the static path on each image alone: its answer and the tokens it generated
    want = [runner.infer([item], confidence=True) for item in items]
    return runner, runner.stepped(), items, [w[0] for w in want], \
        [w.generated_tokens for w in want]


def assert_same(answers, want, runner, indices) -> None:
    got = [answers[i][1] for i in indices]
    expected = [want[i] for i in indices]
    keys = [k for k in runner.outputs if k != "CONFIDENCE"]
    assert [{k: g[k] for k in keys} for g in got] == [{k: e[k] for k in keys} for e in expected]
    # A row's logits round by what shares its forward: float32 matrix products by how many
    # rows they take (see test_stepped_trocr.assert_same), and Kosmos-2's attention (torch's
    # scaled_dot_product_attention, whose CPU kernel rounds a bfloat16 row over left-padded
    # keys otherwise: measured 1 of 12 confidences 3.6e-5 apart, exact with eager
    # attention; captions always the same). Within reference.shared_step_tolerance;
    # alone, exactly its own.
    assert [g["CONFIDENCE"] for g in got] == [
        pytest.approx(e["CONFIDENCE"], rel=shared_step_tolerance(str(runner.dtype)[6:]))
        for e in expected]


def test_answers_end_at_varied_lengths_some_at_their_first_token(case):
    *_, lengths = case
    # (the tokens the static path counts: for BLIP, none for a caption that ends at once)
    assert min(lengths) <= 1 and len(set(lengths)) >= 3


def test_all_joining_at_once(case):
    runner, generator, items, want, _ = case
    answers, _ = run(generator, items, None, confidence=True)
    assert_same(answers, want, runner, range(len(items)))


def test_one_joining_at_every_step(case):
    runner, generator, items, want, _ = case
    answers, _ = run(generator, items, 1, confidence=True)
    assert_same(answers, want, runner, range(len(items)))


def test_dropping_running_sequences_leaves_the_others_unchanged(case):
    runner, generator, items, want, lengths = case
    drop_at = {i: lengths[i] // 2 for i in range(len(items)) if lengths[i] >= 3}  # half-way
    answers, _ = run(generator, items, 2, drop_at, confidence=True)
    dropped = {i for i in drop_at if i not in answers}
    assert dropped, "some sequences must have been dropped while running"
    assert_same(answers, want, runner, sorted(set(range(len(items))) - dropped))


def test_prompts_of_other_lengths_share_steps(case):
    _, generator, items, _, _ = case
    states = generator.encode(items)
    assert len({len(s.tokens) for s in states}) == 3
    live = [s for s in states if not generator.ended(s)]
    assert len({len(s.tokens) for s in live}) >= 2
    generator.step(live)  # one forward for all of them


def test_the_scheduler_answers_sequences_that_end_with_their_prompt(case):
    runner, generator, items, want, lengths = case
    with StepScheduler(generator, max_running=4) as scheduler:
        futures = [scheduler.submit(item, confidence=True) for item in items]
        got = {i: (None, future.result(60)) for i, future in enumerate(futures)}
    assert_same(got, want, runner, range(len(items)))
    assert min(lengths) <= 1  # some answered without a step


def test_a_sequence_stepped_alone_has_generates_confidence_exactly(case):
    _, generator, items, want, _ = case
    for i in (0, 1, 2):
        answers, _ = run(generator, [items[i]], None, confidence=True)
        assert answers[0][1] == want[i]
