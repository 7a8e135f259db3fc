"""Converts a corpus once into a sharded ECGStore: parallel, resumable, with a rejected-records manifest.

    python -m ecgjax.data.ingest --source=ptbxl --input=/work/shared/data/ptbxl --output=/tmp/ptbxl_store
    python -m ecgjax.data.ingest --source=cinc2017 --input=/data/training2017 --output=/tmp/cinc_store
    python -m ecgjax.data.ingest --source=synthetic --input='patients=400,records=4,seed=0' --output=/tmp/syn

Each worker process reads, validates and preprocesses the records of whole shards and writes each
shard under a temporary name, renamed into place with a COMPLETE marker (`store.write_shard`).
A restart skips complete shards and redoes the rest. Records the readers refuse (ECGInputError,
or an I/O error of the underlying library) go to rejected.csv with the reason; ingest carries on
(and fails, pointing at rejected.csv, only when no record at all is usable). What a reader
tolerates (a checksum that disagrees, non-ECG channels dropped: readers.NOTE_KINDS) is listed in
notes.csv and warned about once per kind, not once per record. Workers end when this process
does, even on kill -9 (`ecgjax.data.workers`).
The store-level tables (metadata.csv, index.npy, lead_mask.npy, store.json) are rebuilt from the
shards at the end, where patient indices and splits are assigned; a bad split choice fails there
with the shards kept, so the rerun with the fix only redoes these tables.

PTB-XL is split by strat_fold, by default train 1-8, val 9, test 10; on a copy lacking those folds
(the shared one holds 1-9) the folds are picked from those present, with a warning saying which
(1-7 / 8 / 9 there), unless folds were given, in which case an empty split is an error. Any
split left empty (a hashed split of a few patients) is warned about with the flags that fill it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import pathlib
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import tqdm

from ecgjax import cli
from ecgjax.data import sources, store as store_lib
from ecgjax.data.errors import ECGInputError
from ecgjax.data.preprocess import preprocess_record
from ecgjax.data.readers import NOTE_KINDS
from ecgjax.data.record import jsonable
from ecgjax.data.sources.ptbxl import PTBXL_SUPERCLASSES
from ecgjax.data.sources.synthetic import format_synthetic_spec
from ecgjax.data.splits import SPLITS, SplitConfig, assign_splits, format_folds, parse_folds, resolve_folds
from ecgjax.data.synthetic import DEFAULT_NUM_PATIENTS
from ecgjax.data.workers import pool_initializer
from ecgjax.errors import UserError

log = logging.getLogger(__name__)

# Metadata keys holding a list of labels per record, expanded into one 0/1 column per label.
LABEL_LIST_KEYS = ("superclasses", "conditions")
CORE_COLUMNS = ("record_id", "patient_id", "patient_index", "source", "original_fs", "num_samples",
                "split", "shard", "path")
# Failures of the underlying file libraries (wfdb, soundfile, h5py) on a corrupt file: rejected, not fatal.
REJECTABLE = (ECGInputError, OSError, ValueError, EOFError)


def _plan(source: sources.Source, input_path, sampling_rate: int) -> tuple[Iterator, list | None]:
    """(iterator over the source's items, the items as a list, or None for a streamed source);
    a corpus without items fails here, before the store is begun."""
    items = source.items(input_path, sampling_rate=sampling_rate)
    if source.streamed:
        first = next(items, None)
        if first is None:
            raise ECGInputError(input_path, f"no {source.name} records found; --input must be {source.layout}")
        return itertools.chain([first], items), None
    if not items:
        raise ECGInputError(input_path, f"no {source.name} records found; --input must be {source.layout}")
    return iter(items), items


# ---------------------------------------------------------------------------------------------
# Workers: one call per shard.
# ---------------------------------------------------------------------------------------------

def _patient_str(value) -> str:
    """Patient ids as strings; PTB-XL stores them as floats ('15709.0' -> '15709')."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def ingest_shard(store_dir: str, shard: int, items: list, target_fs: float, source: sources.Source) -> dict:
    """Reads (`source.read`), validates, preprocesses and writes one shard. Returns counts for the
    progress bar."""
    signals, masks, rows, rejected, notes = [], [], [], [], []
    for item in items:
        record_id, path = source.item_name(item)
        try:
            records = source.read(item)
            processed = [(record, *preprocess_record(record, target_fs=target_fs, validate=not source.validated,
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
                         "metadata": jsonable(record.metadata)})
            notes += [{"record": str(record.record_id), "path": str(record.path or path), "kind": kind, "note": note}
                      for kind, note in record.notes.items()]
    store_lib.write_shard(store_dir, shard, signals, masks, rows, rejected, notes)
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
            raise UserError(f"--output={output} holds an ingest with other settings {previous}; "
                            f"use a fresh --output (asked for {spec})")
    else:
        output.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec, indent=1))


