"""ocr_page's page logic without Triton: line finding on rendered pages, the lines limit,
polarity, and assembling TEXT and LINES from the line reader's texts and confidences."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pages
from i2tt_server.errors import InvalidInput
from i2tt_server.lines import find_tessdata
from i2tt_server.page_cleanup import normalise_polarity
from i2tt_server.pages_adapter import PageModel
from i2tt_server.runners import PageReader
from i2tt_server.runners.ocr_page import PageSettings, Reading
from test_triton_adapter import fake_pb_utils, request


def numbered(crops: list[bytes]) -> list[Reading]:
    """A line reader that names each crop by its place in the call, and is less sure of
    each line than of the one before."""
    return [Reading(f"line {i}", 1 / (i + 1)) for i in range(len(crops))]


def test_lines_of_several_pages_are_read_in_one_call_and_split_back():
    calls = []

    def read(crops):
        calls.append(len(crops))
        return numbered(crops)

    reader_once = PageReader(PageSettings(), read_lines=read)
    sent = [pages.small(seed=1), pages.blank(), pages.one_column(seed=2)]
    items = [reader_once.parse_one({"IMAGE": p.png()}) for p in sent]
    results = reader_once.infer(items)
    assert calls == [5 + 12]  # one call for every line of every page
    first, empty, last = results
    assert first["TEXT"] == "\n".join(f"line {i}" for i in range(5))
    assert [line["text"] for line in json.loads(last["LINES"])] == [f"line {i}" for i in range(5, 17)]
    assert [line["confidence"] for line in json.loads(last["LINES"])] == \
        [round(1 / (i + 1), 6) for i in range(5, 17)]  # each line keeps its own reading's
    assert empty == {"TEXT": "", "LINES": "[]"}
    for page, result in zip(sent, results):
        boxes = [tuple(line["box"]) for line in json.loads(result["LINES"])]
        assert len(boxes) == len(page.boxes)
        assert all(pages.iou(a, b) >= 0.5 for a, b in zip(boxes, page.normalised()))


def test_too_many_lines_is_invalid_input_naming_the_limit():
    limited = PageReader(PageSettings(max_lines=11), read_lines=numbered)
    with pytest.raises(InvalidInput, match="12 text lines, over the limit of 11"):
        limited.parse_one({"IMAGE": pages.one_column().png()})
    assert len(PageReader(PageSettings(max_lines=12)).parse_one(
        {"IMAGE": pages.one_column().png()}).lines) == 12


def test_light_text_on_dark_is_turned_dark_on_light():
    grey = np.asarray(normalise_polarity(pages.light_on_dark().image))
    assert np.median(grey) > 200 and grey.min() < 60
    assert np.median(np.asarray(normalise_polarity(pages.one_column().image))) > 200


def test_a_reader_that_loses_lines_is_an_error_not_a_shifted_page():
    broken = PageReader(PageSettings(), read_lines=lambda crops: numbered(crops)[:-1])
    with pytest.raises(RuntimeError, match="4 texts for 5 lines"):
        broken.infer([broken.parse_one({"IMAGE": pages.small().png()})])


def test_missing_tessdata_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="tesseract-ocr-eng"):
        find_tessdata(str(tmp_path))


class Pages(PageModel):
    runner_class = PageReader


def test_adapter_answers_each_page_and_refuses_bad_ones_alone():
    model = Pages()
    config = {"parameters": {"max_lines": {"string_value": "12"}}}
    model.setup(fake_pb_utils(), {"model_config": json.dumps(config)})
    model.runner.read_lines = numbered  # in Triton: business-logic calls to trocr_ocr
    pb = model.pb
    sent = [request(pb, IMAGE=[pages.small().png()]), request(pb, IMAGE=[b"GIF89a broken"]),
            request(pb, IMAGE=[pages.many_short_lines().png()]),
            request(pb, IMAGE=[pages.one_column().png()])]
    ok, bad, too_many, also_ok = model.execute(sent)
    assert bad.error.code == "INVALID_ARG" and "not a decodable image" in bad.error.message
    assert too_many.error.code == "INVALID_ARG"
    assert "200 text lines, over the limit of 12" in too_many.error.message
    assert len(json.loads(ok.outputs()["LINES"][0, 0])) == 5
    assert len(json.loads(also_ok.outputs()["LINES"][0, 0])) == 12
    model.finalize()
