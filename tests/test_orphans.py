"""kill -9 of a run with worker processes leaves no worker behind (Grain prefetch, ingest pool).

Each run starts in its own session, so every process it ever spawns shares its session id even
after being re-parented to init; the test reads /proc for that session before and after the kill.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"),
                                reason="reads /proc (Linux)")

REPO = pathlib.Path(__file__).resolve().parents[1]
SURVIVAL_LIMIT_S = 20.0


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session) of a live process, or None."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[3])


def _session(sid: int) -> dict[int, int]:
    """{pid: ppid} of the running (not zombie) processes of session `sid`."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) and stat[2] == sid and stat[0] != "Z":
            out[int(entry)] = stat[1]
    return out


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill_and_find_survivors(command: list[str], num_workers: int, cwd, settle_s: float) -> list[str]:
    """Starts `command`, waits for `num_workers` spawned workers, kill -9s it; returns the command
    lines of the processes of its session still alive SURVIVAL_LIMIT_S later (killed afterwards)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while True:
            workers = [pid for pid, ppid in _session(proc.pid).items()
                       if ppid == proc.pid and "spawn_main" in _cmdline(pid)]
            if len(workers) >= num_workers:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended (rc {proc.returncode}) before its workers started:\n"
                            f"{proc.stderr.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "workers never started"
            time.sleep(0.2)
        time.sleep(settle_s)  # let the workers fill their queues and block, as in a real run
        assert proc.poll() is None, "run ended before the kill: give it more work"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + SURVIVAL_LIMIT_S
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = _session(proc.pid)
        return [f"{pid}: {_cmdline(pid)[:120]}" for pid in survivors]
    finally:
        for pid in _session(proc.pid):  # never leave our own orphans behind, pass or fail
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_kill_9_of_pretraining_leaves_no_grain_worker(tmp_path):
    command = [sys.executable, str(REPO / "experiments" / "pretrain.py"),
               f"--config={REPO / 'configs' / 'generative.py'}:runlocal", f"--workdir={tmp_path / 'run'}",
               "--config.data.num_workers=2", "--config.train.num_steps=100000", "--config.train.batch_size=4",
               f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", "--config.data.synthetic.num_patients=16",
               "--config.data.synthetic.records_per_patient=1"]
    assert _kill_and_find_survivors(command, 2, tmp_path, settle_s=3.0) == []


def test_kill_9_of_ingest_leaves_no_pool_worker(tmp_path):
    command = [sys.executable, "-m", "ecgjax.data.ingest", "--source=synthetic",
               "--input=patients=4000,records=1,seed=0", f"--output={tmp_path / 'store'}",
               "--workers=2", "--shard_size=4"]
    assert _kill_and_find_survivors(command, 2, tmp_path, settle_s=1.0) == []
