"""Converts a corpus once into a sharded ECGStore: parallel, resumable, with a rejected-records manifest.

    python -m ecgjax.data.ingest --source=ptbxl --input=/work/shared/data/ptbxl --output=/tmp/ptbxl_store
    python -m ecgjax.data.ingest --source=synthetic --input='patients=200,records=4,seed=0' --output=/tmp/syn

Each worker process reads, validates and preprocesses the records of whole shards and writes each
shard under a temporary name, renamed into place with a COMPLETE marker (`store.write_shard`).
A restart skips complete shards and redoes the rest. Records the readers refuse (ECGInputError,
or an I/O error of the underlying library) go to rejected.csv with the reason; ingest carries on.
The store-level tables (metadata.csv, index.npy, lead_mask.npy, store.json) are rebuilt from the
shards at the end, where patient indices and splits are assigned.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import tqdm

from ecgjax.data import store as store_lib
from ecgjax.data.errors import ECGInputError
from ecgjax.data.splits import SPLITS, SplitConfig, assign_splits

SOURCES = ("wfdb", "ptbxl", "code15", "synthetic")
PTBXL_SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
# Metadata keys holding a list of labels per record, expanded into one 0/1 column per label.
LABEL_LIST_KEYS = ("superclasses", "conditions")
CORE_COLUMNS = ("record_id", "patient_id", "patient_index", "source", "original_fs", "num_samples",
                "split", "shard", "path")
# Failures of the underlying file libraries (wfdb, soundfile, h5py) on a corrupt file: rejected, not fatal.
REJECTABLE = (ECGInputError, OSError, ValueError, EOFError)
DEFAULT_SYNTHETIC_SPEC = "patients=200,records=4,seed=0"


# ---------------------------------------------------------------------------------------------
# Sources: a list of picklable items per source; `_load_records` turns one into ECGRecords.
# ---------------------------------------------------------------------------------------------

def parse_synthetic_spec(spec: str | None) -> dict[str, Any]:
    """'patients=200,records=4,seed=0' -> generate_cohort kwargs (missing keys take defaults)."""
    names = {"patients": "num_patients", "records": "records_per_patient"}
    kwargs: dict[str, Any] = {"num_patients": 200, "records_per_patient": 4, "seed": 0}
    if spec and "=" in spec:
        for part in spec.split(","):
            key, value = (s.strip() for s in part.split("=", 1))
            number = float(value)
            kwargs[names.get(key, key)] = int(number) if number.is_integer() else number
    return kwargs


def _ptbxl_items(root: pathlib.Path, sampling_rate: int) -> list[dict]:
    from ecgjax.data.readers import load_ptbxl_table, ptbxl_metadata

    return [{"kind": "ptbxl", "path": str(root / row["filename"]), "record_id": str(row["ecg_id"]),
             "patient_id": row["patient_id"], "metadata": _jsonable(ptbxl_metadata(row))}
            for row in load_ptbxl_table(root, sampling_rate).to_dict("records")]


def _wfdb_items(root: pathlib.Path) -> list[dict]:
    if root.is_file():  # a single header or a RECORDS list
        if root.suffix == ".hea":
            return [{"kind": "wfdb", "path": str(root.with_suffix(""))}]
        base, names = root.parent, root.read_text().split()
    elif (root / "RECORDS").is_file():
        base, names = root, (root / "RECORDS").read_text().split()
    else:
        base, names = root, sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.hea"))
    return [{"kind": "wfdb", "path": str(base / name)} for name in names]


def _synthetic_items(spec: str | None) -> list[dict]:
    """One item per patient: `generate_patient_records` is deterministic per (seed, patient), so
    workers generate their own shards and the result equals `generate_cohort` with the same spec."""
    kwargs = parse_synthetic_spec(spec)
    per_patient = {k: v for k, v in kwargs.items() if k != "num_patients"}
    return [{"kind": "synthetic", "patient_index": i, **per_patient} for i in range(kwargs["num_patients"])]


def _load_records(item) -> list:
    """The ECGRecords of one planned item (records themselves pass through); preprocess validates."""
    from ecgjax.data.readers import read_wfdb

    if not isinstance(item, dict):
        return [item]
    kind = item["kind"]
    if kind == "synthetic":
        from ecgjax.data.synthetic import generate_patient_records

        kwargs = {k: v for k, v in item.items() if k != "kind"}
        return generate_patient_records(**kwargs)
    # A flat lead (electrode off) is masked as absent rather than losing the whole record.
    if kind == "wfdb":
        return [read_wfdb(item["path"], allow_flat_leads=True)]
    record = read_wfdb(item["path"], patient_id=item["patient_id"], source="ptbxl", metadata=item["metadata"],
                       allow_flat_leads=True)
    record.record_id = item["record_id"]
    return [record]


def _item_name(item) -> tuple[str, str]:
    if not isinstance(item, dict):
        return str(item.record_id), str(item.path)
    if item["kind"] == "synthetic":
        return f"patient {item['patient_index']}", f"synthetic:{item}"
    return item.get("record_id", pathlib.Path(item["path"]).name), item["path"]


def _plan(source: str, input_path, sampling_rate: int) -> tuple[Iterator, int | None]:
    """(iterator over items, total count or None)."""
    if source == "ptbxl":
        items = _ptbxl_items(pathlib.Path(input_path), sampling_rate)
        return iter(items), len(items)
    if source == "wfdb":
        items = _wfdb_items(pathlib.Path(input_path))
        return iter(items), len(items)
    if source == "synthetic":
        items = _synthetic_items(input_path)
        return iter(items), len(items)
    if source == "code15":
        from ecgjax.data.readers import read_code15

        return read_code15(input_path), None  # streamed: only in-flight shards are held in memory
    raise ValueError(f"unknown source {source!r} (expected one of {SOURCES})")


# ---------------------------------------------------------------------------------------------
# Workers: one call per shard.
# ---------------------------------------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _patient_str(value) -> str:
    """Patient ids as strings; PTB-XL stores them as floats ('15709.0' -> '15709')."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def ingest_shard(store_dir: str, shard: int, items: list, target_fs: float) -> dict:
    """Reads, validates, preprocesses and writes one shard. Returns counts for the progress bar."""
    from ecgjax.data.preprocess import preprocess_record

    signals, masks, rows, rejected = [], [], [], []
    for item in items:
        record_id, path = _item_name(item)
        try:
            records = _load_records(item)
            # read_wfdb has validated already; other records are validated by preprocess_record.
            validate = not (isinstance(item, dict) and item["kind"] in ("wfdb", "ptbxl"))
            processed = [(record, *preprocess_record(record, target_fs=target_fs, validate=validate,
                                                     allow_flat_leads=True))
                         for record in records]
        except REJECTABLE as error:
            reason = error.problem if isinstance(error, ECGInputError) else f"{type(error).__name__}: {error}"
            rejected.append({"record": record_id, "path": path, "reason": reason})
            continue
        for record, signal, mask in processed:
            signals.append(np.asarray(signal, np.float32))
            masks.append(np.asarray(mask, bool))
            rows.append({"record_id": str(record.record_id), "patient_id": _patient_str(record.patient_id),
                         "source": record.source, "original_fs": float(record.fs),
                         "num_samples": int(signal.shape[0]), "path": str(record.path or path),
                         "metadata": _jsonable(record.metadata)})
    store_lib.write_shard(store_dir, shard, signals, masks, rows, rejected)
    return {"shard": shard, "records": len(rows), "rejected": len(rejected), "items": len(items)}


