"""Beat positions of every record of a store, found once by a QRS detector and kept beside it.

Labels that need no human, such as the heart-rate pretext of Weimann & Conrad (001), come from
the beats inside a crop. Detecting them per crop would cost ~10 ms each on the host; detected once
per record (ingest-time cost, ~10 ms per 10 s record) they are two memory-mapped arrays:

    STORE/beats/positions.npy  [total beats] int32   sample index at the store's rate
    STORE/beats/offsets.npy    [records + 1] int64   record i's beats: positions[offsets[i]:offsets[i+1]]
    STORE/beats/detector.json  how they were found (lead, detector, rate)

    python -m ecgjax.data.beats --store=stores/ptbxl --workers=2

Pretraining builds them when a method needs them and they are missing (`load_or_build`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib

import numpy as np
from scipy import signal as sp_signal

from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.store import ECGStore
from ecgjax.data.workers import pool_initializer
from ecgjax.signal.heart_rate import detect_qrs, heart_rate_class, heart_rate_from_beats

log = logging.getLogger(__name__)

BEATS_DIR = "beats"
# Lead II first (the rhythm lead); the next present one where a record lacks it.
LEAD_PREFERENCE = ("II", "I", "V2", "V5", "III", "aVF", "V1", "V3", "V4", "V6", "aVR", "aVL")
# XQRS at 100 Hz double-counts beats on PTB-XL; at 250 Hz it agrees with the SBRAD / STACH
# statements (see ecgjax.annotate.training_records), so slower stores are detected at this rate.
MIN_DETECTION_FS = 250.0


@dataclasses.dataclass(frozen=True)
class BeatIndex:
    positions: np.ndarray  # [total beats] int32 sample indices at the store's rate
    offsets: np.ndarray    # [records + 1] int64

    def of(self, record: int) -> np.ndarray:
        """[beats] sample positions of one record, sorted."""
        return self.positions[self.offsets[record]:self.offsets[record + 1]]

    def heart_rate_class(self, record: int, start: int, length: int, fs: float, margin_s: float = 1.0) -> int:
        """001's class (ecgjax.signal.heart_rate) of the crop [start, start + length) of `record`:
        the mean 60 / RR of the beats in the crop extended by `margin_s` at both ends."""
        bpm = heart_rate_from_beats(self.of(record), fs, np.array([start]), length, margin=int(round(margin_s * fs)))
        return int(heart_rate_class(bpm)[0])


def _detect(store: ECGStore, record: int) -> np.ndarray:
    """Beats of one record on its preferred present lead, at the store's rate."""
    mask = store.lead_mask(record)
    present = [lead for lead in LEAD_PREFERENCE if mask[CANONICAL_LEADS.index(lead)]]
    if not present:
        return np.zeros(0, np.int32)
    x = store.read(record)[:, CANONICAL_LEADS.index(present[0])]
    up = max(1, int(np.ceil(MIN_DETECTION_FS / store.fs)))
    if up > 1:  # detect at >= 250 Hz, then map the positions back
        return (detect_qrs(sp_signal.resample_poly(x, up, 1), store.fs * up) // up).astype(np.int32)
    return detect_qrs(x, store.fs).astype(np.int32)


def _detect_range(store_path: str, first: int, stop: int) -> list[np.ndarray]:
    store = ECGStore(store_path).signals_only()
    return [_detect(store, i) for i in range(first, stop)]


def build(store: ECGStore, *, workers: int = 1, chunk: int = 500) -> BeatIndex:
    """Detects the beats of every record of `store` and writes STORE/beats (atomically: a half-built
    index is never read)."""
    bounds = list(range(0, len(store), chunk)) + [len(store)]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    log.info("detecting the beats of %d records of %s (%d workers)", len(store), store.path, workers)
    if workers <= 1:
        parts = [_detect_range(str(store.path), a, b) for a, b in ranges]
    else:  # spawned: the parent may already hold JAX's threads
        initializer, initargs = pool_initializer()
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=initializer, initargs=initargs) as pool:
            parts = list(pool.map(_detect_range, [str(store.path)] * len(ranges), *zip(*ranges)))
    beats = [b for part in parts for b in part]
    offsets = np.concatenate([[0], np.cumsum([b.size for b in beats])]).astype(np.int64)
    positions = np.concatenate([np.zeros(0, np.int32), *beats]).astype(np.int32)
    final = store.path / BEATS_DIR
    partial = store.path / f"{BEATS_DIR}.partial-{os.getpid()}"
    partial.mkdir(exist_ok=True)
    np.save(partial / "positions.npy", positions)
    np.save(partial / "offsets.npy", offsets)
    (partial / "detector.json").write_text(json.dumps(
        {"detector": "xqrs", "leads": LEAD_PREFERENCE, "min_fs": MIN_DETECTION_FS, "records": len(store)}))
    try:
        partial.rename(final)
    except OSError:  # another process finished first: theirs is the same
        for path in partial.iterdir():
            path.unlink()
        partial.rmdir()
    return load(store)


def load(store: ECGStore) -> BeatIndex | None:
    """The store's beat index, memory-mapped; None when it has not been built."""
    root = store.path / BEATS_DIR
    if not (root / "offsets.npy").is_file():
        return None
    index = BeatIndex(np.load(root / "positions.npy", mmap_mode="r"), np.load(root / "offsets.npy"))
    if index.offsets.size != len(store) + 1:
        raise ValueError(f"{root}: beats of {index.offsets.size - 1} records, the store has {len(store)}; "
                         f"delete {root} to detect them again")
    return index


def load_or_build(store: ECGStore, *, workers: int = 1) -> BeatIndex:
    return load(store) or build(store, workers=workers)


def main(argv) -> None:
    del argv
    store = ECGStore(_STORE.value)
    index = load(store)
    if index is None:
        index = build(store, workers=_WORKERS.value)
    counts = np.diff(index.offsets)
    print(f"{store.path / BEATS_DIR}: {index.positions.size:,} beats in {len(store):,} records "
          f"(median {np.median(counts):.0f} per record, {int((counts < 2).sum()):,} with fewer than 2)")


if __name__ == "__main__":
    from absl import app, flags

    _STORE = flags.DEFINE_string("store", None, "An ingested store directory.", required=True)
    _WORKERS = flags.DEFINE_integer("workers", 1, "Detector processes.")
    app.run(main)
