"""Step-wise BLIP captions as plain ``generate`` does on each image alone (its CAPTION,
and its CONFIDENCE as the static path computes it), with or without a prompt, whichever
sequences share its steps (prompts of other lengths too), when they join, end (at their
very first token too) or are dropped: each row at its own position."""

from __future__ import annotations

import io
import random

import pytest
import torch
from PIL import Image

from i2tt_server.runners import BlipCaptioner
from i2tt_server.runners.prompted import PromptedImage
from i2tt_server.runners.stepped_blip import SteppedBlip
from test_stepped_t5 import run
from testdata import SEED_NAMES, seed_bytes

DTYPES = ["float32", "bfloat16"]
MAX_NEW_TOKENS = 16
# The tiny random BLIP rarely ends on its own; its text decoder's sequence bias raising
# the end token ([SEP]) by this much ends ITEMS' captions after 1 to 15 tokens (measured:
# 1, 3, 4, 6, 11, 12 and 15 in float32; the first token ends those with the prompt "a").
END_BIAS = 0.45
PROMPTS = [None, "a photography of", "a"]


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


ITEMS = [PromptedImage(image, PROMPTS[i % len(PROMPTS)]) for i, image in enumerate(crops())]


def captioner(weights_dir, dtype: str) -> BlipCaptioner:
    blip = BlipCaptioner.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                          "device": "cpu", "dtype": dtype,
                                          "max_new_tokens": str(MAX_NEW_TOKENS)})
    end = blip.model.config.text_config.sep_token_id
    blip.model.text_decoder.generation_config.sequence_bias = [[[end], END_BIAS]]
    return blip


def reference(blip: BlipCaptioner, item: PromptedImage) -> tuple[list[int], dict]:
    """generate on this one image (the static path, alone): its tokens and answer."""
    text = {"text": [item.prompt]} if item.prompt else {}
    batch = blip.to_device(blip.processor(images=[item.image], return_tensors="pt", **text))
    tokens = blip.generate(blip.model, **batch).sequences[0].tolist()
    return tokens, blip.infer([item], confidence=True)[0]


@pytest.fixture(scope="module", params=DTYPES)
def case(request, weights_dir):
    blip = captioner(weights_dir, request.param)
    return blip, SteppedBlip(blip), [reference(blip, item) for item in ITEMS]


def assert_same(answers, want, blip, indices) -> None:
    got = [answers[i] for i in indices]
    assert [tokens for tokens, _ in got] == [want[i][0] for i in indices]
    assert [values["CAPTION"] for _, values in got] == [want[i][1]["CAPTION"] for i in indices]
    confidences = [values["CONFIDENCE"] for _, values in got]
    expected = [want[i][1]["CONFIDENCE"] for i in indices]
    if blip.dtype == torch.float32:
        # float32 matrix products round by how many rows they take at once (see
        # test_stepped_trocr.assert_same): a few ulps; bfloat16's kernels do not
        assert confidences == pytest.approx(expected, rel=1e-5)
    else:
        assert confidences == expected


def lengths(blip, want) -> list[int]:
    return [len(tokens) - len(SteppedBlip(blip).prompt_tokens(item.prompt))
            for (tokens, _), item in zip(want, ITEMS)]


def test_captions_end_at_varied_lengths_some_at_their_first_token(case):
    blip, _, want = case
    new = lengths(blip, want)
    assert min(new) == 1 and max(new) >= 12 and len(set(new)) >= 4


def test_all_joining_at_once(case):
    blip, generator, want = case
    answers, _ = run(generator, ITEMS, None, confidence=True)
    assert_same(answers, want, blip, range(len(ITEMS)))


def test_one_joining_at_every_step(case):
    blip, generator, want = case
    answers, _ = run(generator, ITEMS, 1, confidence=True)
    assert_same(answers, want, blip, range(len(ITEMS)))


def test_dropping_running_captions_leaves_the_others_unchanged(case):
    blip, generator, want = case
    drop_at = {i: 2 + i % 3 for i in range(0, len(ITEMS), 2)}
    answers, _ = run(generator, ITEMS, 2, drop_at, confidence=True)
    dropped = {i for i in drop_at if i not in answers}
    assert dropped, "some captions must have been dropped while running"
    assert_same(answers, want, blip, sorted(set(range(len(ITEMS))) - dropped))


def test_prompts_of_other_lengths_share_steps(case):
    _, generator, _ = case
    states = generator.encode(ITEMS[:3])
    assert len({len(s.tokens) for s in states}) == 3
    live = [s for s in states if not generator.ended(s)]
    assert len(live) >= 2
    generator.step(live)  # one forward for all of them


def test_the_scheduler_answers_captions_that_end_with_their_prompt(case):
    from i2tt_server.step_scheduler import StepScheduler

    blip, generator, want = case
    with StepScheduler(generator, max_running=4) as scheduler:
        futures = [scheduler.submit(item, confidence=True) for item in ITEMS]
        got = [future.result(60) for future in futures]
    assert [g["CAPTION"] for g in got] == [w[1]["CAPTION"] for w in want]
    assert any(n == 1 for n in lengths(blip, want))  # answered without a step