# ---------------------------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------------------------

def _chunks(iterator: Iterator, size: int) -> Iterator[tuple[int, list]]:
    shard, chunk = 0, []
    for item in iterator:
        chunk.append(item)
        if len(chunk) == size:
            yield shard, chunk
            shard, chunk = shard + 1, []
    if chunk:
        yield shard, chunk


def _check_spec(output: pathlib.Path, spec: dict) -> None:
    """Refuses to resume into a store begun with different settings."""
    spec_path = output / "ingest.json"
    if spec_path.is_file():
        previous = json.loads(spec_path.read_text())
        if previous != spec:
            raise ValueError(f"{output} holds an ingest with other settings {previous}; "
                             f"use a fresh --output (asked for {spec})")
    else:
        output.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec, indent=1))


def ingest(source: str, input, output, *, target_fs: float = 250.0, workers: int | None = None,
           shard_size: int = 1000, split: SplitConfig | None = None, sampling_rate: int = 100,
           progress: bool = True) -> dict:
    """Ingests a corpus into an ECGStore at `output` and returns the summary dict.

    Args:
      source: 'wfdb' (folder of WFDB records / RECORDS file), 'ptbxl' (PTB-XL root),
        'code15' (CODE-15 root), 'synthetic' (`input` is a spec 'patients=200,records=4,seed=0').
      workers: processes; 0 runs in this process; None uses all cores.
      shard_size: items per shard (records; patients for synthetic); each worker writes whole shards.
      split: patient-level split; default folds (train 1-8, val 9, test 10) for PTB-XL, else hash.
      sampling_rate: which PTB-XL signals to read (100 -> records100, 500 -> records500).
    """
    started = time.perf_counter()
    output = pathlib.Path(output)
    if split is None:
        split = SplitConfig(method="folds") if source == "ptbxl" else SplitConfig(method="hash")
    workers = os.cpu_count() if workers is None else workers
    spec = {"source": source, "input": str(input), "target_fs": float(target_fs),
            "shard_size": int(shard_size), "sampling_rate": int(sampling_rate)}
    _check_spec(output, spec)
    items, total = _plan(source, input, sampling_rate)
    done_shards: list[int] = []
    redone = []
    bar = tqdm.tqdm(total=total, unit="rec", desc=f"ingest {source}", disable=not progress)

    def finished(result):
        done_shards.append(result["shard"])
        bar.update(result["items"])

    if workers == 0:
        for shard, chunk in _chunks(items, shard_size):
            if store_lib.shard_is_complete(output, shard):
                finished({"shard": shard, "items": len(chunk)})
                continue
            redone.append(shard)
            finished(ingest_shard(str(output), shard, chunk, target_fs))
    else:
        context = multiprocessing.get_context("spawn")  # safe with jax/threads in the parent
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending = set()
            for shard, chunk in _chunks(items, shard_size):
                if store_lib.shard_is_complete(output, shard):
                    finished({"shard": shard, "items": len(chunk)})
                    continue
                redone.append(shard)
                pending.add(pool.submit(ingest_shard, str(output), shard, chunk, target_fs))
                if len(pending) >= 2 * workers:  # bounds memory for streamed sources
                    completed, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in completed:
                        finished(future.result())
            for future in concurrent.futures.as_completed(pending):
                finished(future.result())
    bar.close()
    num_shards = max(done_shards) + 1 if done_shards else 0
    summary = finalize_store(output, num_shards, target_fs, split, spec)
    elapsed = time.perf_counter() - started
    summary.update(seconds=round(elapsed, 2), shards=num_shards, shards_written=sorted(redone),
                   records_per_second=round((summary["records"] + summary["rejected"]) / elapsed, 1))
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def ingest_records(records, output, *, target_fs: float = 250.0, shard_size: int = 1000,
                   split: SplitConfig | None = None) -> dict:
    """Writes in-memory ECGRecords (any iterable) as a store, in this process; returns the summary."""
    output = pathlib.Path(output)
    spec = {"source": "records", "input": "<in-memory records>", "target_fs": float(target_fs),
            "shard_size": int(shard_size), "sampling_rate": 0}
    _check_spec(output, spec)
    num_shards = 0
    for shard, chunk in _chunks(iter(records), shard_size):
        ingest_shard(str(output), shard, chunk, target_fs)
        num_shards = shard + 1
    return finalize_store(output, num_shards, target_fs, split or SplitConfig(method="hash"), spec)


