"""Data benchmarks on the shared PTB-XL: storage choice, ingest rate, loader throughput.

    python benchmarks/loader.py --ptbxl=/work/shared/data/ptbxl --workdir=/tmp/ecgjax_bench

Prints (and records in benchmarks/RESULTS.md by hand, under '## Data'):
  1. float16 storage error against the float32 preprocessed signal on real PTB-XL records;
  2. random-access segment reads/s: memory-mapped .npy shards vs ArrayRecord;
  3. ingest rate (records/s, and per worker process) on a subset of PTB-XL;
  4. loader throughput (read + crop; pretraining augments on the device): 10 s, 12-lead, 250 Hz
     segments/s, per core (the batch function alone, CPU time of this process) and through Grain
     with 0, 1, 2 workers, for the store's float16 samples (what pretraining loads) and float32.
Run alone: the figures are only meaningful on an otherwise idle machine.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
from absl import app, flags

from ecgjax.data.ingest import ingest
from ecgjax.machine import describe as describe_machine
from ecgjax.data.pipeline import CPCSpec, PatientRecords, PatientViews, make_pretrain_dataset
from ecgjax.data.store import ECGStore

_PTBXL = flags.DEFINE_string("ptbxl", "/work/shared/data/ptbxl", "PTB-XL root.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/ecgjax_bench", "Scratch directory for the stores.")
_STORE = flags.DEFINE_string("store", None, "An existing full PTB-XL store to reuse (else ingested into workdir).")
_INGEST_RECORDS = flags.DEFINE_integer("ingest_records", 1000, "PTB-XL records for the ingest-rate run (0: skip it).")
_READS = flags.DEFINE_integer("reads", 20000, "Random segment reads per storage format.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches of 256 per loader setting.")



def ptbxl_subset(root: pathlib.Path, out: pathlib.Path, num_records: int) -> pathlib.Path:
    """A PTB-XL root with the first num_records records (tables filtered, signals linked)."""
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(root / "ptbxl_database.csv")
    table.head(num_records).to_csv(out / "ptbxl_database.csv", index=False)
    shutil.copy(root / "scp_statements.csv", out)
    if not (out / "records100").exists():
        os.symlink(root / "records100", out / "records100")
    return out


def float16_error(store: ECGStore, root: pathlib.Path, num_records: int = 200) -> dict:
    from ecgjax.data.preprocess import preprocess_record
    from ecgjax.data.readers import read_wfdb

    rng = np.random.default_rng(0)
    errors, peaks = [], []
    for i in rng.choice(len(store), num_records, replace=False):
        path = store.metadata.path.iloc[i]
        exact, _ = preprocess_record(read_wfdb(path))
        errors.append(np.abs(store.read(int(i)) - exact).ravel())
        peaks.append(np.abs(exact).max())
    errors = np.concatenate(errors)
    return {"max_abs_mV": float(errors.max()), "p99_abs_mV": float(np.quantile(errors, 0.99)),
            "mean_abs_mV": float(errors.mean()), "max_signal_mV": float(max(peaks))}


def random_reads(store: ECGStore, num_reads: int, segment: int = 1250) -> dict:
    """Random [segment, 12] crops of random records: memmap shards vs an ArrayRecord of whole records."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    rng = np.random.default_rng(0)
    records = rng.integers(0, len(store), num_reads)
    starts = rng.integers(0, int(store.lengths.min()) - segment + 1, num_reads)
    fresh = ECGStore(store.path)
    t0 = time.perf_counter()
    for i, s in zip(records, starts):
        fresh.read(int(i), int(s), segment)
    npy_rate = num_reads / (time.perf_counter() - t0)

    path = pathlib.Path(tempfile.mkdtemp()) / "signals.array_record"
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for i in range(len(store)):
        writer.write(np.asarray(store.read(i), np.float16).tobytes())
    writer.close()
    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    t0 = time.perf_counter()
    for i, s in zip(records, starts):
        x = np.frombuffer(reader.read([int(i)])[0], np.float16).reshape(-1, 12)
        np.asarray(x[s:s + segment], np.float32)
    ar_rate = num_reads / (time.perf_counter() - t0)
    reader.close()
    shutil.rmtree(path.parent)
    return {"npy_memmap_reads_per_s": round(npy_rate), "array_record_reads_per_s": round(ar_rate)}


def loader_rate(store: ECGStore, num_workers: int, views, num_batches: int, dtype) -> float:
    """Segments/s out of the Grain pipeline (batch 256), after 3 warm-up batches."""
    ds = make_pretrain_dataset(store, views=views, batch_size=256, segment_s=10.0, seed=0, split=None,
                               num_workers=num_workers, dtype=dtype)
    it = iter(ds)
    for _ in range(3):  # warm-up: worker start, page cache
        next(it)
    t0 = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return 256 * num_batches / (time.perf_counter() - t0)


def crop_rate_per_core(store: ECGStore, views, num_batches: int, dtype) -> float:
    """Segments (crops) per CPU-second of the batch function alone, in this process (one thread)."""
    length = int(round(10.0 * store.fs))
    fn = PatientViews(store, PatientRecords.from_store(store, None, length), views, length, None, CPCSpec(),
                      dtype=dtype)
    rng = np.random.default_rng(0)
    fn(np.arange(256), rng)  # warm-up: memory maps, page cache
    t0 = time.process_time()
    for _ in range(num_batches):
        fn(rng.integers(0, len(fn.patient_records), 256), rng)
    return 256 * len(views) * num_batches / (time.process_time() - t0)


def main(argv):
    del argv
    workdir = pathlib.Path(_WORKDIR.value)
    root = pathlib.Path(_PTBXL.value)
    print("machine:", describe_machine())

    results = {}
    for workers in (1, 2) if _INGEST_RECORDS.value else ():
        subset = ptbxl_subset(root, workdir / "subset", _INGEST_RECORDS.value)
        out = workdir / f"ingest_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        summary = ingest("ptbxl", subset, out, workers=workers, shard_size=100, progress=False)
        results[workers] = summary["records_per_second"]
        print(f"ingest {summary['records']} PTB-XL records, {workers} worker(s): "
              f"{summary['records_per_second']} records/s ({summary['records_per_second'] / workers:.1f} per core)")

    if _STORE.value:
        store_path = pathlib.Path(_STORE.value)
    else:
        store_path = workdir / "ptbxl_full"
        if not (store_path / "store.json").is_file():
            print(ingest("ptbxl", root, store_path, workers=2))
    store = ECGStore(store_path)
    print(f"store: {len(store)} records, {store.num_patients} patients, dtype {store.config['dtype']}")
    print("float16 error vs float32 (mV):", float16_error(store, root))
    print("random 5 s segment reads/s:", random_reads(store, _READS.value))

    for dtype in (np.float16, np.float32):
        name = np.dtype(dtype).name
        for views in (("segment",), ("segment", "patient_segment")):
            per_core = crop_rate_per_core(store, views, _BATCHES.value, dtype)
            print(f"read+crop {'+'.join(views)} {name}: {per_core:,.0f} segments per CPU-second "
                  f"(10 s, 12 leads, 250 Hz; batch function alone)")
            for num_workers in (0, 1, 2):
                rate = loader_rate(store, num_workers, views, _BATCHES.value, dtype)
                print(f"loader views={'+'.join(views)} {name} workers={num_workers}: "
                      f"{rate * len(views):,.0f} segments/s ({rate:,.0f} batch rows/s; batch 256)")
    print("machine:", describe_machine())


if __name__ == "__main__":
    app.run(main)