def _check_settings(target_fs: float, workers: int, shard_size: int) -> None:
    if not target_fs > 0:
        raise UserError(f"--target_fs={target_fs:g}: must be a positive sampling rate in Hz, e.g. 250")
    if workers < 0:
        raise UserError(f"--workers={workers}: must be 0 (in this process) or a number of processes")
    if shard_size < 1:
        raise UserError(f"--shard_size={shard_size}: must be at least 1 (records per shard), e.g. 1000")


def ingest(source_name: str, input, output, *, target_fs: float = 250.0, workers: int | None = None,
           shard_size: int = 1000, split: SplitConfig | None = None, sampling_rate: int = 100,
           progress: bool = True, auto_folds: bool | None = None) -> dict:
    """Ingests a corpus into an ECGStore at `output` and returns the summary dict.

    Args:
      source_name: a source of ecgjax.data.sources: 'wfdb' (folder of WFDB records / RECORDS file),
        'ptbxl' (PTB-XL root), 'code15' (CODE-15 root), 'cinc2017' (PhysioNet/CinC 2017 folder),
        'synthetic' (`input` is generate_cohort kwargs, or a spec 'patients=400,records=4,seed=0';
        missing ones take defaults).
      workers: processes; 0 runs in this process; None uses all cores.
      shard_size: items per shard (records; patients for synthetic); each worker writes whole shards.
      split: patient-level split; default the source's `default_split()`.
      sampling_rate: which PTB-XL signals to read (100 -> records100, 500 -> records500).
      auto_folds: for a 'folds' split whose folds leave a split empty in this corpus, pick folds
        from those present (and warn) instead of failing (see `resolve_folds`); default: when
        `split` is None.
    Raises:
      UserError / ECGInputError for a missing or empty --input, a bad split, or a corpus whose
      every record is rejected (rejected.csv says why); computed shards are kept for a rerun.
    """
    started = time.perf_counter()
    source = sources.get(source_name)
    source.check_input(input)
    output = pathlib.Path(output)
    auto_folds = split is None if auto_folds is None else auto_folds
    split = source.default_split() if split is None else split
    if split.method == "folds" and not source.has_folds:
        raise UserError(f"--split_method=folds needs the strat_fold column of PTB-XL; --source={source.name} "
                        f"has none: use --split_method=hash")
    workers = os.cpu_count() if workers is None else workers
    _check_settings(target_fs, workers, shard_size)
    items, planned = _plan(source, input, sampling_rate)
    folds_note = ""
    if split.method == "folds" and planned is not None:  # fail (or pick folds) before the long part
        split, folds_note = resolve_folds(split, [source.fold_of(item) for item in planned],
                                          auto=auto_folds, where=input)
    spec = {"source": source.name, "input": source.describe_input(input), "target_fs": float(target_fs),
            "shard_size": int(shard_size), "sampling_rate": int(sampling_rate)}
    _check_spec(output, spec)
    done_shards: list[int] = []
    redone = []
    bar = tqdm.tqdm(total=None if planned is None else len(planned), unit="rec", desc=f"ingest {source.name}",
                    disable=not progress)

    def finished(result):
        done_shards.append(result["shard"])
        bar.update(result["items"])

    if workers == 0:
        for shard, chunk in _chunks(items, shard_size):
            if store_lib.shard_is_complete(output, shard):
                finished({"shard": shard, "items": len(chunk)})
                continue
            redone.append(shard)
            finished(ingest_shard(str(output), shard, chunk, target_fs, source))
    else:
        context = multiprocessing.get_context("spawn")  # safe with jax/threads in the parent
        initializer, initargs = pool_initializer()  # workers die with this process, even on kill -9
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=initializer,
                                                    initargs=initargs) as pool:
            pending = set()
            for shard, chunk in _chunks(items, shard_size):
                if store_lib.shard_is_complete(output, shard):
                    finished({"shard": shard, "items": len(chunk)})
                    continue
                redone.append(shard)
                pending.add(pool.submit(ingest_shard, str(output), shard, chunk, target_fs, source))
                if len(pending) >= 2 * workers:  # bounds memory for streamed sources
                    completed, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in completed:
                        finished(future.result())
            for future in concurrent.futures.as_completed(pending):
                finished(future.result())
    bar.close()
    num_shards = max(done_shards) + 1 if done_shards else 0
    summary = finalize_store(output, num_shards, target_fs, split, spec, auto_folds=auto_folds)
    if folds_note and not summary.get("folds_note"):
        summary["folds_note"] = folds_note
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
        ingest_shard(str(output), shard, chunk, target_fs, sources.Source())
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


