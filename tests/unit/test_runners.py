"""The model logic without Triton: batched answers equal the per-item reference."""

import io
import json

import pytest
from PIL import Image

import reference
from i2tt_server.errors import InvalidInput
from i2tt_server.runners import BlipCaptioner, Kosmos2Grounder, T5Tagger, TrOCRReader
from i2tt_server.runners.base import auto_dtype, cpu_flags
from i2tt_server.runners.kosmos2 import entities_json

# Parity holds at each dtype against the reference at that dtype: float32, and bfloat16 as
# `dtype: auto` picks it on CPUs with native bfloat16 (and as T5 runs on GPUs). On a CPU
# without it bfloat16 is emulated: slower, still exact against an equally emulated reference.
DTYPES = ["float32", "bfloat16"]


def assert_confidences(got: list[float], want: list[float], dtype: str) -> None:
    """Each confidence within the tolerance of the reference's, a probability, and not the
    same for every input (tiny random weights still tell inputs apart)."""
    assert got == pytest.approx(want, rel=reference.confidence_tolerance(dtype))
    assert all(0 < c <= 1 for c in got)
    assert len({round(c, 4) for c in got}) > 1, "confidences should differ between inputs"


def png(color, size=(48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(seed_images):
    return [*seed_images.values(), png((255, 0, 0)), png((0, 0, 255))]


def runner(cls, weights_dir, **params):
    """A runner on the CPU (explicitly: the tests compare with a reference on the CPU)."""
    return cls.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                "device": "cpu", **params})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beams", [1, 3])  # tiny BLIP's rows end at different steps
def test_blip_groups_prompts_and_matches_reference(weights_dir, images, dtype, beams):
    blip = runner(BlipCaptioner, weights_dir, dtype=dtype, num_beams=str(beams))
    assert str(blip.model.dtype) == f"torch.{dtype}"
    prompts = [None, "a photography of", None, "a picture of the", "a photography of"]
    items = [item for data, prompt in zip(images, prompts)
             for item in blip.parse({"IMAGE": [data], "PROMPT": [prompt.encode()] if prompt else None})]
    results = blip.infer(items, confidence=True)
    captions = [r["CAPTION"] for r in results]
    expected = [reference.blip_caption(weights_dir / "blip-large", d, p, dtype=dtype, num_beams=beams)
                for d, p in zip(images, prompts)]
    assert captions == [caption for caption, _ in expected]
    assert len(set(captions)) > 1, "tiny weights must answer differently for different inputs"
    assert_confidences([r["CONFIDENCE"] for r in results], [c for _, c in expected], dtype)
    assert [r["CAPTION"] for r in blip.infer(items)] == captions  # the same without it


