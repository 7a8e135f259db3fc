"""Ingest: parallel shards, resume after interruption, rejected-records manifest, PTB-XL counts,
folds picked from those present, input errors, CinC 2017 from the command line, empty splits named,
non-ECG channels dropped and listed."""
import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ecgjax.data import sources, store as store_lib
from ecgjax.data.errors import ECGInputError
from ecgjax.data.ingest import _metadata_table, build_synthetic_store, format_summary, ingest, ingest_records
from ecgjax.data.sources.ptbxl import load_ptbxl_table
from ecgjax.data.sources.synthetic import parse_synthetic_spec
from ecgjax.data.splits import SplitConfig, format_folds, parse_folds, resolve_folds
from ecgjax.data.synthetic import generate_cohort
from ecgjax.errors import UserError
from ecgjax.eval import tasks
from ecgjax.eval.task_data import load_task_data
from fixtures import write_cinc2017_fixture, write_telemetry_fixture, write_wfdb_fixture

SPEC = "patients=12,records=2,seed=5"


def _shard_mtimes(output):
    return {p.parent.name: p.stat().st_mtime_ns for p in (output / "shards").glob("*/signals.npy")}


def test_parallel_ingest_then_resume_redoes_only_the_unfinished_shard(tmp_path):
    output = tmp_path / "store"
    first = ingest("synthetic", SPEC, output, workers=2, shard_size=3, progress=False)
    assert (first["records"], first["patients"], first["rejected"]) == (24, 12, 0)
    assert first["shards_written"] == [0, 1, 2, 3]
    before = _shard_mtimes(output)
    reference = store_lib.ECGStore(output)

    # Interruption: shard 2 lost its completion marker, and a crashed writer left a temp folder.
    (store_lib.shard_dir(output, 2) / store_lib.COMPLETE_MARKER).unlink()
    (output / "shards" / "shard_00001.tmp-999").mkdir()
    second = ingest("synthetic", SPEC, output, workers=0, shard_size=3, progress=False)
    assert second["shards_written"] == [2]
    after = _shard_mtimes(output)
    assert {k for k in before if before[k] != after[k]} == {"shard_00002"}
    resumed = store_lib.ECGStore(output)
    pd.testing.assert_frame_equal(resumed.metadata, reference.metadata)
    for i in range(len(resumed)):
        np.testing.assert_array_equal(resumed.read(i), reference.read(i))

    # A shard folder that vanished entirely is redone too; nothing else is.
    shutil.rmtree(store_lib.shard_dir(output, 0))
    assert ingest("synthetic", SPEC, output, workers=0, shard_size=3, progress=False)["shards_written"] == [0]


