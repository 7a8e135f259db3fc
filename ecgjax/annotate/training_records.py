"""PTB-XL records for the annotation heads: which records, which leads, and their beats.

Every record of the chosen folds is kept: the AF head needs the rhythms that look irregular but
are not AF (flutter, SVT, sinus arrhythmia, pacing, frequent ectopy) as negatives, and the
heart-rate heads' labels cost nothing (QRS detection). Beats are detected once per record, on
lead II resampled to `beat_fs`; the leads are simultaneous, so the same beats label a crop of
any lead.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import logging
import os
import pathlib

import numpy as np
import pandas as pd

from ecgjax.data import readers
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import canonical_lead_name
from ecgjax.data.preprocess import resample
from ecgjax.signal.heart_rate import detect_qrs

log = logging.getLogger(__name__)

AF_CODE = "AFIB"
# SCP statements of rhythms an AF detector confuses with AF. Atrial flutter is not AF: MIT-BIH's
# reference marks it '(AFL', apart from '(AFIB', and the AF track is scored against '(AFIB' only.
# OTHER_RHYTHM is CinC 2017's 'other rhythm' class (rhythm_records), never a PTB-XL statement.
CONFOUNDER_CODES = ("AFLT", "SVTAC", "PSVT", "SVARR", "SARRH", "PACE", "PVC", "PAC", "BIGU", "TRIGU", "OTHER_RHYTHM")
# Single-lead inputs the heads train on: limb leads near MIT-BIH's MLII and the chest leads its
# second channel (V1, V2, V5) and other telemetry carry.
TRAIN_LEADS = ("I", "II", "III", "aVF", "V1", "V2", "V5")
OTHER, CONFOUNDER, AF = 0, 1, 2  # record groups


def record_group(codes) -> int:
    """AF if the record has an AFIB statement, CONFOUNDER if it has one of CONFOUNDER_CODES, else OTHER."""
    if AF_CODE in codes:
        return AF
    return CONFOUNDER if any(code in codes for code in CONFOUNDER_CODES) else OTHER


@dataclasses.dataclass
class RecordSet:
    """signals [R, T, leads] f32 mV at `fs`, unfiltered; beats: R sorted int arrays of beat samples
    at `beat_fs`; af [R] f32 0/1; group [R] int (OTHER / CONFOUNDER / AF); codes: R SCP-code dicts."""

    signals: np.ndarray
    leads: tuple[str, ...]
    fs: float
    beats: list
    beat_fs: float
    af: np.ndarray
    group: np.ndarray
    codes: list
    ecg_ids: np.ndarray

    def __len__(self):
        return self.signals.shape[0]

    def subset(self, index) -> "RecordSet":
        """The records at `index` (a boolean mask or integer indices)."""
        rows = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, np.int64)
        return dataclasses.replace(self, signals=self.signals[rows], beats=[self.beats[i] for i in rows],
                                   af=self.af[rows], group=self.group[rows], codes=[self.codes[i] for i in rows],
                                   ecg_ids=self.ecg_ids[rows])

    def lead_index(self, lead: str) -> int:
        return self.leads.index(canonical_lead_name(lead))


def select_records(table: pd.DataFrame, folds, num_others: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """Rows of `folds`: every AF and confounder record, and `num_others` random other records (None: all)."""
    rows = table[table["strat_fold"].isin(list(folds))]
    group = rows["scp_codes"].map(record_group)
    others = rows[group == OTHER]
    if num_others is not None:
        others = others.iloc[np.sort(rng.permutation(len(others))[:num_others])]
    return pd.concat([rows[group != OTHER], others]).sort_values("ecg_id")


def _read_one(path, *, leads, fs: float, beat_lead: str, beat_fs: float):
    """(signal [T, leads] at fs, beats at beat_fs) of one record, or the reason it is left out."""
    try:
        record = readers.read_wfdb(path, source="ptbxl")
    except ECGInputError as error:
        return str(error)
    names = [canonical_lead_name(n) for n in record.lead_names]
    signal = np.nan_to_num(record.signal.astype(np.float32))
    beat_signal = resample(signal[:, [names.index(beat_lead)]], record.fs, beat_fs)[:, 0]
    return resample(signal[:, [names.index(lead) for lead in leads]], record.fs, fs), detect_qrs(beat_signal, beat_fs)


def load_records(root: str, table: pd.DataFrame, *, fs: float, leads=TRAIN_LEADS, beat_fs: float = 250.0,
                 beat_lead: str = "II", workers: int = 1) -> RecordSet:
    """Reads the rows of `table` (a sources.ptbxl.load_ptbxl_table selection), keeps `leads` resampled to
    `fs`, and detects the beats of each record on `beat_lead` at `beat_fs` (XQRS at PTB-XL's
    100 Hz double-counts; at 250 Hz it agrees with the SBRAD / STACH statements). Records the
    ingest checks reject (a flat lead, NaN) are left out: a crop of a dead lead has no heart rate.
    `workers` > 1 reads and detects in that many processes (spawned: the parent may hold JAX's threads).
    """
    leads = tuple(canonical_lead_name(lead) for lead in leads)
    rows = table.to_dict("records")
    read = functools.partial(_read_one, leads=leads, fs=fs, beat_lead=canonical_lead_name(beat_lead), beat_fs=beat_fs)
    paths = [pathlib.Path(root) / row["filename"] for row in rows]
    if workers <= 1:
        results = list(map(read, paths))
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(read, paths, chunksize=64))
    kept = [(row, result) for row, result in zip(rows, results) if not isinstance(result, str)]
    for result in results:
        if isinstance(result, str):
            log.info("left out of the training records: %s", result)
    codes = [row["scp_codes"] for row, _ in kept]
    group = np.array([record_group(c) for c in codes], np.int64)
    return RecordSet(np.stack([r[0] for _, r in kept]), leads, float(fs), [r[1] for _, r in kept], float(beat_fs),
                     (group == AF).astype(np.float32), group, codes, np.array([int(row["ecg_id"]) for row, _ in kept]))


def save_records(records: RecordSet, path: str) -> str:
    """One .npz holding a RecordSet (beats flattened with per-record counts, codes as JSON)."""
    np.savez(path, signals=records.signals, leads=np.array(records.leads), fs=records.fs, beat_fs=records.beat_fs,
             beats=np.concatenate([np.zeros(0, np.int64), *records.beats]),
             beat_counts=np.array([b.size for b in records.beats]), af=records.af, group=records.group,
             codes=json.dumps(records.codes), ecg_ids=records.ecg_ids)
    return path


def read_records(path: str) -> RecordSet:
    """The RecordSet save_records wrote."""
    with np.load(path) as f:
        beats = np.split(f["beats"], np.cumsum(f["beat_counts"])[:-1])
        return RecordSet(f["signals"], tuple(f["leads"].tolist()), float(f["fs"]), beats, float(f["beat_fs"]),
                         f["af"], f["group"], json.loads(str(f["codes"])), f["ecg_ids"])


def cached_records(path: str | None, build) -> tuple[RecordSet, bool]:
    """(records, whether they came from `path`): read_records(path) if it exists, else build() saved
    there (path None: always built, not saved)."""
    if path and os.path.isfile(path):
        return read_records(path), True
    records = build()
    if path:
        save_records(records, path)
    return records, False
