"""Triton adapter for kosmos2_caption: the model logic lives in i2tt_server.runners."""

from i2tt_server.runners import Kosmos2Grounder
from i2tt_server.triton_adapter import TritonModel


class TritonPythonModel(TritonModel):
    runner_class = Kosmos2Grounder