def test_resume_with_other_settings_is_refused(tmp_path):
    ingest("synthetic", SPEC, tmp_path, workers=0, shard_size=50, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        ingest("synthetic", SPEC, tmp_path, workers=0, shard_size=4, progress=False)


def test_synthetic_store_matches_generate_cohort_and_is_cached(tmp_path):
    store = build_synthetic_store(tmp_path, num_patients=5, records_per_patient=2, seed=1)
    cohort = generate_cohort(5, 2, seed=1)
    assert list(store.metadata.record_id) == [r.record_id for r in cohort]
    assert store.config["label_columns"]  # one 0/1 column per synthetic condition
    mtime = (tmp_path / "store.json").stat().st_mtime_ns
    again = build_synthetic_store(tmp_path, num_patients=5, records_per_patient=2, seed=1)
    assert (tmp_path / "store.json").stat().st_mtime_ns == mtime and len(again) == 10
    with pytest.raises(ValueError, match="another store"):
        build_synthetic_store(tmp_path, num_patients=6, records_per_patient=2, seed=1)
    assert parse_synthetic_spec("patients=3,records=1,seed=2,duration_s=12.5") == {
        "num_patients": 3, "records_per_patient": 1, "seed": 2, "duration_s": 12.5}


def _ptbxl_subset(ptbxl_dir, tmp_path, ecg_ids):
    """A PTB-XL root holding only some records (tables filtered, signals linked)."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    table = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    table[table.ecg_id.isin(ecg_ids)].to_csv(root / "ptbxl_database.csv", index=False)
    shutil.copy(ptbxl_dir / "scp_statements.csv", root)
    os.symlink(ptbxl_dir / "records100", root / "records100")
    return root


def test_rejected_records_go_to_the_manifest_and_ingest_carries_on(ptbxl_dir, tmp_path):
    corpus = tmp_path / "wfdb"
    corpus.mkdir()
    table = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").head(4)
    names = []
    for stem in table.filename_lr:
        name = os.path.basename(stem)
        for part in sorted((ptbxl_dir / stem).parent.glob(name + "*")):
            shutil.copy(part, corpus)
        names.append(name)
    (corpus / f"{names[1]}_1.dat").write_bytes(b"\x00garbage")  # corrupt signal file
    header = corpus / f"{names[2]}.hea"
    first, *rest = header.read_text().splitlines()
    fields = first.split()
    fields[2] = "1e6"  # absurd sampling rate
    header.write_text("\n".join([" ".join(fields), *rest]) + "\n")
    summary = ingest("wfdb", corpus, tmp_path / "store", workers=0, shard_size=2, progress=False)
    assert (summary["records"], summary["rejected"]) == (2, 2)
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv").set_index("record")
    assert set(rejected.index) == {names[1], names[2]}
    assert "sampling rate" in rejected.loc[names[2], "reason"]
    assert rejected.loc[names[1], "path"].startswith(str(corpus))
    store = store_lib.ECGStore(tmp_path / "store")
    assert list(store.metadata.record_id) == [names[0], names[3]]
    assert store.read(0).shape == (2500, 12)  # 10 s at 100 Hz resampled to 250 Hz


def test_ptbxl_subset_ingest_labels_folds_and_float16_error(ptbxl_dir, tmp_path):
    all_ids = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").ecg_id
    ids = list(all_ids.iloc[::400])  # 34 records across all folds
    root = _ptbxl_subset(ptbxl_dir, tmp_path, ids)
    summary = ingest("ptbxl", root, tmp_path / "store", workers=0, shard_size=10, progress=False)
    expected = load_ptbxl_table(root)
    assert summary["records"] == len(ids) and summary["patients"] == expected.patient_id.nunique()
    for name in ("NORM", "MI", "STTC", "CD", "HYP"):
        assert summary["labels"][name]["count"] == int(expected[name].sum())
    store = store_lib.ECGStore(tmp_path / "store")
    meta = store.metadata
    assert list(meta.record_id) == [str(i) for i in expected.ecg_id]
    # This copy has no fold 10: the default folds give way to the last two present, and it says so.
    assert summary["folds"] == {"train": "2-7", "val": "8", "test": "9"} and "fold 10" in summary["folds_note"]
    assert set(meta.split[meta.strat_fold == 9]) == {"test"} and set(meta.split[meta.strat_fold == 8]) == {"val"}
    assert set(meta.split[meta.strat_fold <= 7]) == {"train"}
    assert summary["splits"]["test"] == int((meta.strat_fold == 9).sum()) > 0
    assert meta.groupby("patient_id").split.nunique().max() == 1
    # float16 storage error against the float32 preprocessed signal.
    from ecgjax.data.preprocess import preprocess_record
    from ecgjax.data.readers import read_wfdb
    row = expected.iloc[0]
    exact, _ = preprocess_record(read_wfdb(root / row.filename))
    assert np.abs(store.read(0) - exact).max() < 2e-3 + 2 ** -11 * np.abs(exact).max()


def test_full_ptbxl_label_counts_from_the_metadata_table(ptbxl_dir):
    """The counts the summary reports for the whole shared PTB-XL (signals are not read here;
    the full ingest is run by benchmarks/loader.py and recorded in benchmarks/RESULTS.md)."""
    rows = [{"record_id": item["record_id"], "patient_id": item["patient_id"], "metadata": item["metadata"]}
            for item in sources.get("ptbxl").items(ptbxl_dir, sampling_rate=100)]
    table, labels = _metadata_table(rows)
    assert labels[:5] == ["NORM", "MI", "STTC", "CD", "HYP"]
    assert (len(table), table.patient_id.nunique()) == (13320, 11600)
    counts = {name: int(table[name].sum()) for name in labels[:5]}
    assert counts == {"NORM": 5896, "MI": 3409, "STTC": 3275, "CD": 3061, "HYP": 1675}
    assert [round(100 * table[n].mean(), 1) for n in labels[:5]] == [44.3, 25.6, 24.6, 23.0, 12.6]


def test_ingest_records_and_the_command_line(tmp_path):
    summary = ingest_records(generate_cohort(3, 1, seed=0), tmp_path / "mem", shard_size=2)
    assert summary["records"] == 3 and store_lib.ECGStore(tmp_path / "mem").config["num_shards"] == 2
    assert "records: 3" in format_summary(summary)
    result = subprocess.run(
        [sys.executable, "-m", "ecgjax.data.ingest", "--source=synthetic", "--input=patients=4,records=1,seed=0",
         f"--output={tmp_path / 'cli'}", "--workers=0", "--split_method=hash", "--val_fraction=0.5"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "records: 4" in result.stdout and "patients: 4" in result.stdout and "rejected: 0" in result.stdout


def test_folds_are_picked_from_those_present_unless_given():
    assert parse_folds(["1-3", "5"]) == (1, 2, 3, 5) and parse_folds("8") == (8,)
    assert format_folds((5, 1, 2, 3, 9)) == "1-3,5,9"
    with pytest.raises(ValueError, match="folds 'x'"):
        parse_folds(["x"])
    standard = SplitConfig(method="folds")
    assert resolve_folds(standard, [1, 5, 9, 10, 8], auto=False, where="x") == (standard, "")
    picked, note = resolve_folds(standard, [3, 1, 2, 9, 8, 4, float("nan")], auto=True, where="x")
    assert (picked.train_folds, picked.val_folds, picked.test_folds) == ((1, 2, 3, 4), (8,), (9,))
    assert "test fold 10 is missing" in note and "--test_folds=9" in note
    with pytest.raises(UserError, match=r"ptbxl: the test split would be empty.*folds present: 1-9.*"
                                        r"--train_folds=1-7 --val_folds=8 --test_folds=9"):
        resolve_folds(standard, range(1, 10), auto=False, where="ptbxl")
    with pytest.raises(UserError, match="only folds 1-2 present.*--split_method=hash"):
        resolve_folds(standard, [1, 2], auto=True, where="x")
    with pytest.raises(UserError, match="fold.s. 9 given to more than one split"):
        resolve_folds(SplitConfig(method="folds", test_folds=(9,)), range(1, 10), auto=True, where="x")


def test_input_errors_name_the_input_and_keep_nothing_half_done(tmp_path):
    with pytest.raises(ECGInputError, match=r"nowhere: no such file or folder \(--input\)"):
        ingest("wfdb", tmp_path / "nowhere", tmp_path / "a", workers=0, progress=False)
    with pytest.raises(UserError, match="--input is required with --source=cinc2017"):
        ingest("cinc2017", None, tmp_path / "a", workers=0, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ECGInputError, match="empty: no wfdb records found"):
        ingest("wfdb", tmp_path / "empty", tmp_path / "a", workers=0, progress=False)
    assert not (tmp_path / "a").exists()  # refused before a store was begun
    with pytest.raises(UserError, match="--split_method=folds needs the strat_fold column"):
        ingest("wfdb", tmp_path / "empty", tmp_path / "a", split=SplitConfig(method="folds"), progress=False)


def test_every_record_rejected_still_writes_the_manifest_and_fails(tmp_path):
    for name in ("r1", "r2", "r3"):
        write_wfdb_fixture(tmp_path / "corpus", name, fs=100.0, seconds=2.0)
        (tmp_path / "corpus" / f"{name}.dat").unlink()  # header without its signal file
    with pytest.raises(ECGInputError, match=r"all 3 records were rejected; the reasons are in .*rejected.csv"):
        ingest("wfdb", tmp_path / "corpus", tmp_path / "store", workers=0, shard_size=2, progress=False)
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    assert list(rejected.record) == ["r1", "r2", "r3"] and rejected.reason.str.contains("r1.dat|r2.dat|r3.dat").all()
    assert store_lib.shard_is_complete(tmp_path / "store", 1)  # the work done is kept
    assert not (tmp_path / "store" / "store.json").exists()


def test_cinc2017_from_the_command_line(tmp_path):
    """The layout PhysioNet distributes (headers with checksum 0 and CRLF, fixtures.write_cinc2017_fixture)
    with REFERENCE.csv as some copies have it (a header line, CRLF): every record kept, and the
    checksums said once, not once per record. (REFERENCE without a header, LF: the session `cinc_store`.)"""
    labels = write_cinc2017_fixture(tmp_path / "cinc", n_records=8, seed=2)
    lines = ["data_source,class"] + [f"{name},{label}" for name, label in labels.items()]
    (tmp_path / "cinc" / "REFERENCE.csv").write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    result = subprocess.run(
        [sys.executable, "-m", "ecgjax.data.ingest", "--source=cinc2017", f"--input={tmp_path / 'cinc'}",
         f"--output={tmp_path / 'store'}", "--workers=0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "records: 8" in result.stdout and "rejected: 0" in result.stdout
    assert "kept with notes: checksum 8 (notes.csv)" in result.stdout
    (warning,) = [line for line in result.stderr.splitlines() if "checksum" in line]
    assert "8 records kept with a note: the header's checksum disagrees" in warning and "notes.csv" in warning
    store = store_lib.ECGStore(tmp_path / "store")
    assert dict(zip(store.metadata.record_id, store.metadata.label)) == labels
    assert store.fs == 250 and store.lead_mask(0).tolist() == [True] + [False] * 11
    assert store.config["split"]["test_fraction"] == 0.2  # 001's 75/5/20 %
    data = load_task_data(store, tasks.get_task("cinc2017"))
    assert sum(len(a) for a in data.values()) == 8 and data["train"].x.shape[2] == 1


def test_one_record_goes_to_train_and_every_empty_split_is_named(tmp_path, caplog):
    """What the user did: ingest one record. Its hash falls in validation's share ('p1': 0.116 with
    seed 0); it now trains, and both empty splits are named with what fills them."""
    write_wfdb_fixture(tmp_path / "one", "p1", seconds=10.0)
    with caplog.at_level("WARNING", logger="ecgjax.data.ingest"):
        summary = ingest("wfdb", tmp_path / "one", tmp_path / "store", workers=0, progress=False)
    assert summary["splits"] == {"train": 1, "val": 0, "test": 0, "unused": 0}
    (warning,) = [r.getMessage() for r in caplog.records if "empty" in r.getMessage()]
    assert warning.startswith("the val and test splits are empty (1 patient, hash split): ingest more records")
    assert f"warning: {warning}" in format_summary(summary)


def test_an_empty_split_of_a_few_patients_names_the_flags_that_fill_it(tmp_path, caplog):
    # Hashes with seed 0: a 0.905, c 0.311, d 0.211 (train), f 0.050 (test, < 0.1): validation is empty.
    records = [dataclasses.replace(record, patient_id=name, record_id=name)
               for record, name in zip(generate_cohort(4, 1, seed=0), "acdf")]
    with caplog.at_level("WARNING", logger="ecgjax.data.ingest"):
        summary = ingest_records(records, tmp_path / "store")
    assert summary["splits"] == {"train": 3, "val": 0, "test": 1, "unused": 0}
    (warning,) = [r.getMessage() for r in caplog.records if "empty" in r.getMessage()]
    assert warning == ("the val split is empty (4 patients, hash split): pass a larger --val_fraction (now 0.1) "
                       "or another --split_seed (now 0)")


def test_ecg_channels_beside_blood_pressure_are_kept(tmp_path, caplog):
    """What the user did: ingest ICU telemetry of II, V1 and ABP in mmHg. The ECG leads are stored,
    ABP is dropped and listed in notes.csv (the record was refused whole before)."""
    _, ecg = write_telemetry_fixture(tmp_path / "icu")
    with caplog.at_level("WARNING", logger="ecgjax.data.ingest"):
        summary = ingest("wfdb", tmp_path / "icu", tmp_path / "store", workers=0, progress=False)
    assert (summary["records"], summary["rejected"], summary["notes"]) == (1, 0, {"dropped_channels": 1})
    store = store_lib.ECGStore(tmp_path / "store")
    assert store.lead_mask(0).tolist() == [False, True] + [False] * 4 + [True] + [False] * 5  # II, V1
    notes = pd.read_csv(tmp_path / "store" / "notes.csv")
    assert notes[["record", "kind", "note"]].values.tolist() == [["icu", "dropped_channels", "dropped ABP (mmHg)"]]
    assert any("1 record kept with a note: non-ECG channels" in r.getMessage() for r in caplog.records)
    # The ECG itself: 125 -> 250 Hz, stored as float16; |II| < 2 mV, so 2 ** -10 mV per float16 step,
    # plus the resampling filter's ripple on these 10 ms spikes (well under 0.2 of their 1-2 mV height).
    assert abs(np.abs(store.read(0)[:, 1]).max() - np.abs(ecg[:, 0]).max()) < 0.2
