"""The architecture sweep (003's 81-model grid): pretrain -> linear probe -> fine-tune per cell.

    run_sweep(grid_config, workdir, selection="hl-p125-*")

Layout under workdir::

    cells/<name>/status.json     per-stage state of one cell (see `CellStatus`)
    cells/<name>/pretrain/       ecgjax.train.loop.pretrain's workdir (config, metrics, checkpoints)
    cells/<name>/eval/...        run JSONs of ecgjax.eval.probe (ecgjax.eval.report schema)
    sweep.md                     every selected cell's state, and the failures with their reasons
    report/                      ecgjax.eval.report.write_report(workdir)

A cell's stages are 'pretrain' then '<mode>:<task>' for every probe mode and task. A stage
marked done is skipped on the next run; an interrupted pretraining resumes from its own
checkpoint. An exception in a stage (an out-of-memory XlaRuntimeError included) marks the
cell failed with its reason and the sweep goes on to the next cell; failed cells are tried
again on the next run unless `retry_failed=False`.

On a cluster the cells are independent jobs. `shard=(i, n)` (experiments/sweep.py --shard=i/n,
or --shard=slurm in a SLURM job array) runs the deterministic subset cells[i::n] of the selection.
Whatever the sharding, a job claims a cell before running it (cells/<name>/claim.json, created
atomically with O_EXCL and kept fresh by a heartbeat), so two jobs never run the same cell; a job
that died leaves a claim that goes stale and is taken over. Status files are replaced atomically,
and sweep.md and the report are rewritten (one job at a time) from every cell on disk, so they
merge whatever all jobs have done so far.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import gc
import importlib.util
import itertools
import json
import logging
import os
import pathlib
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import ml_collections

from ecgjax.errors import UserError

logger = logging.getLogger("ecgjax")

STATUS_FILE = "status.json"
CLAIM_FILE = "claim.json"
CLAIM_HEARTBEAT_S = 30.0   # how often a running job refreshes its claims' modification time
CLAIM_STALE_S = 600.0      # a claim not refreshed for this long belongs to a dead job
PRETRAIN_STAGE = "pretrain"
# Cell and stage states.
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
OUT_OF_MEMORY = "out of memory"
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM when allocating")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid point: an SSL method on a ViT1D of the given patch, depth and width."""

    method: str
    patch: int
    depth: int
    width: int

    @property
    def name(self) -> str:
        """'hl-p125-d4-w512'."""
        return f"{self.method}-p{self.patch}-d{self.depth}-w{self.width}"

    @property
    def report_cell(self) -> dict:
        """The run JSON 'cell' (ecgjax.eval.report): method upper-case as in 003's tables."""
        return dict(patch=self.patch, depth=self.depth, width=self.width, method=self.method.upper())

    @property
    def pretrain_arg(self) -> str:
        return f"patch={self.patch},depth={self.depth},width={self.width}"


def grid_cells(config: ml_collections.ConfigDict) -> list[Cell]:
    """Every cell of the grid, method outermost then patch, depth, width (003 App. C order)."""
    axes = config.axes
    return [Cell(str(m), int(p), int(d), int(w))
            for m, p, d, w in itertools.product(axes.method, axes.patch, axes.depth, axes.width)]


def select_cells(cells: Sequence[Cell], selection: str | None) -> list[Cell]:
    """The cells named by `selection`, in grid order; '' or None selects all.

    Comma-separated items: an index ('4'), an index range ('3-5', inclusive), a name
    ('hl-p125-d4-w512') or a glob ('hl-p60-*'). An item matching nothing is an error.
    """
    if not selection or not selection.strip():
        return list(cells)
    chosen: set[int] = set()
    for item in filter(None, (s.strip() for s in selection.split(","))):
        first, sep, last = item.partition("-")
        if item.isdigit() or (sep and first.isdigit() and last.isdigit()):
            lo, hi = int(first), int(last or first)
            if not 0 <= lo <= hi < len(cells):
                raise ValueError(f"cell index {item!r} out of range 0-{len(cells) - 1}")
            matched = set(range(lo, hi + 1))
        else:
            matched = {i for i, c in enumerate(cells) if fnmatch.fnmatchcase(c.name, item)}
        if not matched:
            raise ValueError(f"--cells item {item!r} matches no cell (names look like {cells[0].name})")
        chosen |= matched
    return [cells[i] for i in sorted(chosen)]


