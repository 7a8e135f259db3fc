"""Several processes, one program: joining JAX's multi-controller runtime before anything else.

Every process runs the same script; `jax.distributed.initialize` connects them into one runtime
whose `jax.devices()` lists every process's devices, so the data-parallel mesh, the compiled step
and Orbax checkpoints span them all (ecgjax.train.mesh, ecgjax.train.checkpoint). Where the
parameters come from:

  - `python -m ecgjax.launch --num_processes=N -- script.py ...` (ecgjax.launch) sets ENV_* below
    for each process it starts; `initialize()` then joins without being asked;
  - `--multihost` under SLURM (srun), Open MPI or on Cloud TPU VMs: `jax.distributed.initialize()`
    reads the cluster's own environment (SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST, ...).

A process that dies (kill -9, out of memory, a lost host) stops sending heartbeats; after
`heartbeat_timeout_s` JAX's coordination service ends every other process instead of leaving
them blocked in a collective forever. ECGJAX_HEARTBEAT_TIMEOUT_S overrides the default.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

import jax

from ecgjax import cli
from ecgjax.data.workers import die_with_parent
from ecgjax.errors import UserError

ENV_COORDINATOR = "ECGJAX_COORDINATOR_ADDRESS"  # host:port of process 0's coordination service
ENV_NUM_PROCESSES = "ECGJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "ECGJAX_PROCESS_ID"
ENV_LAUNCHER_PID = "ECGJAX_LAUNCHER_PID"  # a launched process ends when its launcher does
ENV_HEARTBEAT_TIMEOUT_S = "ECGJAX_HEARTBEAT_TIMEOUT_S"
HEARTBEAT_TIMEOUT_S = 60  # JAX's default is 100 s; a dead peer should not hold a cluster that long
INITIALIZATION_TIMEOUT_S = 300


def launched() -> bool:
    """Whether this process was started by ecgjax.launch."""
    return ENV_NUM_PROCESSES in os.environ


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r}: expected an integer; it is set by "
                        f"`python -m ecgjax.launch`, start the processes through it") from None


def initialize(required: bool = False) -> bool:
    """Joins the multi-process runtime; returns whether this is a multi-process run.

    Call first, before any JAX computation. Started by ecgjax.launch: joins with the launcher's
    coordinator. Otherwise, with `required` (--multihost): lets JAX detect the cluster (SLURM,
    Open MPI, Cloud TPU); a UserError says what to do where none is found. Otherwise: nothing.
    """
    if jax.distributed.is_initialized():
        return True
    timeout = int(os.environ.get(ENV_HEARTBEAT_TIMEOUT_S, HEARTBEAT_TIMEOUT_S))
    if launched() or required:
        # CPU processes all-reduce over gloo (JAX's default now; without one they could not at all).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if launched():
        if ENV_LAUNCHER_PID in os.environ:
            die_with_parent(_env_int(ENV_LAUNCHER_PID), spawned_by_main_thread=True)
        jax.distributed.initialize(os.environ.get(ENV_COORDINATOR), num_processes=_env_int(ENV_NUM_PROCESSES),
                                   process_id=_env_int(ENV_PROCESS_ID), heartbeat_timeout_seconds=timeout,
                                   initialization_timeout=INITIALIZATION_TIMEOUT_S)
        return True
    if not required:
        return False
    try:
        jax.distributed.initialize(heartbeat_timeout_seconds=timeout,
                                   initialization_timeout=INITIALIZATION_TIMEOUT_S)
    except ValueError as error:  # no cluster environment found: JAX names the missing parameter
        raise UserError(
            f"--multihost: no cluster found to join ({error}). Run it on every host under srun (SLURM), "
            f"mpirun (Open MPI) or on each Cloud TPU VM; on one machine use `python -m ecgjax.launch "
            f"--num_processes=N -- experiments/pretrain.py ...`; or drop --multihost") from None
    return True


def is_main() -> bool:
    """Process 0: the one that writes logs, TensorBoard and shared files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def exit_fast_on_error():
    """In a multi-process run, a process whose program fails reports its error and ends at once.

    A normal exit would first wait in JAX's shutdown barrier for every other process (up to five
    minutes), while they wait for it in the next collective: the run would hang. Ending now lets
    the launcher (or the others' heartbeats) stop the rest. The error is written as the entry point
    would: one line for a UserError (ecgjax.cli), the traceback otherwise.
    """
    try:
        yield
    except BaseException as error:
        if not jax.distributed.is_initialized() or jax.process_count() == 1:
            raise
        if isinstance(error, SystemExit):
            code = error.code if isinstance(error.code, int) else 1
        elif isinstance(error, UserError) and not cli.debugging():
            cli.report(error)
            code = cli.EXIT_USER_ERROR
        else:
            traceback.print_exc()
            code = 130 if isinstance(error, KeyboardInterrupt) else 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
