"""Sharded on-disk ECG store: O(1) random access to any segment of any record.

Layout of a store directory (written once by `ecgjax.data.ingest`):

    store.json              fs, sample dtype, shard list, split config, ingest spec
    metadata.csv            one row per record, in store order (record_id, patient_id, patient_index,
                            source, original_fs, num_samples, split, shard, label columns ...)
    index.npy               [num_records, 3] int64: shard, offset (samples into that shard), length
    lead_mask.npy           [num_records, 12] bool
    rejected.csv            records the readers refused, with the reason
    notes.csv               records kept with a note (record, path, kind, note): a checksum that
                            disagrees, non-ECG channels dropped, ... (readers.NOTE_KINDS)
    shards/shard_NNNNN/     one folder per shard, renamed into place atomically when complete:
        signals.npy         [shard_time, 12] float16, records concatenated along time (mV)
        index.npy           [shard_records, 2] int64: offset, length
        lead_mask.npy       [shard_records, 12] bool
        records.jsonl       per-record metadata (one JSON object per line)
        rejected.jsonl      records of this shard that were rejected
        notes.jsonl         notes on records of this shard that were kept
        COMPLETE            completion marker, written last

Signals are memory-mapped (`np.load(mmap_mode='r')`), one open map per shard, so a million
records need only `num_shards` maps and no RAM beyond the page cache. float16 halves disk and
page-cache footprint against float32; its rounding error on PTB-XL is below the recording's
own resolution (see benchmarks/RESULTS.md, '## Data').
"""
from __future__ import annotations

import copy
import json
import os
import pathlib

import numpy as np
import pandas as pd

from ecgjax.errors import UserError

SAMPLE_DTYPE = np.float16
NUM_LEADS = 12
SHARDS_DIR = "shards"
COMPLETE_MARKER = "COMPLETE"


def shard_dir(store_dir, shard: int) -> pathlib.Path:
    return pathlib.Path(store_dir) / SHARDS_DIR / f"shard_{shard:05d}"


def shard_is_complete(store_dir, shard: int) -> bool:
    return (shard_dir(store_dir, shard) / COMPLETE_MARKER).is_file()


