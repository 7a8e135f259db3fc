"""What is done of each cell, on disk (cells/<name>/status.json), and the sweep.md table of it."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import threading
from collections.abc import Sequence

import ml_collections

from ecgjax import markdown
from ecgjax.sweep.grid import PRETRAIN_STAGE, Cell, cell_stages, grid_cells
from ecgjax.sweep.selection import job_cells

STATUS_FILE = "status.json"
# Cell and stage states.
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


def cell_dir(workdir, cell: Cell) -> pathlib.Path:
    return pathlib.Path(workdir) / "cells" / cell.name


def write_atomically(path: pathlib.Path, text: str) -> None:
    """A temporary file of this process, then os.replace: readers see the old or the new file whole,
    even with several jobs writing, and a kill mid-write leaves the previous file intact."""
    tmp = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclasses.dataclass
class CellStatus:
    """What is done of one cell, kept in cells/<name>/status.json.

    stages: stage -> {'state': running|done|failed, 'seconds': float, 'result': ..., 'error': ...}.
    error: the failure of the last attempt ({'stage', 'type', 'message', 'reason'}) or None.
    """

    cell: Cell
    stages: dict = dataclasses.field(default_factory=dict)
    error: dict | None = None
    attempts: int = 0

    def stage_state(self, stage: str) -> str:
        return self.stages.get(stage, {}).get("state", PENDING)

    def state(self, stages: Sequence[str]) -> str:
        """done when every stage is; failed when the last attempt failed; else pending/running."""
        if all(self.stage_state(s) == DONE for s in stages):
            return DONE
        if self.error is not None:
            return FAILED
        return RUNNING if any(self.stage_state(s) == RUNNING for s in stages) else PENDING

    def to_json(self) -> dict:
        return dict(name=self.cell.name, cell=dataclasses.asdict(self.cell), stages=self.stages,
                    error=self.error, attempts=self.attempts)

    @classmethod
    def load(cls, workdir, cell: Cell) -> CellStatus:
        path = cell_dir(workdir, cell) / STATUS_FILE
        if not path.is_file():
            return cls(cell)
        data = json.loads(path.read_text())
        return cls(cell, stages=data.get("stages", {}), error=data.get("error"),
                   attempts=int(data.get("attempts", 0)))

    def save(self, workdir) -> None:
        path = cell_dir(workdir, self.cell) / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(self.to_json(), indent=2, sort_keys=True, default=str))


def load_statuses(config: ml_collections.ConfigDict, workdir, selection: str | None = None,
                  shard: tuple[int, int] | None = None) -> list[CellStatus]:
    """The statuses of `selection.job_cells(config, selection, shard)` as they are on disk."""
    return [CellStatus.load(workdir, c) for c in job_cells(config, selection, shard)]


# ----------------------------------------------------------------------------- sweep.md

def _stage_summary(status: CellStatus, stages: Sequence[str]) -> str:
    states = [status.stage_state(s) for s in stages]
    if FAILED in states:
        return FAILED
    done = states.count(DONE)
    return DONE if done == len(states) else (PENDING if done == 0 and RUNNING not in states
                                             else f"{done}/{len(states)}")


def status_table(config: ml_collections.ConfigDict, statuses: Sequence[CellStatus]) -> str:
    """Markdown: index, name, state, pretraining, each probe mode (done / k of n tasks / failed), reason."""
    index = {c: i for i, c in enumerate(grid_cells(config))}
    modes = list(config.probe.modes)
    stages = cell_stages(config)
    header = ["#", "Cell", "State", "Pretrain", *[m.capitalize() for m in modes], "Reason"]
    rows = []
    for s in statuses:
        per_mode = [_stage_summary(s, [f"{m}:{t}" for t in config.probe.tasks]) for m in modes]
        reason = f"{s.error['stage']}: {s.error['reason']}" if s.error else ""
        rows.append([index.get(s.cell, "?"), s.cell.name, s.state(stages),
                     _stage_summary(s, [PRETRAIN_STAGE]), *per_mode, reason.replace("|", "/")])
    return markdown.table(header, rows)


def status_counts(config: ml_collections.ConfigDict, statuses: Sequence[CellStatus]) -> str:
    """'81 cells: 3 done, 1 failed, 0 running, 77 pending'."""
    stages = cell_stages(config)
    states = [s.state(stages) for s in statuses]
    return f"{len(statuses)} cells: " + ", ".join(f"{states.count(k)} {k}" for k in (DONE, FAILED, RUNNING, PENDING))


def write_status_table(workdir, config: ml_collections.ConfigDict, statuses: Sequence[CellStatus]) -> pathlib.Path:
    """workdir/sweep.md: the state of every cell of this sweep, then the failures."""
    failed = [s for s in statuses if s.error is not None]
    text = [f"# Sweep status\n\n{status_counts(config, statuses)}", status_table(config, statuses)]
    if failed:
        text.append("## Failures\n\n" + status_table(config, failed))
    path = pathlib.Path(workdir) / "sweep.md"
    write_atomically(path, "\n\n".join(text) + "\n")
    return path