def finalize_store(output, num_shards: int, target_fs: float, split: SplitConfig, spec: dict, *,
                   auto_folds: bool | None = None) -> dict:
    """Merges the shard tables into the store-level tables and returns the summary.

    rejected.csv is always written, first. A 'folds' split that leaves a split empty is checked
    with `resolve_folds` (auto_folds True: pick folds, False: fail); None leaves it as given.
    """
    output = pathlib.Path(output)
    rows, rejected, notes, index, masks = [], [], [], [], []
    for shard in range(num_shards):
        shard_rows, shard_rejected, shard_notes, shard_index, shard_mask = store_lib.read_shard_tables(output, shard)
        for row in shard_rows:
            row["shard"] = shard
        rows += shard_rows
        rejected += shard_rejected
        notes += shard_notes
        index.append(np.concatenate([np.full((len(shard_index), 1), shard), shard_index], axis=1))
        masks.append(shard_mask)
    # Before anything can fail: a failed ingest still says which records were refused and why.
    pd.DataFrame(rejected, columns=["record", "path", "reason"]).to_csv(output / "rejected.csv", index=False)
    pd.DataFrame(notes, columns=["record", "path", "kind", "note"]).to_csv(output / "notes.csv", index=False)
    if not rows and rejected:
        raise ECGInputError(spec["input"], f"all {len(rejected)} records were rejected; the reasons are in "
                                           f"{output / 'rejected.csv'}. Fix or replace those records and "
                                           f"ingest again into a fresh --output")
    if not rows:
        layout = sources.get(spec["source"]).layout if spec["source"] in sources.names() else sources.Source.layout
        raise ECGInputError(spec["input"], f"no records found; --input must be {layout}")
    table, label_columns = _metadata_table(rows)
    folds_note = ""
    if split.method == "folds" and auto_folds is not None and "strat_fold" in table:
        split, folds_note = resolve_folds(split, table["strat_fold"], auto=auto_folds, where=spec["input"])
    patients = sorted(table["patient_id"].unique())
    table.insert(2, "patient_index", table["patient_id"].map({p: i for i, p in enumerate(patients)}))
    table.insert(table.columns.get_loc("num_samples") + 1, "split", assign_splits(table, split))
    table.to_csv(output / "metadata.csv", index=False)
    np.save(output / "index.npy", np.concatenate(index).astype(np.int64))
    np.save(output / "lead_mask.npy", np.concatenate(masks))
    summary = {
        "records": len(table), "patients": len(patients), "rejected": len(rejected),
        "splits": {s: int((table["split"] == s).sum()) for s in (*SPLITS, "unused")},
        "labels": {c: {"count": int(table[c].sum()), "percent": round(100 * float(table[c].mean()), 1)}
                   for c in label_columns},
    }
    if split.method == "folds":
        summary["folds"] = {name: format_folds(getattr(split, f"{name}_folds")) for name in SPLITS}
        if folds_note:
            summary["folds_note"] = folds_note
    empty = _warn_empty_splits(summary["splits"], split, len(patients))
    if empty:
        summary["empty_splits"] = empty
    if notes:
        summary["notes"] = _warn_notes(notes, output / "notes.csv")
    config = {"fs": float(target_fs), "dtype": np.dtype(store_lib.SAMPLE_DTYPE).name, "num_shards": num_shards,
              "num_records": len(table), "num_patients": len(patients), "label_columns": label_columns,
              "split": split.to_dict(), "ingest": spec}
    tmp = output / "store.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, output / "store.json")  # written last: a store.json means a usable store
    return summary


