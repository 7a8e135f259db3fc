"""configs/cinc2017.py: 001's CinC 2017 protocol as one probe command (benchmarks/cinc2017.md)."""
from __future__ import annotations

import numpy as np
import pytest

from configs import cinc2017
from ecgjax.eval.report import read_runs
import entry_points


def test_the_protocol_is_one_command(cinc_store, tmp_path):
    """The recipe from scratch on a CinC-layout store: lead I, the ResNet18 of 16 channels that
    configs/cl_resnet.py pretrains, windows of cinc2017.WINDOW_S, every epoch run, the challenge's F1
    with its CI beside macro F1."""
    result = entry_points.run("experiments/probe.py", "--config=configs/cinc2017.py:runlocal",
                              f"--config.data.store={cinc_store.path}", "--config.seeds=1",
                              "--config.optim.epochs=2", "--config.bootstrap=5", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = read_runs(tmp_path)
    assert run.task == "cinc2017" and run.mode == "supervised" and run.extra["recipe"] == ["finetune"]
    assert run.cell["depth"] == "resnet18" and run.cell["width"] == 16 and run.extra["leads"] == ["I"]
    assert run.extra["window_s"] == cinc2017.WINDOW_S   # the fixture's records are 9-30 s
    assert run.extra["epochs_run"] == {"finetune": 2}     # --config.optim.epochs=2, no early stop
    assert run.metrics["challenge_f1"] == pytest.approx(np.mean([run.metrics[f"f1/{c}"] for c in "NAO"]))
    assert {"macro_f1", "challenge_f1"} <= set(run.ci)
