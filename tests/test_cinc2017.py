"""PhysioNet/CinC 2017 as PhysioNet distributes it: the generated fixture is that layout byte for
byte (headers with 0 in the checksum field and CRLF line ends, MATLAB v4 .mat files), it ingests
with every record kept and its checksum noted, and so do the real records in ../shared/data/cinc2017."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgjax.data.ingest import ingest
from ecgjax.data.sources.cinc2017 import read_cinc2017_record
from ecgjax.data.store import ECGStore
from fixtures import write_cinc2017_record


@pytest.mark.parametrize("name", ["A00001", "A00003", "A08527"])
def test_the_fixture_writes_what_physionet_distributes(cinc2017_dir, tmp_path, name):
    """The real files rebuilt from their samples, start time and date alone are the same bytes."""
    real = cinc2017_dir / name
    record_line = real.with_suffix(".hea").read_bytes().decode("ascii").split("\r\n")[0]
    _, _, fs, _, base_time, base_date = record_line.split()
    digital = np.frombuffer(real.with_suffix(".mat").read_bytes()[24:], "<i2")
    written = write_cinc2017_record(tmp_path, name, digital, fs=int(fs), base_time=base_time, base_date=base_date)
    for suffix in (".hea", ".mat"):
        assert written.with_suffix(suffix).read_bytes() == real.with_suffix(suffix).read_bytes()


def test_a_record_with_checksum_0_reads_as_wfdb_reads_it(tmp_path):
    digital = np.round(100 + 1500 * np.sin(np.arange(3000) / 300 * 2 * np.pi * 1.2)).astype(np.int16)  # sum != 0
    path = write_cinc2017_record(tmp_path, "A00001", digital)
    assert b" 0 0 ECG \r\n" in path.with_suffix(".hea").read_bytes()  # checksum 0, block size 0
    record = read_cinc2017_record(path, "A00001", "N")
    assert record.lead_names == ("I",) and record.fs == 300 and record.metadata == {"label": "N"}
    # Both are a 16-bit integer over 1000/mV: the float32 quotient, or the float64 one rounded to
    # float32 (at most one float32 step apart, ~1e-7 relative).
    np.testing.assert_allclose(record.signal[:, 0], wfdb.rdrecord(str(path)).p_signal[:, 0], rtol=1e-6)
    assert record.notes["checksum"] == f"checksum disagrees (ECG: header 0, samples {int(digital.sum()) % 65536})"


def test_the_official_layout_ingests_every_record_with_its_checksum_noted(cinc_store):
    assert len(cinc_store) == 40 and pd.read_csv(cinc_store.path / "rejected.csv").empty
    notes = pd.read_csv(cinc_store.path / "notes.csv")
    assert len(notes) == 40 and set(notes.kind) == {"checksum"} and notes.note.str.contains("header 0").all()
    assert json.loads((cinc_store.path / "summary.json").read_text())["notes"] == {"checksum": 40}
    assert set(cinc_store.metadata.label) == {"N", "A", "O", "~"}
    assert all(cinc_store.lead_mask(i).tolist() == [True] + [False] * 11 for i in range(len(cinc_store)))


def test_real_records_ingest_without_a_loss(cinc2017_dir, tmp_path):
    """The first 40 records of ../shared/data/cinc2017, linked (not copied) beside a REFERENCE.csv of
    their own lines: every one kept, labelled, and as long as its header says."""
    names = (cinc2017_dir / "RECORDS").read_text().split()[:40]
    subset = tmp_path / "cinc"
    subset.mkdir()
    for name in names:
        for suffix in (".hea", ".mat"):
            (subset / f"{name}{suffix}").symlink_to(cinc2017_dir / f"{name}{suffix}")
    labels = dict(line.split(",") for line in (cinc2017_dir / "REFERENCE.csv").read_text().split())
    (subset / "REFERENCE.csv").write_text("".join(f"{name},{labels[name]}\n" for name in names))
    summary = ingest("cinc2017", subset, tmp_path / "store", workers=0, progress=False)
    assert (summary["records"], summary["rejected"], summary["notes"]) == (40, 0, {"checksum": 40})
    store = ECGStore(tmp_path / "store")
    assert dict(zip(store.metadata.record_id, store.metadata.label)) == {name: labels[name] for name in names}
    declared = [wfdb.rdheader(str(subset / name)).sig_len for name in names]
    assert store.lengths.tolist() == [math.ceil(n * 250 / 300) for n in declared]  # 300 -> 250 Hz
    assert store.config["split"]["test_fraction"] == 0.2
