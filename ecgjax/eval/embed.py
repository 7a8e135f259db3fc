"""One embedding per record from a pretrained encoder: records in, pooled features out.

    summary = embed(checkpoint="runs/hl", input_path="stores/ptbxl", output_dir="runs/hl/embeddings")

Each record (from an ingested ECGStore, or a folder of WFDB records read and preprocessed the
way ingest does it) is cut into windows of the encoder's input length (data.segment_s at
data.fs): back to back from the start, the last one aligned to the end of the record, a record
shorter than one window zero-padded at its end. Every window goes through the frozen encoder
(its pooled features, as a probe sees them); the record's embedding is the mean over its windows.
Windows of consecutive records share fixed-size batches (the last one zero-padded), so the
jitted encoder compiles once.

output_dir receives:
  embeddings.npy  [records, features] float32, row i = record i of embeddings.csv
  embeddings.csv  row, record_id, patient_id, num_windows (+ path for WFDB input)
  rejected.csv    record, path, reason: WFDB records that could not be read (the rest go on)
  embed.json      checkpoint, input, encoder rate and window, counts
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import tqdm

from ecgjax import loader
from ecgjax.data import ingest, preprocess, readers
from ecgjax.data.sources.wfdb import record_paths
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.store import ECGStore
from ecgjax.downstream import windows as windows_lib
from ecgjax.downstream.network import compiled_encoder
from ecgjax.errors import UserError

logger = logging.getLogger("ecgjax")

EMBEDDINGS_FILE = "embeddings.npy"
TABLE_FILE = "embeddings.csv"
REJECTED_FILE = "rejected.csv"
SUMMARY_FILE = "embed.json"
REJECTED_COLUMNS = ("record", "path", "reason")


# ------------------------------------------------------------------------------------ encoder

@dataclasses.dataclass
class FrozenEncoder:
    """A pretraining run's encoder in evaluation mode.

    `features(windows [batch, num_samples, len(leads)] f32 mV at fs)` -> [batch, feature_dim]
    pooled features (asynchronous jax array; one compilation per batch shape).
    """

    checkpoint: str
    fs: float
    num_samples: int
    variables: dict
    apply: Callable[[dict, np.ndarray], Any]
    leads: tuple[str, ...] = CANONICAL_LEADS

    def features(self, windows: np.ndarray):
        return self.apply(self.variables, windows)


def load_frozen_encoder(checkpoint: str) -> FrozenEncoder:
    """The encoder of a pretraining run's latest checkpoint or of an exported / released encoder
    (projection / decoder dropped)."""
    network = loader.load_pretrained(checkpoint, "--checkpoint")
    in_leads = int(network.encoder_config.get("in_leads") or len(CANONICAL_LEADS))
    if in_leads != len(CANONICAL_LEADS):
        raise UserError(f"--checkpoint={checkpoint}: its encoder takes {in_leads} leads; embeddings are "
                        f"made for {len(CANONICAL_LEADS)}-lead encoders only")
    return FrozenEncoder(network.source, network.fs, network.num_samples, network.encoder_variables,
                         compiled_encoder(network.encoder_config))


# ------------------------------------------------------------------------------------ windows

def record_windows(signal: np.ndarray, length: int) -> np.ndarray:
    """[time, leads] -> [windows, length, leads] covering the whole record.

    Windows follow each other from sample 0; the last is aligned to the end (so it may overlap
    its predecessor); a record shorter than `length` gives one window, zero-padded at the end
    (downstream.windows.sliding_windows with a stride of one window).
    """
    signal = np.asarray(signal, np.float32)
    owner, starts = windows_lib.sliding_windows(np.array([signal.shape[0]]), length, length)
    return windows_lib.cut_windows(signal[None], owner, starts, length)


# ------------------------------------------------------------------------------------ sources

@dataclasses.dataclass
class Source:
    """The records to embed: `load(item)` -> (row info {record_id, patient_id[, path]},
    signal [time, len(encoder.leads)] f32 mV at the encoder's rate); raises ECGInputError for an unusable record,
    described in rejected.csv by `describe(item)` -> (record name, path)."""

    kind: str
    items: Sequence
    load: Callable[[Any], tuple[dict, np.ndarray]]
    describe: Callable[[Any], tuple[str, str]]


def store_source(store: ECGStore, fs: float, split: str = "") -> Source:
    """Records of an ingested store (all, or those of `split`), resampled to `fs` if needed."""
    if split:
        splits = sorted(set(store.metadata["split"]))
        indices = store.split_indices(split)
        if indices.size == 0:
            raise UserError(f"--split={split}: no records of {store.path} in that split "
                            f"(its splits: {', '.join(splits)})")
    else:
        indices = np.arange(len(store))
    if abs(store.fs - fs) > 1e-6:
        logger.warning("store %s is at %g Hz, the encoder at %g Hz: records are resampled", store.path,
                       store.fs, fs)
    record_ids = store.metadata["record_id"].to_numpy()
    patient_ids = store.metadata["patient_id"].to_numpy()

    def load(i):
        signal = store.read(int(i))
        if abs(store.fs - fs) > 1e-6:
            signal = preprocess.resample(signal, store.fs, fs)
        return {"record_id": str(record_ids[i]), "patient_id": str(patient_ids[i])}, signal

    return Source("store", indices, load, lambda i: (str(record_ids[i]), str(store.path)))


def wfdb_source(root: pathlib.Path, fs: float) -> Source:
    """WFDB records under `root` (a folder, a RECORDS file or one .hea), read and preprocessed as
    ingest does: validated reader, ±60 mV rule, resampling to `fs`, canonical 12 leads (absent
    and flat leads zero)."""
    paths = record_paths(root)
    if not paths:
        raise UserError(f"--input={root}: no WFDB records (*.hea) and no store.json; pass an ingested "
                        "store or a folder of WFDB records")

    def load(path):
        try:
            record = readers.read_wfdb(path, allow_flat_leads=True)
            signal, _ = preprocess.preprocess_record(record, target_fs=fs, validate=False,
                                                     allow_flat_leads=True)
        except ECGInputError:
            raise
        except ingest.REJECTABLE as error:  # the file libraries' own failures on a corrupt file
            raise ECGInputError(path, f"{type(error).__name__}: {error}") from None
        return {"record_id": str(record.record_id), "patient_id": str(record.patient_id),
                "path": str(record.path or path)}, signal

    return Source("wfdb", paths, load, lambda path: (pathlib.Path(path).name, str(path)))


def open_source(input_path: str, fs: float, split: str = "") -> Source:
    """An ingested store directory (has store.json) or WFDB records; UserError for anything else."""
    root = pathlib.Path(os.path.expanduser(input_path))
    if not root.exists():
        raise UserError(f"--input={input_path}: no such file or directory")
    if (root / "store.json").is_file():
        return store_source(ECGStore(root), fs, split)
    if split:
        raise UserError(f"--split={split} selects records of an ingested store; {input_path} is not "
                        "one (no store.json): drop --split")
    return wfdb_source(root, fs)


# ---------------------------------------------------------------------------------- embedding

def embed_records(encoder: FrozenEncoder, source: Source, *, batch_size: int = 64,
                  progress: bool = True) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Mean pooled features of every usable record of `source`.

    Returns (embeddings [records, features] f32, rows [{row, record_id, patient_id, num_windows,
    ...}] in the same order, rejected [{record, path, reason}]).
    """
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size} must be at least 1")
    rows: list[dict] = []
    rejected: list[dict] = []
    sums: list[np.ndarray] = []     # per row: float64 [features], filled as batches come back
    batch = np.zeros((batch_size, encoder.num_samples, len(encoder.leads)), np.float32)
    owners: list[int] = []          # row of each filled slot of `batch`
    in_flight = None                # (features of the previous batch, its owners): the device
                                    # runs one batch while the host cuts the next

    def collect(pending):
        features, rows_of = pending
        features = np.asarray(features, np.float64)[:len(rows_of)]
        for row in np.unique(rows_of):
            while len(sums) <= row:
                sums.append(np.zeros(features.shape[1]))
            sums[row] += features[np.asarray(rows_of) == row].sum(axis=0)

    def dispatch():
        nonlocal batch, owners, in_flight
        launched = (encoder.features(batch), np.asarray(owners))
        if in_flight is not None:
            collect(in_flight)
        in_flight = launched
        # A fresh buffer: on CPU the launched computation may still read the old one.
        batch, owners = np.zeros_like(batch), []

    for item in tqdm.tqdm(source.items, unit="rec", desc="embed", disable=not progress):
        try:
            info, signal = source.load(item)
        except ECGInputError as error:
            record, path = source.describe(item)
            logger.warning("skipped %s: %s", record, error.problem)
            rejected.append({"record": record, "path": path, "reason": error.problem})
            continue
        windows = record_windows(signal, encoder.num_samples)
        row = len(rows)
        rows.append({"row": row, **info, "num_windows": len(windows)})
        for window in windows:
            batch[len(owners)] = window
            owners.append(row)
            if len(owners) == batch_size:
                dispatch()
    if owners:
        dispatch()
    if in_flight is not None:
        collect(in_flight)
    if not rows:
        return np.zeros((0, 0), np.float32), rows, rejected
    counts = np.array([row["num_windows"] for row in rows], np.float64)
    return (np.stack(sums) / counts[:, None]).astype(np.float32), rows, rejected


