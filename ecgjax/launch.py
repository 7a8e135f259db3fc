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
collective waiting for a dead peer. Each process's stderr passes through the launcher line by
line (logs and TensorBoard come from process 0 only, ecgjax.train.metrics_log). Once one process
has failed, what the others write is their account of losing it (tracebacks, C++ stacks, thread
dumps): the launcher holds it back and says in one line per process that it stopped. --debug,
given to the launcher or to the program, lets it through, with every process's tracebacks.
--peer_timeout_s: how long a process waits for a slow one (ecgjax.train.multihost).
"""
from __future__ import annotations

import collections
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
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
_PEER_TIMEOUT_S = flags.DEFINE_integer("peer_timeout_s", multihost.PEER_TIMEOUT_S,
                                       "Seconds a process waits for a slower one (to join, at a barrier, in a "
                                       "collective) before giving up, e.g. while it compiles on a busy host.")
_GRACE_S = flags.DEFINE_float("grace_s", 10.0, "After a process fails, seconds the others get to end "
                              "after SIGTERM before SIGKILL.")
POLL_S = 0.1
HOLD_S = 0.5  # how long each line of a process's stderr waits (Supervisor)


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
              heartbeat_timeout_s: int, peer_timeout_s: int = multihost.PEER_TIMEOUT_S) -> dict:
    env = dict(base)
    env.update({multihost.ENV_COORDINATOR: coordinator, multihost.ENV_NUM_PROCESSES: str(num_processes),
                multihost.ENV_PROCESS_ID: str(process_id), multihost.ENV_LAUNCHER_PID: str(os.getpid()),
                multihost.ENV_HEARTBEAT_TIMEOUT_S: str(heartbeat_timeout_s),
                multihost.ENV_PEER_TIMEOUT_S: str(peer_timeout_s)})
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


def _exit_status(proc: subprocess.Popen) -> int | None:
    """proc's exit status (-signal if killed) once it has ended, else None; leaves it unreaped, so
    that the reader threads and the supervising loop can ask at any time."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped meanwhile
        return proc.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _blame_order(code: int) -> int:
    """Of processes found failed at once, which to name: one killed from outside (kill -9, the
    OOM killer), then one that exited with an error, last one that aborted (as JAX aborts a
    process whose peer is gone)."""
    if code < 0 and -code != signal.SIGABRT:
        return 0
    return 1 if code > 0 else 2


class Supervisor:
    """Watches the processes of one launch and passes on each one's stderr, line by line.

    After the first failure (`failed`), lines from the other processes are held back unless
    `debug`: they report the loss of that process. A survivor can write its report a moment
    before the dead process is seen to have ended (its sockets close before the kernel reports
    its exit), so every line waits HOLD_S before the launcher decides whether to pass it on.
    """

    def __init__(self, processes: dict[int, subprocess.Popen], debug: bool):
        self.processes, self.debug = processes, debug
        self.ended: dict[int, int] = {}
        self.failed: int | None = None
        self.hidden: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.lines: queue.Queue = queue.Queue()  # (arrival time, process id, line or None at its end)
        self.closed = {pid: threading.Event() for pid in processes}
        for pid, proc in processes.items():
            if proc.stderr is None:
                self.closed[pid].set()
            else:
                threading.Thread(target=self._read, args=(pid, proc.stderr), daemon=True).start()
        threading.Thread(target=self._forward, daemon=True).start()

    def _notice(self) -> None:
        """Records processes that have ended; names the first failure. Call under self.lock."""
        new = {}
        for pid, proc in self.processes.items():
            if pid not in self.ended and (code := _exit_status(proc)) is not None:
                new[pid] = self.ended[pid] = code
        failures = [pid for pid, code in new.items() if code != 0]
        if self.failed is None and failures:
            self.failed = min(failures, key=lambda pid: (_blame_order(new[pid]), pid))

    def _read(self, pid: int, stream) -> None:
        for line in iter(stream.readline, b""):
            self.lines.put((time.monotonic(), pid, line))
        stream.close()
        self.lines.put((time.monotonic(), pid, None))

    def _forward(self) -> None:
        while True:
            arrival, pid, line = self.lines.get()
            time.sleep(max(0.0, arrival + HOLD_S - time.monotonic()))
            if line is None:
                self.closed[pid].set()
                continue
            with self.lock:
                self._notice()
                if self.failed not in (None, pid) and not self.debug:
                    self.hidden[pid] += 1
                    continue
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

    def drain(self, pids, timeout_s: float = 5.0) -> None:
        """Waits (a bounded time: a process's own children may hold its stderr open) until what
        these processes wrote has been passed on or held back."""
        deadline = time.monotonic() + timeout_s
        for pid in pids:
            self.closed[pid].wait(max(0.0, deadline - time.monotonic()))

    def say(self, text: str) -> None:
        with self.lock:
            sys.stderr.write(f"ecgjax.launch: {text}\n")
            sys.stderr.flush()

    def run(self, grace_s: float) -> int:
        """Waits for every process; on the first failure stops the rest. Returns the exit status:
        0 when all succeeded, else the failed process's status (128 + signal when it was killed)."""
        while True:
            with self.lock:
                self._notice()
                failed, done = self.failed, len(self.ended) == len(self.processes)
            if failed is not None:
                return self._stop_after(failed, grace_s)
            if done:
                self.drain(self.processes)
                return 0
            time.sleep(POLL_S)

    def _stop_after(self, failed: int, grace_s: float) -> int:
        code, proc = self.ended[failed], self.processes[failed]
        others = [p for p in self.processes if p != failed]
        finished = [p for p in others if self.ended.get(p) == 0]
        self.drain([failed])  # its own last words (a traceback, an `error:` line) come first
        self.say(f"process {failed} (pid {proc.pid}) {describe_exit(code)}"
                 + (f"; stopping processes {others}" if others else ""))
        stop(self.processes, grace_s)
        self.drain(others)
        for pid in others:
            hidden = self.hidden[pid]
            self.say(f"process {pid} (pid {self.processes[pid].pid}) "
                     + ("had finished" if pid in finished else f"stopped after process {failed} ended")
                     + (f" ({hidden} of its lines held back; --debug shows them)" if hidden else ""))
        return code if code > 0 else 128 - code


