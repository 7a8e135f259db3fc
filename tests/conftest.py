"""Shared fixtures: the real data in ../shared/data (skipped cleanly where absent)."""
from __future__ import annotations

import logging
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ECGJAX_SHARED_DATA", REPO.parent / "shared" / "data"))


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
    from ecgjax.data.cinc import ingest_cinc2017
    from fixtures import write_cinc2017_fixture

    root = tmp_path_factory.mktemp("cinc_store")
    write_cinc2017_fixture(root / "cinc", n_records=40, seed=1)
    return ingest_cinc2017(root / "cinc", root / "store")


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