def _warn_empty_splits(counts: dict, split: SplitConfig, num_patients: int) -> str:
    """Warns once naming every empty split and the flags that fill it (probes would fail on it much
    later); returns the warning, or ''. A split asked to be empty (fraction 0) is not warned about."""
    if split.method == "hash":
        wanted = {"train": 1 - split.val_fraction - split.test_fraction, "val": split.val_fraction,
                  "test": split.test_fraction}
    else:
        wanted = {name: len(getattr(split, f"{name}_folds")) for name in SPLITS}
    empty = [name for name in SPLITS if wanted[name] > 0 and not counts[name]]
    if not empty:
        return ""
    names = " and ".join(empty)
    if split.method != "hash":
        fix = "pass --train_folds, --val_folds and --test_folds that each name a fold present"
    elif num_patients < sum(fraction > 0 for fraction in wanted.values()):
        fix = ("ingest more records into a fresh --output (pretraining needs only train; probes need train, "
               "val and test)")
    else:
        flags_ = " / ".join(f"a larger --{name}_fraction (now {wanted[name]:g})" for name in empty if name != "train")
        fix = f"pass {flags_ + ' or ' if flags_ else ''}another --split_seed (now {split.seed})"
    warning = (f"the {names} split{'s are' if len(empty) > 1 else ' is'} empty ({num_patients} "
               f"patient{'' if num_patients == 1 else 's'}, {split.method} split): {fix}")
    log.warning("%s", warning)
    return warning


def _warn_notes(notes: list[dict], manifest: pathlib.Path) -> dict[str, int]:
    """One warning per kind of note (not one per record), with an example and the manifest that
    lists them all; returns {kind: records}."""
    counts: dict[str, int] = {}
    for kind in dict.fromkeys(note["kind"] for note in notes):
        of_kind = [note for note in notes if note["kind"] == kind]
        counts[kind] = len(of_kind)
        log.warning("%d record%s kept with a note: %s (e.g. %s: %s); all listed in %s", len(of_kind),
                    "" if len(of_kind) == 1 else "s", NOTE_KINDS.get(kind, kind), of_kind[0]["record"],
                    of_kind[0]["note"], manifest)
    return counts