def launch(command: list[str], num_processes: int, *, cpu_devices: int = 0, coordinator: str | None = None,
           num_hosts: int = 1, host_index: int = 0, heartbeat_timeout_s: int = multihost.HEARTBEAT_TIMEOUT_S,
           peer_timeout_s: int = multihost.PEER_TIMEOUT_S, grace_s: float = 10.0, debug: bool = False) -> int:
    """Runs `command` as processes host_index*N .. host_index*N + N-1 of num_hosts*N; returns the
    exit status (see `Supervisor.run`)."""
    if not command:
        raise UserError("no command: pass it after `--`, e.g. python -m ecgjax.launch --num_processes=2 -- "
                        "experiments/pretrain.py --config=configs/hybrid.py:runlocal --workdir=runs/x")
    if not num_processes or num_processes < 1:
        raise UserError(f"--num_processes={num_processes}: give the number of processes to start on this host, e.g. 2")
    if num_hosts < 1 or not 0 <= host_index < num_hosts:
        raise UserError(f"--host_index={host_index} --num_hosts={num_hosts}: need 0 <= host_index < num_hosts")
    if peer_timeout_s < 1 or heartbeat_timeout_s < 1:
        raise UserError(f"--peer_timeout_s={peer_timeout_s} --heartbeat_timeout_s={heartbeat_timeout_s}: "
                        f"give whole numbers of seconds >= 1")
    if num_hosts > 1 and not coordinator:
        raise UserError(f"--num_hosts={num_hosts} needs --coordinator=HOST:PORT: host 0's address and a free port, "
                        f"the same on every host")
    coordinator = coordinator or f"localhost:{free_port()}"
    debug = debug or "--debug" in command
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
                            cpu_devices=cpu_devices, heartbeat_timeout_s=heartbeat_timeout_s,
                            peer_timeout_s=peer_timeout_s)
            if debug:  # the launcher's --debug: the processes' tracebacks too (ecgjax.cli)
                env["ECGJAX_DEBUG"] = "1"
            processes[process_id] = subprocess.Popen(child_command(command), env=env, stderr=subprocess.PIPE)
        return Supervisor(processes, debug=debug).run(grace_s)
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
                    heartbeat_timeout_s=_HEARTBEAT_TIMEOUT_S.value, peer_timeout_s=_PEER_TIMEOUT_S.value,
                    grace_s=_GRACE_S.value, debug=cli.debugging()))


if __name__ == "__main__":
    cli.run(main)
