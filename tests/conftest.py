"""Shared fixtures: the real data in ../shared/data (skipped cleanly where absent), and what makes
the suite fast (DESIGN.md, "A fast suite"): one persistent JAX compilation cache for the session,
and artefacts that many tests read (a tiny pretraining run) built once per session."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

import entry_points
from xla_settings import unoptimized

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ECGJAX_SHARED_DATA", REPO.parent / "shared" / "data"))

# ------------------------------------------------------------------ compilation cache

_MADE_CACHE = pytest.StashKey[str]()
_CACHE_SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def pytest_configure(config):
    """Every program compiled in this session, by any test, xdist worker or entry point run as a
    subprocess, is written to one cache and read back by the next compilation of the same program
    (a tiny pretraining step: ~50 s to compile on a busy 2-core machine, ~8 s read back). Through
    the environment, which JAX reads at import and subprocesses and xdist workers inherit; a
    JAX_COMPILATION_CACHE_DIR already set (a cache kept across runs) is used as it is."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.stash[_MADE_CACHE] = tempfile.mkdtemp(
            prefix="ecgjax-tests-jax-cache-")
    for name, value in _CACHE_SETTINGS.items():
        os.environ.setdefault(name, value)
    if "jax" in sys.modules:  # imported by a plugin before this hook: tell it directly
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """The process that made the cache (the controller under xdist) removes it."""
    made = config.stash.get(_MADE_CACHE, None)
    if made and not hasattr(config, "workerinput"):
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def float32_products():
    """Products in full float32 for one test (`@pytest.mark.usefixtures("float32_products")`): for
    equivalences that hold in exact arithmetic, checked to float32 rounding. By default, on an AMX
    CPU, Dense and Conv products run in one bf16 pass (ecgjax.models.products); tests/test_products.py
    checks that path against these float32 products."""
    import jax  # not at the top: pytest_configure sets JAX's cache before jax is imported

    with jax.default_matmul_precision("float32"):
        yield


@pytest.fixture
def unoptimized_xla():
    """XLA's optimisations off for one test (tests/xla_settings.py): `@pytest.mark.usefixtures("unoptimized_xla")`."""
    with unoptimized():
        yield


# ------------------------------------------------------------------ two workers finishing together

# Test files from the longest to run (seconds in `-n 2` on a 2-core machine at load 10-14, December
# 2026: test_train ~870, test_multiprocess ~700, test_probe ~700, test_downstream_recipe ~300,
# test_pretrain_cli ~250, test_sweep ~200, the next ones 50-100); the others follow in their usual
# order. Only an order: a file missing here, or a stale rank, costs balance, never a test.
LONGEST_FIRST = ("test_train.py", "test_multiprocess.py", "test_probe.py", "test_downstream_recipe.py",
                 "test_pretrain_cli.py", "test_sweep.py", "test_api.py", "test_pipeline.py", "test_augment.py",
                 "test_annotate_training.py", "test_models.py", "test_embed.py", "test_cli_errors.py",
                 "test_diagnostics.py", "test_annotate_cli.py", "test_orphans.py", "test_heart_rate_pretext.py")


def pytest_collection_modifyitems(items):
    """The longest files first (LONGEST_FIRST), each file's tests in their usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config, log):
    """Under `-n N` with the default --dist=load: whole files to each worker, in the order above
    (--dist=loadfile without its reordering by test count). A file's module fixtures are then built
    once, and each worker takes the next longest file when it is free, so both finish together. An
    explicit other --dist is left to pytest-xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False
    return LoadFileScheduling(config, log)


# ------------------------------------------------------------------ built once per session

