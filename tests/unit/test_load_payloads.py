"""The load test's payloads cover every served model (without locust or a server)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from i2tt_server.runners import RUNNERS
from testdata import configs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import payloads  # noqa: E402


def test_every_model_in_the_repository_has_a_load_task():
    assert set(payloads.MODELS) == set(configs())
    built = payloads.Payloads()
    rng = random.Random(0)
    for name, config in configs().items():
        sent = {tensor.name() for _ in range(20) for tensor in built.request(name, rng)}
        required = {i.name for i in config.input if not i.optional}
        assert required <= sent <= {i.name for i in config.input}, name


def test_line_models_are_the_runners_that_read_one_line():
    assert payloads.LINE_MODELS == {r.name for r in RUNNERS.values() if r.sample == "line"}


def test_page_models_are_the_runners_that_read_pages():
    assert payloads.PAGE_MODELS == {r.name for r in RUNNERS.values() if r.sample == "page"}


def test_ocr_page_gets_pages_with_lines_to_find():
    from i2tt_server.runners import PageReader
    from i2tt_server.runners.ocr_page import PageSettings

    reader = PageReader(PageSettings())
    pages = payloads.Payloads().pages
    assert [len(reader.parse_one({"IMAGE": page}).lines) for page in pages] == \
        [4 * (1 + n % 2) + n * (1 + n % 2) for n in range(len(pages))]