def parse_shard(text: str | None, environ=None) -> tuple[int, int] | None:
    """'i/n' -> (i, n); 'slurm' -> this SLURM array task's (index, count); None/'' -> None.

    A UserError names --shard and what to pass for anything else.
    """
    if not text:
        return None
    environ = os.environ if environ is None else environ
    if text == "slurm":
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
        missing = [n for n in names if n not in environ]
        if missing:
            raise UserError(f"--shard=slurm outside a SLURM job array ({', '.join(missing)} not set): submit with "
                            f"sbatch --array=0-N, or pass --shard=i/n")
        index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ["SLURM_ARRAY_TASK_MIN"])
        return index, int(environ["SLURM_ARRAY_TASK_COUNT"])
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise UserError(f"--shard={text}: expected i/n with 0 <= i < n (this job's part of n), e.g. --shard=0/4, "
                        f"or --shard=slurm in a SLURM job array")
    return int(index), int(count)


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Shard (i, n) of the cells: every n-th from the i-th, so shards are disjoint, cover every
    cell, and mix methods and sizes (the grid is ordered by method, then patch, depth, width)."""
    if shard is None:
        return list(cells)
    index, count = shard
    return list(cells)[index::count]


def probe_stages(config: ml_collections.ConfigDict) -> list[str]:
    """'<mode>:<task>' for every probe mode and task, in run order."""
    return [f"{mode}:{task}" for mode in config.probe.modes for task in config.probe.tasks]


def cell_dir(workdir, cell: Cell) -> pathlib.Path:
    return pathlib.Path(workdir) / "cells" / cell.name


# ----------------------------------------------------------------------------- status

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
    def load(cls, workdir, cell: Cell) -> "CellStatus":
        path = cell_dir(workdir, cell) / STATUS_FILE
        if not path.is_file():
            return cls(cell)
        data = json.loads(path.read_text())
        return cls(cell, stages=data.get("stages", {}), error=data.get("error"),
                   attempts=int(data.get("attempts", 0)))

    def save(self, workdir) -> None:
        path = cell_dir(workdir, self.cell) / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(self.to_json(), indent=2, sort_keys=True, default=str))


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """A temporary file of this process, then os.replace: readers see the old or the new file whole,
    even with several jobs writing, and a kill mid-write leaves the previous file intact."""
    tmp = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- claims

def _owner() -> dict:
    return dict(host=socket.gethostname(), pid=os.getpid(),
                job=os.environ.get("SLURM_JOB_ID", ""), array_task=os.environ.get("SLURM_ARRAY_TASK_ID", ""))


def _claim_is_stale(path: pathlib.Path, now: float) -> bool:
    """Not refreshed for CLAIM_STALE_S, or held by a process of this host that is gone."""
    try:
        age = now - path.stat().st_mtime
        owner = json.loads(path.read_text())
    except (OSError, ValueError):  # vanished, or caught between create and write: not stale yet
        return False
    if age > CLAIM_STALE_S:
        return True
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            pass
    return False


class Claim:
    """This job's exclusive right to run one cell; a daemon thread keeps it fresh until release()."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(CLAIM_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def claim_owner(workdir, cell: Cell) -> dict | None:
    """Who holds the cell's claim ({'host', 'pid', 'job', ...}), or None."""
    try:
        return json.loads((cell_dir(workdir, cell) / CLAIM_FILE).read_text())
    except (OSError, ValueError):
        return None