def _session_dir(tmp_path_factory) -> pathlib.Path:
    """A folder every xdist worker of this session sees: pytest's base temporary folder (each
    worker's own is a subfolder of it)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    shared.mkdir(exist_ok=True)
    return shared


@contextlib.contextmanager
def _lock(path: pathlib.Path):
    with open(path, "w") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def build_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """`build(path)` once per session, by whichever worker asks first; the other waits for it
    (a lock file) and gets the same folder. A failed build is tried again by the next caller, so
    each test that needs it reports the failure. Tests read what it holds; one that changes it
    works on a copy."""
    root = _session_dir(tmp_path_factory)
    path, done = root / name, root / f"{name}.done"
    with _lock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            done.touch()
    return path


# A tiny pretraining run: ViT HL at runlocal size on a 24-patient synthetic cohort, 2 steps of 8.
TINY_PRETRAIN_FLAGS = ("--config=configs/hybrid.py:runlocal", "--config.train.num_steps=2",
                       "--config.train.batch_size=8", "--config.train.checkpoint_every=2",
                       "--config.data.synthetic.num_patients=24", "--config.data.synthetic.records_per_patient=2")


@pytest.fixture(scope="session")
def pretrain_args(tmp_path_factory) -> list[str]:
    """experiments/pretrain.py and the flags of `pretrained_run` (its synthetic cohort's cache
    included), without --workdir: the same run elsewhere, or with one more flag."""
    cache = build_once(tmp_path_factory, "synthetic_cache", lambda path: path.mkdir())
    return ["experiments/pretrain.py", *TINY_PRETRAIN_FLAGS, f"--config.data.synthetic.cache_dir={cache}"]


@pytest.fixture(scope="session")
def pretrained_run(pretrain_args, tmp_path_factory) -> pathlib.Path:
    """The workdir of a finished 2-step run of `pretrain_args` through the entry point (config.json,
    metrics.jsonl, checkpoints/2), made once per session. Copy it before changing it."""

    def build(path):
        with unoptimized():  # what its readers check is computed by them, not by the pretraining
            result = entry_points.run(*pretrain_args, f"--workdir={path}")
        assert result.returncode == 0, result.stderr[-3000:]

    return build_once(tmp_path_factory, "pretrained_run", build)



def _shared(name: str) -> pathlib.Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


@pytest.fixture(scope="session")
def ptbxl_dir() -> pathlib.Path:
    """../shared/data/ptbxl: PTB-XL v1.0.3 at 100 Hz (subset, folds 1-9)."""
    return _shared("ptbxl")


@pytest.fixture(scope="session")
def mitdb_dir() -> pathlib.Path:
    """../shared/data/mitdb: eight MIT-BIH Arrhythmia records with .atr annotations."""
    return _shared("mitdb")


@pytest.fixture(scope="session")
def cinc2017_dir() -> pathlib.Path:
    """../shared/data/cinc2017: half the CinC 2017 training set, byte for byte as distributed."""
    return _shared("cinc2017")


@pytest.fixture(scope="session")
def cinc_store(tmp_path_factory):
    """One CinC 2017 store, built once per session for the tests that only read it: 40 generated
    records in the layout PhysioNet distributes (fixtures.write_cinc2017_fixture: checksum 0, CRLF,
    .mat), ingested as `ingest --source=cinc2017` does (001's 75/5/20 % split)."""
    from ecgjax.data.ingest import build_store
    from fixtures import write_cinc2017_fixture

    root = tmp_path_factory.mktemp("cinc_store")
    write_cinc2017_fixture(root / "cinc", n_records=40, seed=1)
    return build_store("cinc2017", root / "cinc", root / "store")


@pytest.fixture(autouse=True)
def _restore_ecgjax_logger():
    """Puts the "ecgjax" logger back as each test found it. An entry point run in-process calls
    `metrics_log.setup_console_logging`, which stops propagation to the root logger, and so to
    caplog's handler: a later test in the same worker would no longer see ecgjax's warnings."""
    ecgjax_logger = logging.getLogger("ecgjax")
    saved = (ecgjax_logger.level, ecgjax_logger.propagate, list(ecgjax_logger.handlers))
    yield
    ecgjax_logger.setLevel(saved[0])
    ecgjax_logger.propagate = saved[1]
    ecgjax_logger.handlers[:] = saved[2]
