"""Per-step metrics to a JSONL file, TensorBoard event files and a console progress line."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from tensorboardX import SummaryWriter

logger = logging.getLogger("ecgjax")


def setup_console_logging(level: int = logging.INFO) -> None:
    """ecgjax's progress lines on stderr; the libraries' own INFO chatter (Orbax logs every
    save step by step through absl) stays at WARNING."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if not any(getattr(h, "_ecgjax", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._ecgjax = True
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class MetricsLog:
    """Writes `{step, name: value, ...}` records; `console()` prints a progress line with ETA."""

    def __init__(self, workdir: str, total_steps: int, *, enabled: bool = True):
        self.total_steps = total_steps
        self.enabled = enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
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
