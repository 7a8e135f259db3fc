"""One job per cell: a job claims a cell (cells/<name>/claim.json) before running it.

The claim file is created atomically with O_EXCL and kept fresh by a heartbeat thread; a job that
died leaves a claim that goes stale (not refreshed for CLAIM_STALE_S, or its process gone from
this host) and is taken over.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import threading
import time

from ecgjax.sweep.grid import Cell
from ecgjax.sweep.status import cell_dir

logger = logging.getLogger("ecgjax")

CLAIM_FILE = "claim.json"
CLAIM_HEARTBEAT_S = 30.0   # how often a running job refreshes its claims' modification time
CLAIM_STALE_S = 600.0      # a claim not refreshed for this long belongs to a dead job


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
def workdir_lock(workdir: pathlib.Path, name: str):
    """One job at a time (an flock on workdir/.NAME.lock) for the files every job rewrites."""
    with open(workdir / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