def _metadata_table(rows: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """Flattens per-record rows into the metadata table; returns (table, label columns)."""
    label_lists: dict[str, list] = {}
    flat = []
    for row in rows:
        metadata = row.pop("metadata")
        for key in LABEL_LIST_KEYS:
            if isinstance(metadata.get(key), list):
                label_lists.setdefault(key, [])
        for key, value in metadata.items():
            if key in CORE_COLUMNS:
                continue
            row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        flat.append(row)
    table = pd.DataFrame(flat)
    label_columns: list[str] = []
    for key in label_lists:
        values = table[key].map(lambda s: json.loads(s) if isinstance(s, str) else [])
        names = sorted({v for vs in values for v in vs})
        if key == "superclasses" and set(names) <= set(PTBXL_SUPERCLASSES):
            names = list(PTBXL_SUPERCLASSES)  # the standard order, all five even if one is absent
        for name in names:
            if name not in table:
                table[name] = values.map(lambda vs, n=name: int(n in vs))
            label_columns.append(name)
    for column in table.columns:  # boolean metadata (e.g. one column per synthetic condition)
        if table[column].dtype == bool and column not in label_columns:
            label_columns.append(column)
    for column in label_columns:
        table[column] = table[column].astype(int)
    return table, label_columns


def finalize_store(output, num_shards: int, target_fs: float, split: SplitConfig, spec: dict) -> dict:
    """Merges the shard tables into the store-level tables and returns the summary."""
    output = pathlib.Path(output)
    rows, rejected, index, masks = [], [], [], []
    for shard in range(num_shards):
        shard_rows, shard_rejected, shard_index, shard_mask = store_lib.read_shard_tables(output, shard)
        for row in shard_rows:
            row["shard"] = shard
        rows += shard_rows
        rejected += shard_rejected
        index.append(np.concatenate([np.full((len(shard_index), 1), shard), shard_index], axis=1))
        masks.append(shard_mask)
    if not rows:
        raise ECGInputError(spec["input"], f"no usable records ({len(rejected)} rejected)")
    table, label_columns = _metadata_table(rows)
    patients = sorted(table["patient_id"].unique())
    table.insert(2, "patient_index", table["patient_id"].map({p: i for i, p in enumerate(patients)}))
    table.insert(table.columns.get_loc("num_samples") + 1, "split", assign_splits(table, split))
    table.to_csv(output / "metadata.csv", index=False)
    np.save(output / "index.npy", np.concatenate(index).astype(np.int64))
    np.save(output / "lead_mask.npy", np.concatenate(masks))
    pd.DataFrame(rejected, columns=["record", "path", "reason"]).to_csv(output / "rejected.csv", index=False)
    summary = {
        "records": len(table), "patients": len(patients), "rejected": len(rejected),
        "splits": {s: int((table["split"] == s).sum()) for s in (*SPLITS, "unused")},
        "labels": {c: {"count": int(table[c].sum()), "percent": round(100 * float(table[c].mean()), 1)}
                   for c in label_columns},
    }
    config = {"fs": float(target_fs), "dtype": np.dtype(store_lib.SAMPLE_DTYPE).name, "num_shards": num_shards,
              "num_records": len(table), "num_patients": len(patients), "label_columns": label_columns,
              "split": split.to_dict(), "ingest": spec}
    tmp = output / "store.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, output / "store.json")  # written last: a store.json means a usable store
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"records: {summary['records']:,}", f"patients: {summary['patients']:,}",
             f"rejected: {summary['rejected']:,}",
             "splits: " + ", ".join(f"{k} {v:,}" for k, v in summary["splits"].items() if v)]
    for name, value in summary["labels"].items():
        lines.append(f"  {name}: {value['count']:,} ({value['percent']}%)")
    if "seconds" in summary:
        lines.append(f"{summary['seconds']} s, {summary['records_per_second']} records/s, "
                     f"shards written {len(summary['shards_written'])}/{summary['shards']}")
    return "\n".join(lines)


