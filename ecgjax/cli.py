"""Entry points' error handling: a user's mistake is a few lines, not a traceback.

Every `experiments/*.py` and `python -m ecgjax.*` entry point calls `cli.run(main)` instead of
`absl.app.run(main)`. A `UserError` (bad flag, missing file, unusable record, absurd config)
raised anywhere below is printed as `error: <what and where>` plus the fix, and the process
exits with status 2. `--debug` (or ECGJAX_DEBUG=1) lets the full traceback through, and the
libraries' routine notices that `quiet_libraries` holds back.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from typing import Callable, Iterable

from absl import app, flags

from ecgjax.errors import UserError

_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks instead of one-line errors.")

EXIT_USER_ERROR = 2


def debugging() -> bool:
    return bool(os.environ.get("ECGJAX_DEBUG")) or (flags.FLAGS.is_parsed() and _DEBUG.value)


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def closest_path(path) -> str:
    """' (did you mean DIR/X?)' for the entry of the parent folder closest to a path that does not
    exist (a typo in the last part), or ''."""
    parent, name = os.path.split(os.path.normpath(os.path.expanduser(str(path))))
    entries = os.listdir(parent or ".") if os.path.isdir(parent or ".") else []
    match = difflib.get_close_matches(name, entries, n=1, cutoff=0.6)
    return f" (did you mean {os.path.join(parent, match[0])}?)" if match else ""


def _config_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if hasattr(value, "items"):
            keys.extend(_config_keys(value, path + "."))
    return keys


def _user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError a config file's get_config raised, if any: the innermost of the chain (the flag
    parser wraps it, ml_collections re-raises it with the traceback as text)."""
    found = None
    while error is not None:
        found = error if isinstance(error, UserError) else found
        error = error.__cause__ or error.__context__
    return found


def _missing_required_flags() -> list[str]:
    """Flags marked required (absl.flags.mark_flags_as_required) that were not given."""
    return [name for name in flags.FLAGS if flags.FLAGS[name].value is None
            and any("must have a value other than None" in getattr(v, "message", "")
                    for v in flags.FLAGS[name].validators)]


def _explain_flag_error(error: Exception, argv: list[str]) -> str:
    """A one-line account of a flag-parsing failure (unknown override, missing config file...)."""
    text = str(error)
    user_error = _user_error_in(error)
    if user_error is not None:
        return str(user_error)
    if "must have a value other than None" in text:
        missing = _missing_required_flags() or re.findall(r"Flag --(\w+) must have", text)
        return "; ".join(f"--{name} is required ({flags.FLAGS[name].help.rstrip('.')}): pass --{name}=..."
                         for name in missing)
    given = dict(re.match(r"--(\w+)=(.*)", arg).groups() for arg in argv[1:] if re.match(r"--\w+=", arg))
    for arg in argv[1:]:
        match = re.match(r"--(\w+)\.([\w.]+)=?", arg)
        if not match or match.group(1) not in given or match.group(1) not in flags.FLAGS:
            continue
        flag_name, path = match.groups()
        try:  # the flag's value is unset after a failed parse: load the config file again
            config = flags.FLAGS[flag_name].parser.parse(given[flag_name])
        except Exception:  # not a config flag, or the file itself is broken: say what parsing said
            continue
        if not hasattr(config, "items"):
            continue
        keys = _config_keys(config)
        if path not in keys:
            return f"--{flag_name}.{path}: no such config field{closest(path, keys)}"
    if "No such file or directory" in text or "Failed loading config file" in text:
        paths = re.findall(r"\n\s+(\S+\.py)\n", text) or re.findall(r"'([^']+\.py)'", text)
        where = paths[0] if paths else "the config file"
        return f"{where}: config file not found (pass --config=configs/NAME.py[:arg])"
    return text.strip().splitlines()[-1] if text.strip() else type(error).__name__


def _check_config_files() -> None:
    """ml_collections defers a config file's load error to the first use: surface it now."""
    for name in list(flags.FLAGS):
        value = getattr(flags.FLAGS[name], "value", None)
        if type(value).__name__ == "_ErrorConfig":
            value.keys()  # raises the stored load error


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        remaining = flags.FLAGS(argv)
        _check_config_files()
        return remaining
    except Exception as error:  # absl flag errors and ml_collections' plain ones
        if "--debug" in argv or os.environ.get("ECGJAX_DEBUG"):
            raise
        sys.stderr.write(f"error: {_explain_flag_error(error, argv)}\nPass --help for the flags.\n")
        sys.exit(EXIT_USER_ERROR)


def report(error: BaseException) -> None:
    """Writes a user error as `error: ...` lines on stderr."""
    sys.stderr.write(f"error: {error}\n")


def quiet_libraries() -> None:
    """Holds back notices a user would take for errors, unless --debug.

    JAX logs at INFO (which absl shows by default) that it found no TPU ("Unable to initialize
    backend 'tpu'") and how processes connect: its logger shows warnings only, unless
    --verbosity or JAX_LOGGING_LEVEL says otherwise. After a kill -9, multiprocessing's resource
    tracker (a process of its own, which takes its warning filters from sys.warnoptions) warns of
    the "leaked" semaphores that it then removes: that warning is ignored.
    """
    if debugging():
        return
    if not flags.FLAGS["verbosity"].present and not os.environ.get("JAX_LOGGING_LEVEL"):
        jax_logger = logging.getLogger("jax")
        if jax_logger.level == logging.NOTSET:
            jax_logger.setLevel(logging.WARNING)
    tracker = "ignore:resource_tracker:UserWarning:multiprocessing.resource_tracker"
    if tracker not in sys.warnoptions:
        sys.warnoptions.append(tracker)


def run(main: Callable[[list[str]], object]) -> None:
    """`absl.app.run(main)` with user errors turned into a short message and exit status 2."""

    def guarded(argv):
        quiet_libraries()
        try:
            return main(argv)
        except UserError as error:
            if debugging():
                raise
            report(error)
            sys.exit(EXIT_USER_ERROR)

    app.run(guarded, flags_parser=_parse_flags)
