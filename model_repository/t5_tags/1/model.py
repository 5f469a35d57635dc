"""Triton adapter for t5_tags: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import T5Tagger
from i2tt_server.triton_adapter import TritonModel


class TritonPythonModel(TritonModel):
    runner_class = T5Tagger