def write_shard(store_dir, shard: int, signals, lead_masks, records, rejected, notes=()) -> pathlib.Path:
    """Writes one shard to a temporary folder and renames it into place atomically.

    Args:
      signals: list of [time_i, 12] arrays (mV), one per accepted record.
      lead_masks: list of [12] bool arrays.
      records: list of JSON-serialisable metadata dicts, one per accepted record.
      rejected: list of dicts (record, path, reason) for records that were refused.
      notes: list of dicts (record, path, kind, note) on accepted records.
    Returns:
      The shard's final folder. A crash before the rename leaves only a `.tmp-*` folder,
      which a restart ignores and overwrites.
    """
    final = shard_dir(store_dir, shard)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in signals], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    data = (np.concatenate(signals, axis=0) if signals else np.zeros((0, NUM_LEADS)))
    np.save(tmp / "signals.npy", data.astype(SAMPLE_DTYPE))
    np.save(tmp / "index.npy", np.stack([offsets, lengths], axis=1) if signals else np.zeros((0, 2), np.int64))
    np.save(tmp / "lead_mask.npy", np.asarray(lead_masks, bool).reshape(-1, NUM_LEADS))
    for name, rows in (("records.jsonl", records), ("rejected.jsonl", rejected), ("notes.jsonl", notes)):
        with open(tmp / name, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    (tmp / COMPLETE_MARKER).write_text("ok\n")
    if final.exists():  # an earlier, incomplete attempt (marker missing)
        for child in final.iterdir():
            child.unlink()
        final.rmdir()
    os.replace(tmp, final)
    return final


def read_shard_tables(store_dir, shard: int):
    """Returns (records, rejected, notes: list[dict] each, index [n, 2], lead_mask [n, 12]) of a shard;
    a shard written before notes were kept has none."""
    folder = shard_dir(store_dir, shard)
    tables = []
    for name in ("records.jsonl", "rejected.jsonl", "notes.jsonl"):
        if not (folder / name).is_file() and name == "notes.jsonl":
            tables.append([])
            continue
        with open(folder / name) as f:
            tables.append([json.loads(line) for line in f if line.strip()])
    return (*tables, np.load(folder / "index.npy"), np.load(folder / "lead_mask.npy"))


class StoreNotFoundError(UserError, FileNotFoundError):
    """`path` holds no usable store; the message says how to make one."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def check_store_dir(path) -> pathlib.Path:
    """`path` as a Path when it holds a finished store, else StoreNotFoundError naming the fix."""
    path = pathlib.Path(path)
    if (path / "store.json").is_file():
        return path
    make = (f"create it with `python -m ecgjax.data.ingest --source=SOURCE --input=CORPUS --output={path}` "
            f"or pass an existing store")
    if not path.exists():
        raise StoreNotFoundError(path, f"not an ECG store (no such directory); {make}")
    if not path.is_dir():
        raise StoreNotFoundError(path, f"not an ECG store (a file, not a directory); {make}")
    if (path / SHARDS_DIR).is_dir():  # store.json is written last, so ingest stopped before the end
        raise StoreNotFoundError(path, "not an ECG store yet: its ingest did not finish (no store.json); run the "
                                       "same ingest command again to resume it")
    raise StoreNotFoundError(path, f"not an ECG store (no store.json); {make}")


class ECGStore:
    """Read access to a store written by ingest.

    Picklable (memory maps are reopened lazily in each process), so it can be handed to
    Grain worker processes.
    """

    def __init__(self, path):
        self.path = check_store_dir(path)
        self.config = json.loads((self.path / "store.json").read_text())
        self.fs = float(self.config["fs"])
        self.metadata = pd.read_csv(self.path / "metadata.csv", dtype={"record_id": str, "patient_id": str},
                                    keep_default_na=False, na_values=[""])
        self._index = np.load(self.path / "index.npy")  # [N, 3]: shard, offset, length
        self._lead_mask = np.load(self.path / "lead_mask.npy")
        self._maps: dict[int, np.ndarray] = {}
        patient_index = self.metadata["patient_index"].to_numpy()
        order = np.argsort(patient_index, kind="stable")
        bounds = np.searchsorted(patient_index[order], np.arange(self.num_patients + 1))
        self._records_by_patient = [order[bounds[p]:bounds[p + 1]] for p in range(self.num_patients)]

    def signals_only(self) -> "ECGStore":
        """A copy for reading signals and lead masks only (`read`, `lead_mask`, `lengths`, `fs`): no
        metadata table and no per-patient lists, which every loader worker process would otherwise
        hold again (~600 bytes per record)."""
        slim = copy.copy(self)
        slim.metadata, slim._records_by_patient, slim._maps = None, [], {}
        return slim

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return int(self._index.shape[0])

    @property
    def num_patients(self) -> int:
        return int(self.config["num_patients"])

    @property
    def lengths(self) -> np.ndarray:
        """[num_records] int64: samples per record."""
        return self._index[:, 2]

    def _shard(self, shard: int) -> np.ndarray:
        data = self._maps.get(shard)
        if data is None:
            data = np.load(shard_dir(self.path, shard) / "signals.npy", mmap_mode="r")
            self._maps[shard] = data
        return data

    def read(self, i: int, start: int = 0, length: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, start + length) of record i as [length, 12] float32 mV (absent leads are 0).

        `out` ([length, 12] float32), if given, receives the samples without an intermediate copy.
        """
        shard, offset, num_samples = (int(v) for v in self._index[i])
        if length is None:
            length = num_samples - start
        if start < 0 or length < 0 or start + length > num_samples:
            raise IndexError(f"record {i}: window [{start}, {start + length}) outside [0, {num_samples})")
        begin = offset + start
        window = self._shard(shard)[begin:begin + length]
        if out is None:
            return np.asarray(window, dtype=np.float32)
        out[...] = window
        return out

    def lead_mask(self, i: int) -> np.ndarray:
        """[12] bool: True where record i has that canonical lead."""
        return self._lead_mask[i]

    def records_of_patient(self, patient_index: int) -> np.ndarray:
        """Store indices of every record of one patient (patient_index as in metadata)."""
        return self._records_by_patient[patient_index]

    def split_indices(self, split: str) -> np.ndarray:
        """Store indices of the records in `split` ('train', 'val', 'test')."""
        return np.flatnonzero(self.metadata["split"].to_numpy() == split)

    def split_patients(self, split: str) -> np.ndarray:
        """Sorted patient indices with at least one record in `split`."""
        return np.unique(self.metadata["patient_index"].to_numpy()[self.split_indices(split)])

    def label_columns(self) -> list[str]:
        return list(self.config.get("label_columns", []))
