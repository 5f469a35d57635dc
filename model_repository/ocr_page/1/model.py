"""Triton adapter for ocr_page: the page logic lives in i2tt_server.runners.ocr_page, the
business-logic calls to trocr_ocr in i2tt_server.pages_adapter."""

from i2tt_server.pages_adapter import PageModel
from i2tt_server.runners import PageReader


class TritonPythonModel(PageModel):
    runner_class = PageReader
