"""Starts one program as several JAX processes on this host: the single-host multi-process launcher.

    python -m ecgjax.launch --num_processes=2 --cpu_devices=2 -- experiments/pretrain.py \
        --config=configs/hybrid.py:runlocal --workdir=runs/hl-2proc

Runs `python SCRIPT ARGS...` (or `python -m MODULE ...`, or any other command) N times with the
environment that `ecgjax.train.multihost.initialize()` joins from: a coordinator on a free local
port, the number of processes and each one's id. On several machines without a cluster manager,
run the same command on each with `--coordinator=HOST0:PORT --num_hosts=H --host_index=h`
(process ids h*N .. h*N+N-1). Under SLURM use srun instead (README, "Several processes or hosts").

Supervision: the launched processes end when the launcher does (even on kill -9 of it); when one
of them fails (exit status != 0, or killed), the launcher says which, stops the others (SIGTERM,
then SIGKILL after --grace_s) and exits with that status, so no process is left blocked in a
collective waiting for a dead peer. Output is not captured: every process writes its own errors;
logs and TensorBoard come from process 0 only (ecgjax.train.metrics_log).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from absl import flags

from ecgjax import cli
from ecgjax.errors import UserError
from ecgjax.train import multihost

_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes to start on this host.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Simulated CPU devices per process "
                                    "(XLA_FLAGS=--xla_force_host_platform_device_count); 0: leave as is.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0's coordinator, for runs over "
                                   "several hosts; default: a free port on localhost (this host only).")
_NUM_HOSTS = flags.DEFINE_integer("num_hosts", 1, "Hosts running this same command (with --coordinator).")
_HOST_INDEX = flags.DEFINE_integer("host_index", 0, "This host's index in 0..num_hosts-1; host 0 runs process 0.")
_HEARTBEAT_TIMEOUT_S = flags.DEFINE_integer("heartbeat_timeout_s", multihost.HEARTBEAT_TIMEOUT_S,
                                            "Seconds without heartbeats after which JAX ends the other "
                                            "processes of a run whose process died.")
_GRACE_S = flags.DEFINE_float("grace_s", 10.0, "After a process fails, seconds the others get to end "
                              "after SIGTERM before SIGKILL.")
POLL_S = 0.1


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_command(command: list[str]) -> list[str]:
    """`script.py ...` and `-m module ...` run with this Python; anything else as given."""
    if command[0] == "-m" or command[0].endswith(".py"):
        return [sys.executable, *command]
    return list(command)


def child_env(base: dict, *, coordinator: str, num_processes: int, process_id: int, cpu_devices: int,
              heartbeat_timeout_s: int) -> dict:
    env = dict(base)
    env.update({multihost.ENV_COORDINATOR: coordinator, multihost.ENV_NUM_PROCESSES: str(num_processes),
                multihost.ENV_PROCESS_ID: str(process_id), multihost.ENV_LAUNCHER_PID: str(os.getpid()),
                multihost.ENV_HEARTBEAT_TIMEOUT_S: str(heartbeat_timeout_s)})
    if cpu_devices:
        flag = f"--xla_force_host_platform_device_count={cpu_devices}"
        kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform")]
        env["XLA_FLAGS"] = " ".join([*kept, flag])
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def stop(processes: dict[int, subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to every live process, SIGKILL to those still alive after grace_s."""
    for proc in processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for proc in processes.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def supervise(processes: dict[int, subprocess.Popen], grace_s: float) -> int:
    """Waits for every process; on the first failure stops the rest. Returns the exit status:
    0 when all succeeded, else the failed process's status (128 + signal when it was killed)."""
    while True:
        running = False
        for pid, proc in processes.items():
            code = proc.poll()
            if code is None:
                running = True
            elif code != 0:
                others = [p for p in processes if p != pid and processes[p].poll() is None]
                sys.stderr.write(f"ecgjax.launch: process {pid} (pid {proc.pid}) {describe_exit(code)}; "
                                 f"stopping processes {others}\n" if others else
                                 f"ecgjax.launch: process {pid} (pid {proc.pid}) {describe_exit(code)}\n")
                stop(processes, grace_s)
                return code if code > 0 else 128 - code
        if not running:
            return 0
        time.sleep(POLL_S)


def launch(command: list[str], num_processes: int, *, cpu_devices: int = 0, coordinator: str | None = None,
           num_hosts: int = 1, host_index: int = 0, heartbeat_timeout_s: int = multihost.HEARTBEAT_TIMEOUT_S,
           grace_s: float = 10.0) -> int:
    """Runs `command` as processes host_index*N .. host_index*N + N-1 of num_hosts*N; returns the
    exit status (see `supervise`)."""
    if not command:
        raise UserError("no command: pass it after `--`, e.g. python -m ecgjax.launch --num_processes=2 -- "
                        "experiments/pretrain.py --config=configs/hybrid.py:runlocal --workdir=runs/x")
    if not num_processes or num_processes < 1:
        raise UserError(f"--num_processes={num_processes}: give the number of processes to start on this host, e.g. 2")
    if num_hosts < 1 or not 0 <= host_index < num_hosts:
        raise UserError(f"--host_index={host_index} --num_hosts={num_hosts}: need 0 <= host_index < num_hosts")
    if num_hosts > 1 and not coordinator:
        raise UserError(f"--num_hosts={num_hosts} needs --coordinator=HOST:PORT: host 0's address and a free port, "
                        f"the same on every host")
    coordinator = coordinator or f"localhost:{free_port()}"
    total = num_hosts * num_processes
    processes: dict[int, subprocess.Popen] = {}

    def forward(signum, frame):  # Ctrl-C / scancel: stop the run as a whole
        del frame
        stop(processes, grace_s)
        sys.exit(128 + signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for local in range(num_processes):
            process_id = host_index * num_processes + local
            env = child_env(os.environ, coordinator=coordinator, num_processes=total, process_id=process_id,
                            cpu_devices=cpu_devices, heartbeat_timeout_s=heartbeat_timeout_s)
            processes[process_id] = subprocess.Popen(child_command(command), env=env)
        return supervise(processes, grace_s)
    finally:
        stop(processes, grace_s)
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv):
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    sys.exit(launch(command, _NUM_PROCESSES.value, cpu_devices=_CPU_DEVICES.value, coordinator=_COORDINATOR.value,
                    num_hosts=_NUM_HOSTS.value, host_index=_HOST_INDEX.value,
                    heartbeat_timeout_s=_HEARTBEAT_TIMEOUT_S.value, grace_s=_GRACE_S.value))


if __name__ == "__main__":
    cli.run(main)
