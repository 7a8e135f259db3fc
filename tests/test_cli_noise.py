"""An entry point's start and a kill -9 of it leave no notices a user would take for errors
(ecgjax.cli.quiet_libraries): JAX's INFO line about the missing TPU, and the resource tracker's
warning of the semaphores it cleans up after the kill. A subprocess: the tracker is a process of
its own that outlives the killed one, and JAX probes the TPU once per process."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_NOTICE = "Unable to initialize backend 'tpu'"
TRACKER_WARNING = "leaked semaphore"

# What an entry point does (cli.run, JAX's backends, a pool of spawned workers as ingest and the
# annotation use), then kill -9 of itself while a worker and the pool's semaphores exist.
KILLED_ENTRY_POINT = textwrap.dedent("""
    import concurrent.futures, multiprocessing, os, signal, sys
    sys.path[:0] = [{repo!r}]
    from ecgjax import cli
    from ecgjax.data import workers

    def main(argv):
        import jax
        jax.devices()  # creates every backend JAX knows of, the TPU's among them
        initializer, initargs = workers.pool_initializer()
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=initializer, initargs=initargs)
        pool.submit(os.getpid).result()
        os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        cli.run(main)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="semaphores registered with the resource tracker")
@pytest.mark.parametrize("debug", [False, True])
def test_start_and_kill_9_leave_no_library_notices_unless_debug(tmp_path, debug):
    script = tmp_path / "entry_point.py"
    script.write_text(KILLED_ENTRY_POINT.format(repo=str(REPO)))
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_LOGGING_LEVEL", "ECGJAX_DEBUG")}
    result = subprocess.run([sys.executable, str(script), *(["--debug"] if debug else [])], env=env,
                            capture_output=True, text=True, timeout=120)  # ends when the tracker does
    assert result.returncode == -signal.SIGKILL, result.stderr
    if debug:  # the kill did leave semaphores for the tracker: the warning held back below is real
        assert TRACKER_WARNING in result.stderr, result.stderr
    else:
        assert TPU_NOTICE not in result.stderr and TRACKER_WARNING not in result.stderr, result.stderr