@pytest.mark.parametrize("dtype", DTYPES)
def test_kosmos2_matches_reference(weights_dir, images, dtype):
    kosmos = runner(Kosmos2Grounder, weights_dir, dtype=dtype)
    items = [item for data in images for item in kosmos.parse({"IMAGE": [data], "PROMPT": None})]
    results = kosmos.infer(items, confidence=True)
    confidences = []
    for data, result in zip(images, results):
        caption, entities, confidence = reference.kosmos2_caption(weights_dir / "kosmos-2", data,
                                                                  dtype=dtype)
        assert result["CAPTION"] == caption
        assert json.loads(result["ENTITIES"]) == json.loads(entities_json(entities))
        confidences.append(confidence)
    assert len({r["CAPTION"] for r in results}) > 1
    assert_confidences([r["CONFIDENCE"] for r in results], confidences, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beams", [1, 3])  # greedy scores, and the chosen beam's
def test_trocr_matches_reference(weights_dir, images, dtype, beams):
    trocr = runner(TrOCRReader, weights_dir, dtype=dtype, num_beams=str(beams))
    results = trocr.infer([trocr.image(d) for d in images], confidence=True)
    expected = [reference.trocr_text(weights_dir / "trocr-printed", d, dtype=dtype, num_beams=beams)
                for d in images]
    texts = [r["TEXT"] for r in results]
    assert texts == [text for text, _ in expected]
    assert len(set(texts)) > 1
    assert_confidences([r["CONFIDENCE"] for r in results], [c for _, c in expected], dtype)


def test_confidence_is_computed_only_when_asked(weights_dir, images):
    trocr = runner(TrOCRReader, weights_dir)
    items = [trocr.image(d) for d in images[:2]]
    plain = trocr.infer(items)
    assert all(set(r) == {"TEXT"} for r in plain)
    assert [r["TEXT"] for r in trocr.infer(items, confidence=True)] == [r["TEXT"] for r in plain]


@pytest.mark.parametrize("dtype", DTYPES)
def test_t5_matches_reference_and_truncates_long_text(weights_dir, dtype):
    t5 = runner(T5Tagger, weights_dir, dtype=dtype)
    texts = ["a woman with a white shirt and a black background",
             "a photography of a wooden block spelling trivia on a table",
             "two dogs " * 2000]  # far past 512 tokens: truncated, not refused
    tags = [r["TAGS"] for r in t5.infer(texts)]
    from i2tt_server.text import clean_tags
    assert tags == [clean_tags(reference.t5_raw_tags(weights_dir / "t5-tags", t, dtype=dtype)) for t in texts]
    assert len({tuple(t) for t in tags}) > 1


def test_parse_rejects_bad_items(weights_dir):
    t5 = runner(T5Tagger, weights_dir)
    with pytest.raises(InvalidInput, match="TEXT is empty"):
        t5.parse({"TEXT": [b""]})
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        t5.parse({"TEXT": [b"\xff\xfe"]})
    with pytest.raises(InvalidInput, match="TEXT is required"):
        t5.parse({"TEXT": None})
    blip = runner(BlipCaptioner, weights_dir)
    with pytest.raises(InvalidInput, match="PROMPT has 2 values but IMAGE has 1"):
        blip.parse({"IMAGE": [png((0, 0, 0))], "PROMPT": [b"a", b"b"]})


def test_kosmos2_entities_json():
    from transformers.models.kosmos2.processing_kosmos2 import (
        clean_text_and_extract_entities_with_bboxes)

    raw = ("<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>"
           "<patch_index_0863></object> warming himself by<phrase> a fire</phrase><object>"
           "<patch_index_0005><patch_index_0911></object>.")
    caption, entities = clean_text_and_extract_entities_with_bboxes(raw)
    assert caption == "An image of a snowman warming himself by a fire."
    decoded = json.loads(entities_json(entities))
    assert decoded[0] == {"phrase": "a snowman", "span": [12, 21],
                          "boxes": [[0.390625, 0.046875, 0.984375, 0.828125]]}
    assert caption[slice(*decoded[1]["span"])] == decoded[1]["phrase"] == "a fire"
    assert all(0 <= v <= 1 for e in decoded for box in e["boxes"] for v in box)


def test_auto_dtype_follows_the_device_and_the_cpu_flags():
    assert auto_dtype("cuda", "float16") == "float16"
    assert auto_dtype("cuda", "bfloat16") == "bfloat16"  # T5 overflows in float16
    assert auto_dtype("cpu", "float16", frozenset({"avx2", "avx512_bf16"})) == "bfloat16"
    assert auto_dtype("cpu", "float16", frozenset({"avx2", "amx_bf16", "amx_tile"})) == "bfloat16"
    assert auto_dtype("cpu", "float16", frozenset({"avx2", "avx512f"})) == "float32"
    assert auto_dtype("mps", "float16", frozenset({"avx512_bf16"})) == "float32"


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: none\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_auto_dtype_on_this_machine_loads_the_model_in_it(weights_dir):
    t5 = runner(T5Tagger, weights_dir)  # dtype auto
    assert str(t5.model.dtype) == f"torch.{auto_dtype('cpu', 'bfloat16')}"
    assert str(runner(T5Tagger, weights_dir, dtype="float32").model.dtype) == "torch.float32"


@pytest.mark.parametrize("cls", [BlipCaptioner, Kosmos2Grounder])
def test_prompts_longer_than_the_model_takes_are_refused_in_parse(cls, weights_dir, images):
    model = runner(cls, weights_dir)
    image = images[0]
    words = 1
    while model.count_tokens(" ".join(["dog"] * (words + 1))) <= model.max_prompt_tokens:
        words += 1
    longest = " ".join(["dog"] * words)
    (item,) = model.parse({"IMAGE": [image], "PROMPT": [longest.encode()]})
    assert model.infer([item])[0]["CAPTION"] is not None  # the longest allowed one runs
    for prompt in (longest + " dog", "a photography of " * 3000):  # ~50,000 characters
        with pytest.raises(InvalidInput, match=r"PROMPT is \d+ tokens long; .* at most"):
            model.parse({"IMAGE": [image], "PROMPT": [prompt.encode()]})
    if cls is BlipCaptioner:  # its limit: the text positions the caption leaves
        config = model.model.config.text_config
        assert model.max_prompt_tokens == config.max_position_embeddings - model.settings.max_new_tokens
    else:
        assert model.max_prompt_tokens <= model.settings.max_prompt_tokens


def test_t5_cuts_huge_text_before_tokenising(weights_dir):
    tagger = runner(T5Tagger, weights_dir)
    (text,) = tagger.parse({"TEXT": [b"word " * 20_000]})
    assert len(text) == tagger.settings.max_input_tokens * 32