def claim_cell(workdir, cell: Cell) -> Claim | None:
    """Claims the cell for this job, or None when another live job holds it.

    O_CREAT | O_EXCL makes the creation atomic, so of several jobs exactly one gets the claim. A
    stale claim (see `_claim_is_stale`) is renamed away first (one renamer wins) and claimed anew.
    """
    path = cell_dir(workdir, cell) / CLAIM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claim_is_stale(path, time.time()):
                return None
            logger.warning("cell %s: taking over the stale claim of %s", cell.name, claim_owner(workdir, cell))
            stale = path.with_name(f"{CLAIM_FILE}.stale-{socket.gethostname()}-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):  # another job may have taken it over first
                os.rename(path, stale)  # atomic: of several jobs breaking the claim, one renames it
                stale.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(dict(_owner(), started=time.strftime("%Y-%m-%d %H:%M:%S")), f)
        return Claim(path)
    return None


@contextlib.contextmanager
def _workdir_lock(workdir: pathlib.Path, name: str):
    """One job at a time (an flock on workdir/.NAME.lock) for the files every job rewrites."""
    with open(workdir / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


# ----------------------------------------------------------------------------- configs

def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a configs/*.py file given by path."""
    spec = importlib.util.spec_from_file_location(f"_sweep_config_{pathlib.Path(path).stem}", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str = "") -> None:
    """Sets nested `overrides` into `config`; a key `config` lacks is a ValueError."""
    items = overrides.items() if overrides is not None else ()
    for key, value in items:
        path = f"{where}{key}"
        if key not in config:
            raise ValueError(f"override {path!r}: the config has no such field")
        if isinstance(config[key], ml_collections.ConfigDict):
            apply_overrides(config[key], value, f"{path}.")
        else:
            config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def pretrain_config(config: ml_collections.ConfigDict, cell: Cell) -> ml_collections.ConfigDict:
    """The cell's method config at its patch/depth/width, with the grid's data, steps and overrides."""
    if cell.method not in config.method_configs:
        raise ValueError(f"no pretraining config for method {cell.method!r}")
    arg = cell.pretrain_arg + (",runlocal" if config.runlocal else "")
    c = load_config_file(config.method_configs[cell.method], arg)
    c.data.store = config.data.store
    c.seed = config.pretrain.seed
    c.train.num_steps = config.pretrain.num_steps
    c.train.batch_size = config.pretrain.batch_size
    apply_overrides(c, config.pretrain.overrides)
    return c


def probe_config(config: ml_collections.ConfigDict, mode: str, task: str,
                 pretrain_dir, cell: "Cell | None" = None) -> ml_collections.ConfigDict:
    """configs/probe.py's config for one (mode, task) on the cell's pretrained encoder; runs are
    labelled with the grid cell (under `runlocal` the encoder itself is shrunk)."""
    c = load_config_file(config.probe.config, config.probe.arg)
    if cell is not None:
        c.cell.update(cell.report_cell)
    c.checkpoint = str(pretrain_dir)
    c.init = "pretrained"
    c.mode = mode
    c.task = task
    c.seeds = int(config.probe.seeds)
    c.first_seed = int(config.probe.first_seed)
    c.data.store = config.data.store
    apply_overrides(c, config.probe.overrides)
    return c


# ----------------------------------------------------------------------------- stages

def run_pretrain_stage(config: ml_collections.ConfigDict, cell: Cell, directory: pathlib.Path) -> dict:
    """Pretrains (or resumes) the cell in directory/pretrain; returns the last step's metrics."""
    from ecgjax.train import loop

    return loop.pretrain(pretrain_config(config, cell), str(directory / "pretrain"))


def run_probe_stage(config: ml_collections.ConfigDict, cell: Cell, directory: pathlib.Path,
                    mode: str, task: str) -> dict:
    """Linear probe or fine-tune on one task; the probe writes run JSONs under directory."""
    from ecgjax.eval import probe

    runs = probe.run_probe(probe_config(config, mode, task, directory / "pretrain", cell), str(directory))
    return dict(runs=len(runs))


def _free_device_memory() -> None:
    """Drops compiled executables and dead buffers so one cell's memory does not starve the next."""
    import jax

    gc.collect()
    jax.clear_caches()


def run_cell(config: ml_collections.ConfigDict, cell: Cell, workdir) -> CellStatus:
    """Runs the cell's pending stages in order; a failing stage stops the cell and is recorded."""
    directory = cell_dir(workdir, cell)
    status = CellStatus.load(workdir, cell)
    status.error = None
    status.attempts += 1
    stages = [PRETRAIN_STAGE, *probe_stages(config)]
    for stage in stages:
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

    selection: see `select_cells` (None: config.cells). shard: (i, n) runs `shard_cells` of the
    selection (None: all of it). retry_failed=False leaves cells whose last attempt failed (e.g.
    known out-of-memory) alone. Writes workdir/sweep.md (every selected cell, whichever job ran
    it) and, if report (default config.report), the evaluation report under workdir/report.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    selected = select_cells(grid_cells(config), config.cells if selection is None else selection)
    cells = shard_cells(selected, shard)
    if shard is not None:
        logger.info("shard %d/%d: %d of the %d selected cells", shard[0], shard[1], len(cells), len(selected))
    stages = [PRETRAIN_STAGE, *probe_stages(config)]
    statuses = []
    for i, cell in enumerate(cells):
        status = CellStatus.load(workdir, cell)
        state = status.state(stages)
        if state == DONE or (state == FAILED and not retry_failed):
            logger.info("cell %d/%d %s: %s, skipped", i + 1, len(cells), cell.name, state)
        elif (claim := claim_cell(workdir, cell)) is None:
            logger.info("cell %d/%d %s: running in another job (%s), skipped", i + 1, len(cells), cell.name,
                        claim_owner(workdir, cell))
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
    with _workdir_lock(workdir, "sweep"):  # several jobs end at once: one rewrite at a time
        write_status_table(workdir, config, [CellStatus.load(workdir, c) for c in selected])
        if config.report if report is None else report:
            _write_report(workdir)
    return statuses


def _write_report(workdir: pathlib.Path) -> None:
    from ecgjax.data.errors import ECGInputError
    from ecgjax.eval import report as report_lib

    try:
        paths = report_lib.write_report(workdir)
    except ECGInputError as err:  # nothing finished yet: nothing to tabulate
        logger.warning("no report: %s", err)
        return
    logger.info("report: %s", paths[0])


# ----------------------------------------------------------------------------- tables

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
    stages = [PRETRAIN_STAGE, *probe_stages(config)]
    header = ["#", "Cell", "State", "Pretrain", *[m.capitalize() for m in modes], "Reason"]
    rows = []
    for s in statuses:
        per_mode = [_stage_summary(s, [f"{m}:{t}" for t in config.probe.tasks]) for m in modes]
        reason = f"{s.error['stage']}: {s.error['reason']}" if s.error else ""
        rows.append([index.get(s.cell, "?"), s.cell.name, s.state(stages),
                     _stage_summary(s, [PRETRAIN_STAGE]), *per_mode, reason.replace("|", "/")])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_statuses(config: ml_collections.ConfigDict, workdir, selection: str | None = None,
                  shard: tuple[int, int] | None = None) -> list[CellStatus]:
    cells = shard_cells(select_cells(grid_cells(config), config.cells if selection is None else selection), shard)
    return [CellStatus.load(workdir, c) for c in cells]


def status_counts(config: ml_collections.ConfigDict, statuses: Sequence[CellStatus]) -> str:
    """'81 cells: 3 done, 1 failed, 0 running, 77 pending'."""
    stages = [PRETRAIN_STAGE, *probe_stages(config)]
    states = [s.state(stages) for s in statuses]
    return f"{len(statuses)} cells: " + ", ".join(f"{states.count(k)} {k}" for k in (DONE, FAILED, RUNNING, PENDING))


def write_status_table(workdir, config: ml_collections.ConfigDict, statuses: Sequence[CellStatus]) -> pathlib.Path:
    """workdir/sweep.md: the state of every cell of this sweep, then the failures."""
    failed = [s for s in statuses if s.error is not None]
    text = [f"# Sweep status\n\n{status_counts(config, statuses)}", status_table(config, statuses)]
    if failed:
        text.append("## Failures\n\n" + status_table(config, failed))
    path = pathlib.Path(workdir) / "sweep.md"
    _write_atomically(path, "\n\n".join(text) + "\n")
    return path
