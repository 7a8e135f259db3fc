"""Per-step metrics to a JSONL file, TensorBoard event files and a console progress line."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from tensorboardX import SummaryWriter

logger = logging.getLogger("ecgjax")


def setup_console_logging(level: int = logging.INFO, *, process_index: int = 0, process_count: int = 1) -> None:
    """ecgjax's progress lines on stderr; the libraries' own INFO chatter (Orbax logs every
    save step by step through absl) stays at WARNING.

    In a run of several processes only process 0 logs progress; the others log their own warnings
    and errors, each line marked with the process that wrote it.
    """
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = next((h for h in logger.handlers if getattr(h, "_ecgjax", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._ecgjax = True
        logger.addHandler(handler)
    where = f"[process {process_index}/{process_count}] " if process_count > 1 else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {where}%(message)s", "%H:%M:%S"))
    logger.setLevel(level if process_index == 0 else max(level, logging.WARNING))
    logger.propagate = False


def drop_steps_after(jsonl_path: str, last_step: int) -> int:
    """Removes the records of steps after `last_step` from a metrics.jsonl (atomically: a temporary
    file, then os.replace); returns how many were removed. A resumed run replays those steps, so
    each step keeps one line. A line cut short by a kill mid-write is removed too."""
    if not os.path.isfile(jsonl_path):
        return 0
    with open(jsonl_path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):  # not a whole record
            continue
        if step <= last_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept == lines:
        return 0
    temporary = jsonl_path + ".tmp"
    with open(temporary, "w") as f:
        f.writelines(kept)
    os.replace(temporary, jsonl_path)
    return len(lines) - len(kept)


class MetricsLog:
    """Writes `{step, name: value, ...}` records; `console()` prints a progress line with ETA.

    `start_step` is the step training resumes from (0 for a fresh run): records of later steps left
    in metrics.jsonl by an interrupted run are dropped, as those steps run again. The TensorBoard
    event files keep both, as they do for any restarted run.
    """

    def __init__(self, workdir: str, total_steps: int, *, enabled: bool = True, start_step: int = 0):
        self.total_steps = total_steps
        self.enabled = enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        if enabled:
            dropped = drop_steps_after(self.jsonl_path, start_step)
            if dropped:
                logger.info("metrics.jsonl: dropped %d records after step %d (they run again)", dropped, start_step)
        self._jsonl = open(self.jsonl_path, "a") if enabled else None
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if enabled else None
        self._start_time = None
        self._start_step = None

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in record.items():
            if name != "step":
                self._tb.add_scalar(name, value, step)

    def console(self, step: int, metrics: dict) -> None:
        now = time.time()
        if self._start_time is None:
            self._start_time, self._start_step = now, step
        done = step - self._start_step
        eta = (now - self._start_time) / done * (self.total_steps - step) if done > 0 else float("nan")
        parts = " ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
        logger.info("step %d/%d (%.0f%%) eta %s | %s", step, self.total_steps,
                     100.0 * step / max(self.total_steps, 1), _format_seconds(eta), parts)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def _format_seconds(seconds: float) -> str:
    if seconds != seconds:  # NaN before the first measured interval
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
