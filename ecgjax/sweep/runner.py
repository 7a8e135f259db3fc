"""Runs the sweep: each selected cell's stages in order, recording every outcome in its status.

    statuses = run_sweep(grid_config, workdir, "hl-p125-*", shard=(0, 4))

A failing stage (out of memory included) stops its cell, not the sweep; see ecgjax.sweep for the
layout under workdir and how jobs on a cluster share it.
"""
from __future__ import annotations

import gc
import logging
import pathlib
import time
import traceback
from collections.abc import Callable

import jax
import ml_collections

from ecgjax.data.errors import ECGInputError
from ecgjax.eval import probe, report as report_lib
from ecgjax.sweep import claims
from ecgjax.sweep.grid import PRETRAIN_STAGE, Cell, cell_stages, pretrain_config, probe_config
from ecgjax.sweep.selection import job_cells
from ecgjax.sweep.status import DONE, FAILED, RUNNING, CellStatus, cell_dir, write_status_table
from ecgjax.train import loop

logger = logging.getLogger("ecgjax")

OUT_OF_MEMORY = "out of memory"
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM when allocating")


def describe_failure(exc: BaseException) -> dict:
    """{'type', 'message', 'reason'}; reason is 'out of memory (<type>)' for allocator
    failures (XlaRuntimeError RESOURCE_EXHAUSTED, MemoryError), else '<type>: <first line>'."""
    message = str(exc).strip()
    first_line = message.splitlines()[0] if message else ""
    if isinstance(exc, MemoryError) or any(m in message for m in _OOM_MARKERS):
        reason = f"{OUT_OF_MEMORY} ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {first_line}"[:300]
    return dict(type=type(exc).__name__, message=message[:2000], reason=reason)


def run_pretrain_stage(config: ml_collections.ConfigDict, cell: Cell, directory: pathlib.Path) -> dict:
    """Pretrains (or resumes) the cell in directory/pretrain; returns the last step's metrics."""
    return loop.pretrain(pretrain_config(config, cell), str(directory / "pretrain"))


def run_probe_stage(config: ml_collections.ConfigDict, cell: Cell, directory: pathlib.Path,
                    mode: str, task: str) -> dict:
    """Linear probe or fine-tune on one task; the probe writes run JSONs under directory."""
    runs = probe.run_probe(probe_config(config, mode, task, directory / "pretrain", cell), str(directory))
    return dict(runs=len(runs))


def _free_device_memory() -> None:
    """Drops compiled executables and dead buffers so one cell's memory does not starve the next."""
    gc.collect()
    jax.clear_caches()


def run_cell(config: ml_collections.ConfigDict, cell: Cell, workdir) -> CellStatus:
    """Runs the cell's pending stages in order; a failing stage stops the cell and is recorded."""
    directory = cell_dir(workdir, cell)
    status = CellStatus.load(workdir, cell)
    status.error = None
    status.attempts += 1
    for stage in cell_stages(config):
        if status.stage_state(stage) == DONE:
            continue
        status.stages[stage] = dict(state=RUNNING, started=time.strftime("%Y-%m-%d %H:%M:%S"))
        status.save(workdir)
        logger.info("cell %s: %s", cell.name, stage)
        start = time.perf_counter()
        try:
            if stage == PRETRAIN_STAGE:
                result = run_pretrain_stage(config, cell, directory)
            else:
                mode, _, task = stage.partition(":")
                result = run_probe_stage(config, cell, directory, mode, task)
        except Exception as exc:  # noqa: BLE001 - any failure of one cell must not stop the sweep
            status.error = dict(stage=stage, **describe_failure(exc))
            status.stages[stage].update(state=FAILED, seconds=time.perf_counter() - start,
                                        traceback=traceback.format_exc()[-4000:])
            status.save(workdir)
            logger.error("cell %s failed at %s: %s", cell.name, stage, status.error["reason"])
            return status
        status.stages[stage].update(state=DONE, seconds=round(time.perf_counter() - start, 2),
                                    result=result)
        status.save(workdir)
    return status


def run_sweep(config: ml_collections.ConfigDict, workdir, selection: str | None = None, *,
              shard: tuple[int, int] | None = None, retry_failed: bool = True, report: bool | None = None,
              on_cell_done: Callable[[CellStatus], None] | None = None) -> list[CellStatus]:
    """Runs every selected cell of this shard that is not done and that no other job holds;
    returns the statuses of this shard's cells.

    selection: see `selection.select_cells` (None: config.cells). shard: (i, n) runs
    `selection.shard_cells` of the selection (None: all of it). retry_failed=False leaves cells whose
    last attempt failed (e.g. known out-of-memory) alone. Writes workdir/sweep.md (every selected
    cell, whichever job ran it) and, if report (default config.report), the evaluation report
    under workdir/report.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    selected = job_cells(config, selection)
    cells = job_cells(config, selection, shard)
    if shard is not None:
        logger.info("shard %d/%d: %d of the %d selected cells", shard[0], shard[1], len(cells), len(selected))
    stages = cell_stages(config)
    statuses = []
    for i, cell in enumerate(cells):
        status = CellStatus.load(workdir, cell)
        state = status.state(stages)
        if state == DONE or (state == FAILED and not retry_failed):
            logger.info("cell %d/%d %s: %s, skipped", i + 1, len(cells), cell.name, state)
        elif (claim := claims.claim_cell(workdir, cell)) is None:
            logger.info("cell %d/%d %s: running in another job (%s), skipped", i + 1, len(cells), cell.name,
                        claims.claim_owner(workdir, cell))
        else:
            try:
                status = CellStatus.load(workdir, cell)  # another job may have finished it meanwhile
                if status.state(stages) == DONE:
                    logger.info("cell %d/%d %s: done by another job, skipped", i + 1, len(cells), cell.name)
                else:
                    logger.info("cell %d/%d %s: running", i + 1, len(cells), cell.name)
                    status = run_cell(config, cell, workdir)
                    _free_device_memory()
            finally:
                claim.release()
        statuses.append(status)
        if on_cell_done is not None:
            on_cell_done(status)
    with claims.workdir_lock(workdir, "sweep"):  # several jobs end at once: one rewrite at a time
        write_status_table(workdir, config, [CellStatus.load(workdir, c) for c in selected])
        if config.report if report is None else report:
            _write_report(workdir)
    return statuses


def _write_report(workdir: pathlib.Path) -> None:
    try:
        paths = report_lib.write_report(workdir)
    except ECGInputError as err:  # nothing finished yet: nothing to tabulate
        logger.warning("no report: %s", err)
        return
    logger.info("report: %s", paths[0])
