"""The i2tt_client library against a real tritonserver on tiny weights.

Answers are gibberish with random weights, so the tests check structure, order and
equality with plain tritonclient calls (the `reference` fixture), not meaning.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2tt_client import (AsyncI2TTClient, Caption, DeadlineExceededError, Description,
                         Grounding, I2TTClient, InvalidInputError, OCRText, Tags,
                         UnavailableError)
from i2tt_server.launcher import free_port
import tritonclient.grpc as grpcclient
from i2tt_client.inputs import image_bytes
from testdata import configs
from triton_calls import SLOW_SECONDS, TEXTS, direct_infer, same_confidence, settled_statistics


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory, seed_images) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    for name, data in seed_images.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def client(triton):
    with I2TTClient(triton.grpc_url) as c:
        yield c


def junk() -> bytes:
    # Unique, so the server's response cache never answers it from an earlier request.
    return b"not an image " + uuid.uuid4().hex.encode()


def fresh_images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng()
    return [rng.integers(0, 255, (24, 32, 3), np.uint8) for _ in range(count)]


def entities(grounding: Grounding) -> list[dict]:
    return [{"phrase": e.phrase, "span": list(e.span), "boxes": [list(b) for b in e.boxes]}
            for e in grounding.entities]


def test_caption_list_keeps_input_order_and_is_batched(client, triton, seed_dir, reference):
    names = ["human1.png", "example1.jpg", "example2.png", "example1.jpg", "human1.png"]
    results = client.caption([seed_dir / n for n in names])
    assert all(isinstance(r, Caption) for r in results)
    assert [r.caption for r in results] == [reference["blip_caption"][n]["CAPTION"] for n in names]
    assert len({r.caption for r in results}) > 1, "distinct images should caption differently"
    assert [r.confidence for r in results] == [
        same_confidence(reference["blip_caption"][n], "blip_caption", triton.device) for n in names]
    assert all(0 < r.confidence <= 1 for r in results)

    # Images the response cache has not seen, so every request reaches the batcher.
    images = fresh_images(5)
    before = settled_statistics(triton, "blip_caption")
    results = client.caption(images)
    after = settled_statistics(triton, "blip_caption")
    with grpcclient.InferenceServerClient(triton.grpc_url) as direct:
        expected = [direct_infer(direct, "blip_caption", "IMAGE", image_bytes(i))["CAPTION"]
                    for i in images]
    assert [r.caption for r in results] == expected
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == len(images)
    assert executions < inferences, "concurrent requests should share server batches"


def test_every_image_input_kind_gives_the_same_caption(client, seed_dir, seed_images,
                                                       image_http, reference):
    data = seed_images["example1.jpg"]
    pil = Image.open(io.BytesIO(data))
    kinds = {
        "str path": str(seed_dir / "example1.jpg"),
        "Path": seed_dir / "example1.jpg",
        "URL": image_http + "example1.jpg",
        "bytes": data,
        "PIL": pil,
        "numpy uint8": np.asarray(pil.convert("RGB")),
        "numpy float": np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0,
        "file object": io.BytesIO(data),
    }
    results = client.caption(list(kinds.values()))
    expected = reference["blip_caption"]["example1.jpg"]["CAPTION"]
    assert {kind: r.caption for kind, r in zip(kinds, results)} == {k: expected for k in kinds}


def test_single_input_gives_a_single_result(client, triton, seed_images, reference):
    result = client.caption(seed_images["example2.png"])
    want = reference["blip_caption"]["example2.png"]
    assert result == Caption(want["CAPTION"], same_confidence(want, "blip_caption", triton.device))
    assert json.loads(result.to_json()) == {"caption": result.caption,
                                            "confidence": result.confidence}


def test_ground_matches_direct_calls(client, triton, seed_dir, reference):
    names = ["human1.png", "example1.jpg"]
    results = client.ground([seed_dir / n for n in names])
    for name, result in zip(names, results):
        want = reference["kosmos2_caption"][name]
        assert isinstance(result, Grounding)
        assert result.caption == want["CAPTION"]
        assert entities(result) == want["ENTITIES"]
        assert result.confidence == same_confidence(want, "kosmos2_caption", triton.device)
        assert json.loads(result.to_json())["caption"] == result.caption


def test_ocr_matches_direct_calls(client, triton, seed_dir, reference):
    names = ["example2.png", "example1.jpg"]
    results = client.ocr([str(seed_dir / n) for n in names])
    want = [reference["trocr_ocr"][n] for n in names]
    assert results == [OCRText(w["TEXT"], same_confidence(w, "trocr_ocr", triton.device))
                       for w in want]
    assert results[0].confidence != results[1].confidence


def test_tags_match_direct_calls_without_padding(client, reference):
    results = client.tags(list(TEXTS))
    assert results == [Tags(reference["t5_tags"][t]["TAGS"]) for t in TEXTS]
    assert all("" not in r.tags for r in results)
    assert client.tags(TEXTS[0]) == results[0]


def test_describe_matches_the_ensemble(client, seed_dir, reference):
    names = ["example1.jpg", "human1.png"]
    results = client.describe((seed_dir / n for n in names))  # any iterable, even a generator
    assert results == [Description(reference["caption_tags"][n]["CAPTION"],
                                   reference["caption_tags"][n]["TAGS"]) for n in names]
    assert results[0].caption == reference["blip_caption"]["example1.jpg"]["CAPTION"]


def test_per_item_errors_keep_the_other_results(client, seed_images, image_http, reference):
    inputs = [seed_images["example1.jpg"], junk(), "/no/such/file.png",
              image_http + "missing.png", np.zeros((2, 2, 7), np.uint8)]
    results = client.caption(inputs, errors="return")
    assert results[0].caption == reference["blip_caption"]["example1.jpg"]["CAPTION"]
    assert all(isinstance(r, InvalidInputError) for r in results[1:])
    assert [r.index for r in results[1:]] == [1, 2, 3, 4]
    assert "not a decodable image" in results[1].reason and results[1].model == "blip_caption"
    assert "no such file" in results[2].reason
    assert "HTTP 404" in results[3].reason
    assert "not an image" in results[4].reason

    with pytest.raises(InvalidInputError) as raised:
        client.caption([seed_images["example1.jpg"], junk()])
    assert raised.value.index == 1
    assert raised.value.results[0] == results[0], "raising must not lose the good results"


def test_url_limits(client, image_http, seed_images):
    with I2TTClient(client.server, max_url_bytes=1000, url_timeout=SLOW_SECONDS / 6) as small:
        results = small.caption([image_http + "example1.jpg", image_http + "nolength/example1.jpg",
                                 image_http + "slow/example1.jpg"], errors="return")
    assert len(seed_images["example1.jpg"]) > 1000
    assert "limit" in results[0].reason and "limit" in results[1].reason
    assert "timed out" in results[2].reason


def test_deadline_exceeded(client):
    # The test server holds requests up to 100 ms to batch them: 1 ms cannot be met. A
    # fresh image, since the response cache could answer a known one at once.
    fresh = np.random.default_rng().integers(0, 255, (32, 32, 3), np.uint8)
    with pytest.raises(DeadlineExceededError):
        client.caption(fresh, timeout=0.001)


def test_unavailable_server_is_retryable_and_retried(seed_images):
    with I2TTClient(f"127.0.0.1:{free_port()}", retries=2, retry_backoff=0.01) as dead:
        with pytest.raises(UnavailableError) as raised:
            dead.caption(seed_images["example1.jpg"])
        assert raised.value.retryable and raised.value.attempts == 3
        assert dead.is_live() is False
        health = dead.health()
        assert not health.live and not health.ok and health.error


def test_health(client):
    health = client.health()
    assert health.live and health.ready and health.ok
    assert health.version and health.version[0].isdigit()
    assert {m.name for m in health.models} == set(configs())
    assert client.is_live() and client.is_ready() and client.is_model_ready("t5_tags")
    assert client.is_model_ready("no_such_model") is False
    assert json.loads(health.to_json())["ok"] is True


def test_headers_progress_and_on_result(triton, seed_images, reference, capsys):
    seen = []
    with I2TTClient(triton.grpc_url, headers={"authorization": "Bearer test"}, timeout=120,
                    max_in_flight=2) as c:
        results = c.caption([seed_images["example1.jpg"], junk(), seed_images["example2.png"]],
                            errors="return", progress=True,
                            on_result=lambda i, r: seen.append((i, type(r).__name__)))
    assert sorted(seen) == [(0, "Caption"), (1, "InvalidInputError"), (2, "Caption")]
    assert results[2].caption == reference["blip_caption"]["example2.png"]["CAPTION"]
    assert "3/3" in capsys.readouterr().err


def test_async_client(triton, seed_dir, seed_images, reference):
    async def main():
        async with AsyncI2TTClient(triton.grpc_url) as c:
            health = await c.health()
            captions, described, single = await asyncio.gather(
                c.caption([seed_dir / "human1.png", junk(), seed_dir / "example1.jpg"],
                          errors="return"),
                c.describe([seed_images["example1.jpg"]]),
                c.tags(TEXTS[1]))
            with pytest.raises(InvalidInputError):
                await c.ocr([junk()])
            return health, captions, described, single

    health, captions, described, single = asyncio.run(main())
    assert health.ok
    assert captions[0].caption == reference["blip_caption"]["human1.png"]["CAPTION"]
    assert isinstance(captions[1], InvalidInputError) and captions[1].index == 1
    assert captions[2].caption == reference["blip_caption"]["example1.jpg"]["CAPTION"]
    assert described[0].tags == reference["caption_tags"]["example1.jpg"]["TAGS"]
    assert single == Tags(reference["t5_tags"][TEXTS[1]]["TAGS"])


def test_generic_infer_reaches_every_served_model(client, triton, seed_images, reference):
    # Any model in the repository is callable without a typed method of its own.
    for name, config in configs().items():
        inputs = {i.name: seed_images["example1.jpg"] if i.name == "IMAGE" else TEXTS[0]
                  for i in config.input if not i.optional}
        got = client.infer(name, inputs)
        assert set(got) == {o.name for o in config.output}, name
    assert client.infer("t5_tags", {"TEXT": TEXTS[0]}) == {"TAGS": reference["t5_tags"][TEXTS[0]]["TAGS"]}
    got = client.infer("kosmos2_caption", [{"IMAGE": seed_images["human1.png"], "PROMPT": None}])
    want = reference["kosmos2_caption"]["human1.png"]
    # naming no outputs, it is sent every one, CONFIDENCE (a float) too
    assert got == [{"CAPTION": want["CAPTION"], "ENTITIES": json.dumps(want["ENTITIES"]),
                    "CONFIDENCE": same_confidence(want, "kosmos2_caption", triton.device)}]
    with pytest.raises(InvalidInputError, match="dict of input name"):
        client.infer("t5_tags", ["not a dict"])