def _table_columns(kind: str) -> list[str]:
    return ["row", "record_id", "patient_id", "num_windows"] + (["path"] if kind == "wfdb" else [])


def embed(checkpoint: str, input_path: str, output_dir: str, *, split: str = "", batch_size: int = 64,
          progress: bool = True) -> dict:
    """Writes embeddings.npy / embeddings.csv / rejected.csv / embed.json; returns the summary."""
    started = time.perf_counter()
    # Flags and inputs are checked before the checkpoint is restored (seconds on a big encoder).
    source = open_source(input_path, float(loader.pretrain_config(checkpoint, "--checkpoint").data.fs), split)
    output = pathlib.Path(os.path.expanduser(output_dir))
    if output.exists() and not output.is_dir():
        raise UserError(f"--output={output_dir}: exists and is not a directory; pass a directory")
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size} must be at least 1")
    encoder = load_frozen_encoder(checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    logger.info("embedding %d %s records with %s (%g Hz, windows of %d samples)", len(source.items),
                source.kind, encoder.checkpoint, encoder.fs, encoder.num_samples)
    embeddings, rows, rejected = embed_records(encoder, source, batch_size=batch_size, progress=progress)
    pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).to_csv(output / REJECTED_FILE, index=False)
    if not rows:
        raise UserError(f"--input={input_path}: no usable records ({len(rejected)} rejected, reasons in "
                        f"{output / REJECTED_FILE})")
    np.save(output / EMBEDDINGS_FILE, embeddings)
    pd.DataFrame(rows, columns=_table_columns(source.kind)).to_csv(output / TABLE_FILE, index=False)
    summary = {"checkpoint": encoder.checkpoint, "input": str(input_path), "input_kind": source.kind,
               "split": split or None, "fs": encoder.fs, "window_samples": encoder.num_samples,
               "records": len(rows), "windows": int(sum(row["num_windows"] for row in rows)),
               "rejected": len(rejected), "features": int(embeddings.shape[1]),
               "seconds": round(time.perf_counter() - started, 2)}
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    logger.info("embeddings %s of %d records (%d windows, %d rejected) -> %s", embeddings.shape,
                len(rows), summary["windows"], len(rejected), output)
    return summary
