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
