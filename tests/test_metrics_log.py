"""metrics.jsonl after a resume: one line per step (the replayed steps replace the killed run's)."""
from __future__ import annotations

import json

from ecgjax.train.metrics_log import MetricsLog, drop_steps_after


def _steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in open(path)]


def test_resuming_drops_the_steps_that_run_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    log = MetricsLog(str(tmp_path), 8, start_step=3)  # checkpoint at 3; 4, 5 and the cut-off 6 run again
    for step in range(4, 9):
        log.write(step, {"loss": 0.5})
    log.close()
    assert _steps(path) == list(range(1, 9))
    assert [json.loads(line)["loss"] for line in open(path)][2:4] == [1.0 / 3, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tensorboard"]  # no temporary left


def test_drop_steps_after_leaves_a_consistent_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s}) + "\n" for s in (1, 2))
    path.write_text(text)
    before = path.stat().st_mtime_ns
    assert drop_steps_after(str(path), 2) == 0 and path.read_text() == text and path.stat().st_mtime_ns == before
    assert drop_steps_after(str(tmp_path / "absent.jsonl"), 0) == 0
    assert drop_steps_after(str(path), 0) == 2 and path.read_text() == ""  # a fresh start replays everything


def test_other_processes_leave_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 5}) + "\n")
    MetricsLog(str(tmp_path), 8, enabled=False, start_step=2).close()
    assert _steps(path) == [5]
