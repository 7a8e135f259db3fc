"""An entry point run in this process, as `python experiments/X.py ...` or `python -m M ...` runs it.

A subprocess costs a Python start and a JAX import (seconds, far more on a busy machine), which a
test of what an entry point prints, writes or refuses does not need. `run` executes the script's
`__main__` block (runpy) from the repository root with that argv and returns what a subprocess
would: the status its SystemExit carried, stdout and stderr as written, and for an uncaught
exception its traceback on stderr and status 1, as the interpreter prints it. Afterwards the flags
the script defined are removed from absl's one global registry (the next entry point defines its
own `--config`), every flag is back at its default, and the loggers are as they were. Use a
subprocess where the process boundary is what is tested (signals, exit of worker processes,
XLA flags read at start-up, several processes).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import runpy
import subprocess
import sys
import traceback
import warnings

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _loggers_kept():
    """The root and "ecgjax" loggers and absl's verbosity as they were (absl.app installs its
    handler on the root logger; ecgjax's console logging sets its own)."""
    saved = [(log, log.level, log.propagate, list(log.handlers))
             for log in (logging.getLogger(), logging.getLogger("ecgjax"))]
    # A console handler left by an earlier in-process main would hold an earlier stderr: the run
    # makes its own, on the stderr captured here.
    logging.getLogger("ecgjax").handlers[:] = [h for h in saved[1][3] if not getattr(h, "_ecgjax", False)]
    try:
        yield
    finally:
        for log, level, propagate, handlers in saved:
            log.setLevel(level)
            log.propagate = propagate
            log.handlers[:] = handlers


def _forget_script_flags(known: set[str]) -> None:
    """Removes the flags defined since `known` but those of imported modules (absl.logging, grain,
    orbax define theirs once, at import): the script's own and its config's overrides (which absl
    files under absl.flags)."""
    libraries = {flag.name for module, defined in flags.FLAGS.flags_by_module_dict().items()
                 if module in sys.modules and not module.startswith("absl.flags") for flag in defined}
    for name in set(flags.FLAGS) - known - libraries:
        delattr(flags.FLAGS, name)


def run(*args, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """`run("experiments/probe.py", "--config=...")` or `run("-m", "ecgjax.data.ingest", ...)`.

    `env`: variables set (or, with None, removed) for the run; ECGJAX_DEBUG is removed unless given.
    """
    args = [str(a) for a in args]
    module = args[1] if args[0] == "-m" else None
    argv = [module, *args[2:]] if module else args
    changes = {"ECGJAX_DEBUG": None, **(env or {})}
    saved_env = {name: os.environ.get(name) for name in changes}
    saved_argv, saved_cwd, known = sys.argv, os.getcwd(), set(flags.FLAGS)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    flags.FLAGS.unparse_flags()
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(REPO)
        sys.argv = list(argv)
        with _loggers_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if module:
                    with warnings.catch_warnings():  # runpy's note that the module is imported already
                        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
                        runpy.run_module(module, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(str(REPO / argv[0]), run_name="__main__")
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:  # sys.exit("message"): printed, status 1
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except KeyboardInterrupt:
                raise
            except BaseException:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _forget_script_flags(known)
        flags.FLAGS.unparse_flags()
    return subprocess.CompletedProcess([sys.executable, *args], code, out.getvalue(), err.getvalue())
