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

A process that is only slow (a cold compile on a busy host, process 0 building the synthetic
cohort) is waited for up to ECGJAX_PEER_TIMEOUT_S: to join the run, at a barrier, in a collective
(`connect_collectives` says why the first collective needs care).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import sys
import traceback

import jax
import numpy as np

from ecgjax import cli
from ecgjax.data.workers import die_with_parent
from ecgjax.errors import UserError

ENV_COORDINATOR = "ECGJAX_COORDINATOR_ADDRESS"  # host:port of process 0's coordination service
ENV_NUM_PROCESSES = "ECGJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "ECGJAX_PROCESS_ID"
ENV_LAUNCHER_PID = "ECGJAX_LAUNCHER_PID"  # a launched process ends when its launcher does
ENV_HEARTBEAT_TIMEOUT_S = "ECGJAX_HEARTBEAT_TIMEOUT_S"
ENV_PEER_TIMEOUT_S = "ECGJAX_PEER_TIMEOUT_S"
HEARTBEAT_TIMEOUT_S = 60  # JAX's default is 100 s; a dead peer should not hold a cluster that long
# How long a process waits for a slower one that is alive. Minutes of compilation on a loaded
# host stay well inside; a peer that is stuck (not dead) is given up on after this.
PEER_TIMEOUT_S = 600
# What a process reports when another one of the run ended under it (gloo's socket closed, the
# coordination service gone or reporting a dead task).
_PEER_LOST = re.compile(r"Gloo .*failed|[Cc]onnection (closed|reset) by peer|heartbeat|CoordinationServiceError")
_barriers = itertools.count()


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


def _env_seconds(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"environment variable {name}={value!r}: expected a whole number of seconds >= 1")
    return int(value)


def peer_timeout_s() -> int:
    """Seconds a process waits for a slower peer (ECGJAX_PEER_TIMEOUT_S, default PEER_TIMEOUT_S)."""
    return _env_seconds(ENV_PEER_TIMEOUT_S, PEER_TIMEOUT_S)


def _set_collective_timeout(seconds: int) -> None:
    """XLA's CPU collectives (gloo) wait `seconds` for a peer, unless XLA_FLAGS already says.

    XLA reads XLA_FLAGS once, when the backend is created: this runs before."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_collective_timeout_seconds" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_collective_timeout_seconds={seconds}".strip()


def initialize(required: bool = False) -> bool:
    """Joins the multi-process runtime; returns whether this is a multi-process run.

    Call first, before any JAX computation. Started by ecgjax.launch: joins with the launcher's
    coordinator. Otherwise, with `required` (--multihost): lets JAX detect the cluster (SLURM,
    Open MPI, Cloud TPU); a UserError says what to do where none is found. Otherwise: nothing.
    """
    if jax.distributed.is_initialized():
        return True
    if not (launched() or required):
        return False
    heartbeat, peer = _env_seconds(ENV_HEARTBEAT_TIMEOUT_S, HEARTBEAT_TIMEOUT_S), peer_timeout_s()
    # CPU processes all-reduce over gloo (JAX's default now; without one they could not at all).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _set_collective_timeout(peer)
    if launched():
        if ENV_LAUNCHER_PID in os.environ:
            die_with_parent(_env_int(ENV_LAUNCHER_PID), spawned_by_main_thread=True)
        jax.distributed.initialize(os.environ.get(ENV_COORDINATOR), num_processes=_env_int(ENV_NUM_PROCESSES),
                                   process_id=_env_int(ENV_PROCESS_ID), heartbeat_timeout_seconds=heartbeat,
                                   initialization_timeout=peer)
    else:
        try:
            jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat, initialization_timeout=peer)
        except ValueError as error:  # no cluster environment found: JAX names the missing parameter
            raise UserError(
                f"--multihost: no cluster found to join ({error}). Run it on every host under srun (SLURM), "
                f"mpirun (Open MPI) or on each Cloud TPU VM; on one machine use `python -m ecgjax.launch "
                f"--num_processes=N -- experiments/pretrain.py ...`; or drop --multihost") from None
    connect_collectives()
    return True


def connect_collectives() -> None:
    """Connects the processes' CPU collectives now, while they are known to be together.

    Gloo connects the processes of a collective the first time one runs on a set of devices, and
    waits for the others' addresses a fixed 30 s (gloo's default timeout, which XLA does not
    change; nothing in JAX sets it). The first collective of a training run follows minutes of
    compilation: a process that reaches it more than 30 s after another (a busy host) ended the
    run with `Gloo context initialization failed: DEADLINE_EXCEEDED: GetKeyValue() timed out`.
    So every process first meets at a barrier of the coordination service (no gloo, up to
    `peer_timeout_s`), then runs one collective on each set of devices the run uses: JAX's
    barrier (the one Orbax uses) and a sum over the training mesh. The connections are kept per
    set of devices for the life of the process; later collectives reuse them and wait for a
    slow peer up to --xla_cpu_collective_timeout_seconds (`_set_collective_timeout`).
    """
    if jax.process_count() == 1 or jax.default_backend() != "cpu":
        return
    from jax.experimental import multihost_utils

    from ecgjax.train import mesh as mesh_lib

    barrier("ecgjax-connect-collectives")
    multihost_utils.sync_global_devices("ecgjax-connect-collectives")
    mesh = mesh_lib.make_mesh()
    ones = jax.make_array_from_process_local_data(mesh_lib.data_sharding(mesh),
                                                  np.ones(jax.local_device_count(), np.int32))
    total = jax.jit(jax.numpy.sum, out_shardings=mesh_lib.replicated_sharding(mesh))(ones)
    if int(total) != jax.device_count():
        raise RuntimeError(f"connecting collectives: a sum over {jax.device_count()} devices gave {int(total)}")


def is_main() -> bool:
    """Process 0: the one that writes logs, TensorBoard and shared files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name`, up to `peer_timeout_s` (no-op for
    one process). The coordination service's barrier: no collective, so no gloo deadline."""
    if jax.process_count() > 1:
        from jax._src import distributed

        # Barrier ids are single-use; every process passes its barriers in the same order.
        distributed.global_state.client.wait_at_barrier(f"{name}-{next(_barriers)}", peer_timeout_s() * 1000)


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
        elif _PEER_LOST.search(str(error)) and not cli.debugging():
            # A consequence, not a cause: the process that ended says why (and the launcher who).
            first = str(error).strip().splitlines()[0][:300]
            sys.stderr.write(f"error: process {jax.process_index()}/{jax.process_count()} stopped: another "
                             f"process of the run ended or did not answer in time ({first}); --debug shows the "
                             f"traceback\n")
            code = 1
        else:
            traceback.print_exc()
            code = 130 if isinstance(error, KeyboardInterrupt) else 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