def format_summary(summary: dict) -> str:
    counts = summary["splits"]
    lines = [f"records: {summary['records']:,}", f"patients: {summary['patients']:,}",
             f"rejected: {summary['rejected']:,}",
             "splits: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k in SPLITS or v)]
    if "folds" in summary:
        note = f" ({summary['folds_note']})" if summary.get("folds_note") else ""
        lines.append("folds: " + ", ".join(f"{k} {v}" for k, v in summary["folds"].items()) + note)
    if summary.get("empty_splits"):
        lines.append(f"warning: {summary['empty_splits']}")
    if summary.get("notes"):
        lines.append("kept with notes: " + ", ".join(f"{k} {v:,}" for k, v in summary["notes"].items())
                     + " (notes.csv)")
    for name, value in summary["labels"].items():
        lines.append(f"  {name}: {value['count']:,} ({value['percent']}%)")
    if "seconds" in summary:
        lines.append(f"{summary['seconds']} s, {summary['records_per_second']} records/s, "
                     f"shards written {len(summary['shards_written'])}/{summary['shards']}")
    return "\n".join(lines)


def build_store(source_name: str, input, output, **kwargs) -> store_lib.ECGStore:
    """`ingest` in this process with no progress bar (`kwargs` as ingest's), and the store it wrote."""
    ingest(source_name, input, output, **{"workers": 0, "progress": False, **kwargs})
    return store_lib.ECGStore(output)


def build_synthetic_store(output_dir, num_patients: int = DEFAULT_NUM_PATIENTS, records_per_patient: int = 4,
                          seed: int = 0, *, workers: int = 0, shard_size: int = 1000, target_fs: float = 250.0,
                          progress: bool = False) -> store_lib.ECGStore:
    """The embedded synthetic cohort as an ECGStore; reused if `output_dir` already holds the same cohort."""
    output_dir = pathlib.Path(output_dir)
    cohort = {"num_patients": num_patients, "records_per_patient": records_per_patient, "seed": seed}
    config_path = output_dir / "store.json"
    if config_path.is_file():
        previous = json.loads(config_path.read_text())["ingest"]
        if ((previous["input"], previous["target_fs"], previous["shard_size"])
                == (format_synthetic_spec(cohort), float(target_fs), shard_size)):
            return store_lib.ECGStore(output_dir)
        raise UserError(f"{output_dir} holds another store ({previous}); choose another directory")
    ingest("synthetic", cohort, output_dir, target_fs=target_fs, workers=workers, shard_size=shard_size,
           progress=progress)
    return store_lib.ECGStore(output_dir)


FOLD_FLAGS = ("train_folds", "val_folds", "test_folds")


def split_from_flags(flag_values) -> tuple[SplitConfig, bool]:
    """(split, auto_folds) from the flags: the --source's `default_split()` with the flags the user
    passed applied; folds are picked from those present only when no fold flag was passed."""
    f = flag_values
    default = sources.get(f.source).default_split()
    changes: dict[str, Any] = {"method": f.split_method or default.method}
    for name in FOLD_FLAGS:
        if f[name].present:
            try:
                changes[name] = parse_folds(f[name].value)
            except ValueError as error:
                raise UserError(f"--{name}={','.join(f[name].value)}: {error}") from None
            if not changes[name]:
                raise UserError(f"--{name} is empty: give at least one fold, e.g. --{name}=9")
    for name, field in (("val_fraction", "val_fraction"), ("test_fraction", "test_fraction"),
                        ("split_seed", "seed")):
        if f[name].present:
            changes[field] = f[name].value
    explicit_folds = any(f[name].present for name in FOLD_FLAGS)
    return dataclasses.replace(default, **changes), not explicit_folds


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}: every setting is a --flag=value")
    f = flags.FLAGS
    split, auto_folds = split_from_flags(f)
    summary = ingest(f.source, f.input, f.output, target_fs=f.target_fs, workers=f.workers,
                     shard_size=f.shard_size, split=split, sampling_rate=f.sampling_rate, auto_folds=auto_folds)
    print(format_summary(summary))


def _define_flags():
    from absl import flags

    flags.DEFINE_enum("source", None, list(sources.names()), "Corpus format (a module of ecgjax.data.sources).")
    flags.DEFINE_string("input", None, "Corpus path (synthetic: spec 'patients=400,records=4,seed=0', "
                        "the default).")
    flags.DEFINE_string("output", None, "Store directory to create or resume.")
    flags.DEFINE_float("target_fs", 250.0, "Sampling rate of the store, Hz.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Worker processes (0: in this process).")
    flags.DEFINE_integer("shard_size", 1000, "Records per shard.")
    flags.DEFINE_integer("sampling_rate", 100, "PTB-XL signals to read: 100 or 500 Hz.")
    flags.DEFINE_enum("split_method", None, ["folds", "hash"],
                      "'folds' (PTB-XL strat_fold) or 'hash' (patients by hash); default folds for ptbxl.")
    # Fold defaults: the standard protocol of a complete PTB-XL; without these flags, a copy lacking
    # those folds gets folds picked from those present (see resolve_folds).
    flags.DEFINE_list("train_folds", ["1-8"], "Folds for training (numbers or ranges: 1-7 or 1,2,3).")
    flags.DEFINE_list("val_folds", ["9"], "Folds for validation.")
    flags.DEFINE_list("test_folds", ["10"], "Folds for testing.")
    flags.DEFINE_float("val_fraction", 0.1, "Hashed split: fraction of patients for validation "
                                            "(cinc2017 default 0.05, as in 001).")
    flags.DEFINE_float("test_fraction", 0.1, "Hashed split: fraction of patients for testing "
                                             "(cinc2017 default 0.20, as in 001).")
    flags.DEFINE_integer("split_seed", 0, "Hashed split seed.")
    flags.mark_flags_as_required(["source", "output"])


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
