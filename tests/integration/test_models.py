"""Every model over real gRPC on a real tritonserver, against the transformers reference."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import reference
from i2tt_server.runners import RUNNERS
from i2tt_server.runners.base import auto_dtype
from i2tt_server.runners.kosmos2 import entities_json
from i2tt_server.text import clean_caption, clean_tags
from triton_calls import (CONFIGS, OUTPUTS, infer, infer_concurrently, settled_statistics,
                          string_input, tolerance, within)


def variant(data: bytes, index: int, salt: int = 0) -> bytes:
    """A distinct image per (index, salt): the response cache must not answer for a test
    that counts executions, so each such test uses a salt of its own."""
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((96 + 8 * index, 64 + 4 * index + salt))
    buffer = io.BytesIO()
    image.rotate(15 * index).save(buffer, "PNG")
    return buffer.getvalue()


def fresh_images(seed_images, salt: int) -> list[bytes]:
    return [variant(seed_images[name], i, salt) for i, name in enumerate(sorted(seed_images) * 2)]


@pytest.fixture(scope="module")
def images(seed_images):
    return fresh_images(seed_images, 0)


def expected(model, weights_dir, device, image=None, prompt=None, text=None) -> dict:
    """What the plain transformers reference answers on ``device`` at the dtype the served
    model picks there (``dtype: auto``: bfloat16 on CPUs with native bfloat16, float32 on
    other CPUs, half precision on GPUs), cleaned as the served model cleans: every output,
    CONFIDENCE too."""
    folder = weights_dir / RUNNERS[model].default_folder()
    on = {"dtype": auto_dtype(device, RUNNERS[model].gpu_dtype), "device": device}
    if model == "blip_caption":
        caption, confidence = reference.blip_caption(folder, image, prompt, **on)
        return {"CAPTION": clean_caption(caption), "CONFIDENCE": confidence}
    if model == "kosmos2_caption":
        caption, entities, confidence = reference.kosmos2_caption(
            folder, image, prompt or "<grounding>An image of", **on)
        return {"CAPTION": caption, "ENTITIES": entities_json(entities), "CONFIDENCE": confidence}
    if model == "trocr_ocr":
        text, confidence = reference.trocr_text(folder, image, **on)
        return {"TEXT": text, "CONFIDENCE": confidence}
    if model == "t5_tags":
        return {"TAGS": clean_tags(reference.t5_raw_tags(folder, text, **on))}
    raise ValueError(model)


# Python models that take one image: every one of them must batch concurrent requests.
IMAGE_MODELS = sorted(name for name, config in CONFIGS.items()
                      if config.backend == "python" and config.input[0].name == "IMAGE")
# ... and those with a hand-written transformers reference (tests/reference.py).
REFERENCE_MODELS = ["blip_caption", "kosmos2_caption", "trocr_ocr"]


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_seed_images_single_and_batched_equal_reference(grpc_client, triton, weights_dir, seed_images,
                                                        model):
    names = sorted(seed_images)
    data = [seed_images[n] for n in names]
    outputs = OUTPUTS[model]  # CONFIDENCE included
    single = [infer(grpc_client, model, outputs, IMAGE=[d])[0] for d in data]
    batched = infer(grpc_client, model, outputs, IMAGE=data)  # one request holding three images
    want = [expected(model, weights_dir, triton.device, image=d) for d in data]
    assert single == within(want, tolerance(model, triton.device))
    assert batched == within(want, tolerance(model, triton.device))
    confidences = [row["CONFIDENCE"] for row in batched]
    assert all(0 < c <= 1 for c in confidences)
    assert len({round(c, 4) for c in confidences}) > 1, "inputs should differ in confidence"
    # a caller that does not ask for CONFIDENCE gets what it got before it existed
    plain = infer(grpc_client, model, IMAGE=data)
    assert plain == [{k: v for k, v in row.items() if k != "CONFIDENCE"} for row in batched]


def test_each_caller_gets_the_outputs_it_named(grpc_client, seed_images):
    image = string_input("IMAGE", [seed_images["example2.png"]])

    def answered(model, names):
        outputs = None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]
        response = grpc_client.infer(model, [image], outputs=outputs).get_response()
        return {o.name: o.datatype for o in response.outputs}

    # naming no outputs asks for every one (Triton fills them in), CONFIDENCE included
    assert answered("trocr_ocr", None) == {"TEXT": "BYTES", "CONFIDENCE": "FP32"}
    assert answered("trocr_ocr", ["TEXT"]) == {"TEXT": "BYTES"}
    assert answered("trocr_ocr", ["CONFIDENCE"]) == {"CONFIDENCE": "FP32"}
    # the ensemble's steps are asked only for what it maps: caption_tags is as it was
    assert answered("caption_tags", None) == {"CAPTION": "BYTES", "TAGS": "BYTES"}


def test_blip_prompts_mixed_in_one_batch(grpc_client, triton, weights_dir, images):
    prompts = ["a photography of", "", "a picture of the", "a photography of", "", "x"]
    requests = [{"IMAGE": [img], "PROMPT": [p] if p else None} for img, p in zip(images, prompts)]
    results = infer_concurrently(grpc_client, "blip_caption", requests, OUTPUTS["blip_caption"])
    want = [expected("blip_caption", weights_dir, triton.device, image=img, prompt=p or None)
            for img, p in zip(images, prompts)]
    assert [r[0] for r in results] == within(want, tolerance("blip_caption", triton.device))


def test_kosmos2_custom_prompt(grpc_client, triton, weights_dir, images):
    got = infer(grpc_client, "kosmos2_caption", OUTPUTS["kosmos2_caption"], IMAGE=[images[0]],
                PROMPT=["<grounding>A photo of"])
    assert got == within([expected("kosmos2_caption", weights_dir, triton.device, image=images[0],
                                   prompt="<grounding>A photo of")],
                         tolerance("kosmos2_caption", triton.device))
    entities = json.loads(got[0]["ENTITIES"])
    assert isinstance(entities, list)


def test_t5_tags_single_and_batched(grpc_client, triton, weights_dir):
    texts = ["a woman with a white shirt and a black background",
             "a photography of a wooden block spelling trivia on a table",
             "a robot head with a circuit in the background"]
    want = [expected("t5_tags", weights_dir, triton.device, text=t) for t in texts]
    assert infer(grpc_client, "t5_tags", TEXT=texts) == want
    assert [infer(grpc_client, "t5_tags", TEXT=[t])[0] for t in texts] == want


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_concurrent_requests_are_batched(grpc_client, triton, seed_images, model):
    images = fresh_images(seed_images, 1)
    before = settled_statistics(triton, model)
    results = infer_concurrently(grpc_client, model, [{"IMAGE": [img]} for img in images],
                                 OUTPUTS[model])
    after = settled_statistics(triton, model)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == len(images)
    assert executions < inferences, f"{executions} executions for {inferences} inferences"
    # batched or alone, the same answers; confidences (ocr_page: its lines') within tolerance
    alone = [infer(grpc_client, model, OUTPUTS[model], IMAGE=[img])[0] for img in images]
    assert [rows[0] for rows in results] == within(alone, tolerance(model, triton.device))


def test_corrupt_image_in_a_batch_fails_alone(grpc_client, triton, seed_images):
    good = fresh_images(seed_images, 2)[:5]
    requests = [{"IMAGE": [img]} for img in good]
    requests.insert(2, {"IMAGE": [b"\x89PNG\r\n\x1a\n but not really"]})
    before = settled_statistics(triton, "blip_caption")
    results = infer_concurrently(grpc_client, "blip_caption", requests)
    after = settled_statistics(triton, "blip_caption")
    errors = [r for r in results if isinstance(r, InferenceServerException)]
    assert len(errors) == 1 and results[2] is errors[0]
    assert errors[0].status() == "StatusCode.INVALID_ARGUMENT"
    assert "IMAGE is not a decodable image" in errors[0].message()
    answers = [r for r in results if not isinstance(r, InferenceServerException)]
    assert answers == [infer(grpc_client, "blip_caption", IMAGE=[img]) for img in good]
    assert int(after["execution_count"]) - int(before["execution_count"]) < len(good)
    assert grpc_client.is_server_ready() and grpc_client.is_model_ready("blip_caption")


@pytest.mark.parametrize("model, inputs, message", [
    ("blip_caption", {"IMAGE": [b""]}, "IMAGE is empty"),
    ("trocr_ocr", {"IMAGE": [b"GIF89a broken"]}, "IMAGE"),
    ("kosmos2_caption", {"IMAGE": [b"\xff\xd8\xff\xe0 truncated jpeg"]}, "IMAGE"),
    ("t5_tags", {"TEXT": [b""]}, "TEXT is empty"),
    ("t5_tags", {"TEXT": [b"\xc3\x28 bad utf-8"]}, "not valid UTF-8"),
    ("caption_tags", {"IMAGE": [b"nope"]}, "not a decodable image"),
])
def test_bad_input_is_invalid_arg_and_server_stays_ready(grpc_client, model, inputs, message):
    for _ in range(2):  # the same bad input again must not come back as a cached "success"
        with pytest.raises(InferenceServerException) as info:
            infer(grpc_client, model, **inputs)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in info.value.message()
    assert grpc_client.is_model_ready(model)


def test_ensemble_tags_are_t5_tags_of_its_caption(grpc_client, images):
    results = infer_concurrently(grpc_client, "caption_tags", [{"IMAGE": [img]} for img in images[:4]])
    assert any(row["TAGS"] for (row,) in results), "tiny weights should tag some captions"
    for (row,), img in zip(results, images):
        assert row["CAPTION"] == infer(grpc_client, "blip_caption", IMAGE=[img])[0]["CAPTION"]
        assert row["TAGS"] == infer(grpc_client, "t5_tags", TEXT=[row["CAPTION"]])[0]["TAGS"]


def test_seed_images_through_the_ensemble(grpc_client, seed_images):
    rows = infer(grpc_client, "caption_tags", IMAGE=list(seed_images.values()))
    assert len(rows) == 3 and all(r["CAPTION"] for r in rows)


def test_identical_request_is_answered_from_the_cache(grpc_client, triton, seed_images):
    image = fresh_images(seed_images, 3)[0]
    before = {m: triton.statistics(m) for m in ("caption_tags", "blip_caption")}
    first = infer(grpc_client, "caption_tags", IMAGE=[image])
    second = infer(grpc_client, "caption_tags", IMAGE=[image])
    after = {m: triton.statistics(m) for m in ("caption_tags", "blip_caption")}
    assert first == second
    hits = (int(after["caption_tags"]["inference_stats"]["cache_hit"]["count"])
            - int(before["caption_tags"]["inference_stats"]["cache_hit"]["count"]))
    executions = (int(after["blip_caption"]["execution_count"])
                  - int(before["blip_caption"]["execution_count"]))
    assert (hits, executions) == (1, 1)
