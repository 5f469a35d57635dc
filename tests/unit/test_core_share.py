"""The CPU cores split among a server's busy model processes (``device.CoreShare``)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from i2tt_server.runners.device import CoreShare


def test_a_process_alone_gets_every_core_and_busy_ones_split_them(tmp_path):
    share = CoreShare(tmp_path, cores=4)
    assert share.busy_processes() == 1  # none busy: counted as this one
    with share.busy():
        assert torch.get_num_threads() == 4 and (tmp_path / str(os.getpid())).exists()
        neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (tmp_path / str(neighbour.pid)).touch()  # a neighbour starts computing
            share.refresh()
            assert torch.get_num_threads() == 2
            with share.busy():  # nested: the same process, counted once
                assert share.busy_processes() == 2
        finally:
            neighbour.kill()
            neighbour.wait()
        share.refresh()  # the neighbour died while busy: its marker is cleared
        assert torch.get_num_threads() == 4 and not (tmp_path / str(neighbour.pid)).exists()
    assert not (tmp_path / str(os.getpid())).exists()  # idle again


def test_a_generate_looks_at_the_share_at_every_step(weights_dir, tmp_path):
    from i2tt_server.runners import T5Tagger

    t5 = T5Tagger.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                   "device": "cpu", "num_beams": "1"})
    before = t5.infer(["a dog on a beach"])

    class Counting(CoreShare):
        refreshes = 0

        def refresh(self):
            Counting.refreshes += 1
            super().refresh()

    t5.share_cores(Counting(tmp_path, cores=2))
    assert t5.infer(["a dog on a beach"]) == before  # the answer does not change
    assert Counting.refreshes >= t5.settings.max_new_tokens
    configured = T5Tagger.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                           "device": "cpu", "torch_threads": "1"})
    configured.share_cores(Counting(tmp_path))
    assert not isinstance(configured.cores, CoreShare)  # its threads were configured