def build_synthetic_store(output_dir, num_patients: int = 200, records_per_patient: int = 4, seed: int = 0,
                          *, workers: int = 0, shard_size: int = 1000, target_fs: float = 250.0,
                          progress: bool = False) -> "store_lib.ECGStore":
    """The embedded synthetic cohort as an ECGStore; reused if `output_dir` already holds the same spec."""
    output_dir = pathlib.Path(output_dir)
    spec = f"patients={num_patients},records={records_per_patient},seed={seed}"
    config_path = output_dir / "store.json"
    if config_path.is_file():
        previous = json.loads(config_path.read_text())["ingest"]
        if (previous["input"], previous["target_fs"], previous["shard_size"]) == (spec, float(target_fs), shard_size):
            return store_lib.ECGStore(output_dir)
        raise ValueError(f"{output_dir} holds another store ({previous}); choose another directory")
    ingest("synthetic", spec, output_dir, target_fs=target_fs, workers=workers, shard_size=shard_size,
           progress=progress)
    return store_lib.ECGStore(output_dir)


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    split = SplitConfig(method=f.split_method or ("folds" if f.source == "ptbxl" else "hash"),
                        train_folds=tuple(map(int, f.train_folds)),
                        val_folds=tuple(map(int, f.val_folds)), test_folds=tuple(map(int, f.test_folds)), val_fraction=f.val_fraction,
                        test_fraction=f.test_fraction, seed=f.split_seed)
    summary = ingest(f.source, f.input or DEFAULT_SYNTHETIC_SPEC, f.output, target_fs=f.target_fs,
                     workers=f.workers, shard_size=f.shard_size, split=split, sampling_rate=f.sampling_rate)
    print(format_summary(summary))


def _define_flags():
    from absl import flags

    flags.DEFINE_enum("source", None, list(SOURCES), "Corpus format.")
    flags.DEFINE_string("input", None, "Corpus path (synthetic: spec 'patients=200,records=4,seed=0').")
    flags.DEFINE_string("output", None, "Store directory to create or resume.")
    flags.DEFINE_float("target_fs", 250.0, "Sampling rate of the store, Hz.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Worker processes (0: in this process).")
    flags.DEFINE_integer("shard_size", 1000, "Records per shard.")
    flags.DEFINE_integer("sampling_rate", 100, "PTB-XL signals to read: 100 or 500 Hz.")
    flags.DEFINE_string("split_method", None, "'folds' (strat_fold) or 'hash'; default folds for ptbxl.")
    flags.DEFINE_list("train_folds", ["1", "2", "3", "4", "5", "6", "7", "8"], "Folds for training.")
    flags.DEFINE_list("val_folds", ["9"], "Folds for validation.")
    flags.DEFINE_list("test_folds", ["10"], "Folds for testing.")
    flags.DEFINE_float("val_fraction", 0.1, "Hashed split: fraction of patients for validation.")
    flags.DEFINE_float("test_fraction", 0.1, "Hashed split: fraction of patients for testing.")
    flags.DEFINE_integer("split_seed", 0, "Hashed split seed.")
    flags.mark_flags_as_required(["source", "output"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
