"""Worker processes that end when their parent does, even when the parent is killed with SIGKILL.

A Grain prefetch worker blocks on its full output queue and an ingest worker waits for the next
shard; neither notices that the process feeding on them is gone, so a `kill -9` of the parent used
to leave them running (with parent 1) for good. Each worker therefore calls `die_with_parent` first:

    initializer, initargs = pool_initializer()
    ProcessPoolExecutor(n, mp_context=..., initializer=initializer, initargs=initargs)
    ds.mp_prefetch(options, worker_init_fn=GrainWorkerInit())

Why a watchdog thread and not only prctl(PR_SET_PDEATHSIG): the kernel sends the death signal when
the *thread* that forked the child exits, and Grain starts its workers from its own prefetch
threads (which it stops and restarts), so the signal would kill healthy workers. It is armed only
for workers forked by the parent's main thread (`spawned_by_main_thread`, the ingest pool); every
worker also gets a daemon thread polling os.getppid() that ends it once the parent is gone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

POLL_S = 0.25  # how soon an orphan notices; the poll is one getppid() syscall
_PR_SET_PDEATHSIG = 1


def _arm_pdeathsig() -> None:
    """Asks Linux to SIGKILL this process when the thread that forked it ends (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc / no prctl: the watchdog still covers it
        pass


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os._exit(1)  # no cleanup: nothing is left to hand results to, and cleanup could block


def die_with_parent(parent_pid: int, spawned_by_main_thread: bool = False) -> None:
    """Makes this (worker) process end when process `parent_pid` ends.

    Call first thing in the worker. `parent_pid` is the parent's os.getpid(), taken in the parent
    before starting workers, so a parent that died before this call is noticed at once.
    """
    if spawned_by_main_thread:
        _arm_pdeathsig()
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent", daemon=True).start()


def pool_initializer() -> tuple:
    """(initializer, initargs) for a ProcessPoolExecutor created and used from this thread."""
    main = threading.current_thread() is threading.main_thread()
    return die_with_parent, (os.getpid(), main)


class GrainWorkerInit:
    """`worker_init_fn` for Grain's mp_prefetch, (worker_index, worker_count) -> None.

    The parent pid is taken when Grain pickles it for a new worker, i.e. in the process that
    starts that worker, even if the dataset was built in another one.
    """

    def __init__(self, parent_pid: int | None = None):
        self.parent_pid = parent_pid

    def __reduce__(self):
        return GrainWorkerInit, (os.getpid(),)

    def __call__(self, worker_index: int, worker_count: int) -> None:
        del worker_index, worker_count
        die_with_parent(os.getppid() if self.parent_pid is None else self.parent_pid)
