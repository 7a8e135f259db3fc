"""Readers on the real shared data and on generated fixtures, including corrupt WFDB files."""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgjax.data import readers
from ecgjax.data.errors import ECGInputError
from ecgjax.data.record import ECGRecord
from ecgjax.data.sources import code15, ptbxl
from fixtures import ecg_like, write_code15_fixture, write_telemetry_fixture, write_wfdb_fixture


# ----------------------------------------------------------------------------------------- PTB-XL

@pytest.fixture(scope="module")
def ptbxl_table(ptbxl_dir):
    return ptbxl.load_ptbxl_table(ptbxl_dir)


def test_ptbxl_table_reproduces_the_data_readme_counts(ptbxl_table):
    table = ptbxl_table
    assert len(table) == 13_320 and table["ecg_id"].is_unique
    assert table["patient_id"].nunique() == 11_600
    counts = {name: int(table[name].sum()) for name in ("NORM", "MI", "STTC", "CD", "HYP", "AFIB")}
    assert counts == {"NORM": 5896, "MI": 3409, "STTC": 3275, "CD": 3061, "HYP": 1675, "AFIB": 911}
    assert table["strat_fold"].value_counts().sort_index().tolist() == [1309, 1313, 1278, 1262, 1294, 1288,
                                                                          1301, 2129, 2146]
    assert (table["sex"] == 0).sum() == 6902 and table["age"].median() == 61
    assert table["superclasses"].map(len).min() >= 1  # only records with a superclass are included


def test_ptbxl_table_row_parsing(ptbxl_table):
    first = ptbxl_table.iloc[0]
    assert first["patient_id"] == "15709" and first["ecg_id"] == 1
    assert first["scp_codes"] == {"SR": 100.0, "NORM": 100.0, "LVOLT": 100.0}
    assert first["superclasses"] == ["NORM"] and first["subclasses"] == ["NORM"]
    assert first["filename"] == "records100/00000/00001_lr"


def test_ptbxl_500hz_paths_follow_the_official_layout_when_the_column_is_absent(ptbxl_dir):
    table = ptbxl.load_ptbxl_table(ptbxl_dir, sampling_rate=500)
    assert table.iloc[0]["filename"] == "records500/00000/00001_hr"


def test_read_ptbxl_yields_records_in_mv_with_labels(ptbxl_dir, ptbxl_table):
    records = list(ptbxl.read_ptbxl(ptbxl_dir, ecg_ids=[1, 2], table=ptbxl_table))
    assert [r.record_id for r in records] == ["1", "2"]
    first = records[0]
    assert first.signal.shape == (1000, 12) and first.signal.dtype == np.float32 and first.fs == 100
    assert first.patient_id == "15709" and first.source == "ptbxl"
    assert first.metadata["superclasses"] == ["NORM"] and first.metadata["NORM"] is True
    reference = wfdb.rdrecord(str(ptbxl_dir / "records100/00000/00001_lr"))
    np.testing.assert_array_equal(first.signal, reference.p_signal.astype(np.float32))


# ------------------------------------------------------------------------------------------- WFDB

@pytest.mark.parametrize("fmt", ["16", "212"])
def test_read_wfdb_round_trips_generated_records(tmp_path, fmt):
    signal = ecg_like(1000, 100.0, 12, seed=3)
    record = readers.read_wfdb(write_wfdb_fixture(tmp_path, fmt=fmt, signal_mv=signal), patient_id=7)
    assert record.signal.shape == (1000, 12) and record.patient_id == "7" and record.record_id == "rec"
    bits = {"16": 16, "212": 12}[fmt]
    resolution = np.ptp(signal, axis=0).max() / 2 ** (bits - 2)  # a few ADC steps
    np.testing.assert_allclose(record.signal, signal, atol=resolution)


def test_read_wfdb_converts_microvolts_to_millivolts(tmp_path):
    signal = ecg_like(500, 250.0, 3, seed=1)
    path = write_wfdb_fixture(tmp_path, signal_mv=signal, fs=250.0, lead_names=("I", "II", "V1"), units="uV")
    assert "/uV" in path.with_suffix(".hea").read_text()
    record = readers.read_wfdb(path)
    assert record.fs == 250.0
    np.testing.assert_allclose(record.signal, signal, atol=1e-3)


def test_read_wfdb_reads_flac_mitdb_like_wfdb(mitdb_dir):
    record = readers.read_wfdb(mitdb_dir / "100")
    reference = wfdb.rdrecord(str(mitdb_dir / "100"))
    assert record.lead_names == ("MLII", "V5") and record.fs == 360 and record.num_samples == 650_000
    np.testing.assert_array_equal(record.signal, reference.p_signal.astype(np.float32))
    assert record.metadata["comments"] == reference.comments


def _edit_header(path: pathlib.Path, edit) -> None:
    header = path.with_suffix(".hea")
    header.write_text(edit(header.read_text()))


def _expect_error(path, match: str):
    with pytest.raises(ECGInputError, match=match) as caught:
        readers.read_wfdb(path)
    assert pathlib.Path(path).name in str(caught.value)  # names the file


def test_truncated_signal_file_is_rejected(tmp_path):
    path = write_wfdb_fixture(tmp_path)
    dat = path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    _expect_error(path, "cannot read|truncated")


def test_header_signal_mismatch_is_rejected(tmp_path):
    path = write_wfdb_fixture(tmp_path, lead_names=("I", "II"))
    # Header claims more samples than the file holds.
    _edit_header(path, lambda text: text.replace("rec 2 100 1000", "rec 2 100 1200", 1))
    _expect_error(path, "1200|truncated|cannot read")


def test_a_checksum_that_disagrees_is_noted_not_rejected(tmp_path):
    """WFDB's own tools read such records (0 is a common placeholder): length and truncation reject,
    a checksum only notes."""
    path = write_wfdb_fixture(tmp_path, seed=0, lead_names=("I", "II"))
    other = write_wfdb_fixture(tmp_path / "other", seed=1, lead_names=("I", "II"))
    path.with_suffix(".dat").write_bytes(other.with_suffix(".dat").read_bytes())
    record = readers.read_wfdb(path)
    assert record.num_samples == 1000 and list(record.notes) == ["checksum"]
    want = wfdb.rdheader(str(path)).checksum[0]
    assert f"I: header {want}, samples " in record.notes["checksum"]
    assert not readers.read_wfdb(other).notes  # a matching checksum notes nothing


def test_nan_samples_are_rejected(tmp_path):
    signal = ecg_like(1000, 100.0, 2)
    signal[10:20, 1] = np.nan  # wrsamp writes WFDB's invalid-sample code
    _expect_error(write_wfdb_fixture(tmp_path, signal_mv=signal, lead_names=("I", "II")), "NaN")


def test_flat_lead_is_rejected(tmp_path):
    signal = ecg_like(1000, 100.0, 3)
    signal[:, 2] = 0.25
    _expect_error(write_wfdb_fixture(tmp_path, signal_mv=signal, lead_names=("I", "II", "V1")), r"flat.*V1")


def test_unknown_lead_name_is_rejected(tmp_path):
    _expect_error(write_wfdb_fixture(tmp_path, lead_names=("I", "RESP")), "unknown lead name 'RESP'")


@pytest.mark.parametrize("fs_text,match", [
    ("", "no sampling rate"), (" 20", "absurd sampling rate 20 Hz"), (" 50000", "absurd"),
    (" 0", "absurd sampling rate 0 Hz"), (" -100", "absurd sampling rate -100 Hz"),  # wfdb: 250 Hz
    (" 1e7", r"absurd sampling rate 1e\+07 Hz"), (" nan", "absurd sampling rate nan Hz"),  # wfdb: 1 Hz, 250 Hz
    (" 100Hz", "'100Hz' is not a number")])
def test_missing_or_absurd_sampling_rate_is_rejected(tmp_path, fs_text, match):
    path = write_wfdb_fixture(tmp_path, lead_names=("I", "II"))
    if fs_text:
        _edit_header(path, lambda text: text.replace("rec 2 100 1000", f"rec 2{fs_text} 1000", 1))
    else:  # a record line without fs (and so without length): wfdb would assume 250 Hz
        _edit_header(path, lambda text: text.replace("rec 2 100 1000", "rec 2", 1))
    _expect_error(path, f"{match}.*third field of the header's first line")


def test_sampling_rate_limits_cover_real_recorders():
    assert readers.check_sampling_rate(360, "r") == 360.0 and readers.check_sampling_rate(16_000, "r") == 16_000.0
    for fs in (None, 0, -100, float("inf"), 1e7, readers.MAX_FS_HZ + 1):
        with pytest.raises(ECGInputError, match="^r: .*sampling rate"):
            readers.check_sampling_rate(fs, "r")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_header_is_rejected_by_name(tmp_path, text):
    path = write_wfdb_fixture(tmp_path)
    path.with_suffix(".hea").write_text(text)
    _expect_error(path, "rec.hea: empty header")


def test_unsupported_unit_names_the_signal(tmp_path):
    """A standard lead name in mmHg: the header contradicts itself, so the user fixes it."""
    path = write_wfdb_fixture(tmp_path, lead_names=("I", "II"))
    _edit_header(path, lambda text: text.replace("/mV 16 0", "/mmHg 16 0", 1))
    _expect_error(path, "unsupported physical unit 'mmHg' of signal 'I'")


def test_non_ecg_channels_are_dropped_and_noted(tmp_path):
    path, ecg = write_telemetry_fixture(tmp_path)
    record = readers.read_wfdb(path)
    assert record.lead_names == ("II", "V1") and record.signal.shape == (1250, 2)
    np.testing.assert_allclose(record.signal, ecg, atol=np.ptp(ecg) / 2 ** 12)  # 16-bit ADC steps
    assert record.notes == {"dropped_channels": "dropped ABP (mmHg)"}
    wfdb.wrsamp("vitals", fs=125, units=["mmHg", "NU"], sig_name=["ABP", "PLETH"], p_signal=np.ones((100, 2)),
                fmt=["16"] * 2, write_dir=str(tmp_path))  # no ECG at all: nothing to read
    _expect_error(tmp_path / "vitals", r"no ECG channel: signals ABP \(mmHg\), PLETH \(NU\) are not in volts")


def test_annotation_reads_the_ecg_channels_of_mixed_telemetry(tmp_path, caplog):
    """What the user did: annotate a recording of II, V1 and ABP in mmHg. The ECG leads are
    annotated (not the whole record refused), and the dropped channel is named in the log."""
    from ecgjax.annotate import run

    path, ecg = write_telemetry_fixture(tmp_path / "records")
    with caplog.at_level("WARNING", logger="ecgjax.annotate.run"):
        status = run.annotate_path(str(path), str(tmp_path / "out"), _peak_fn, model_fs=250, model_leads=["II"],
                                   window_s=5, stride_s=5, qrs_heart_rate=False, plot=False)
    assert status == {"icu": "ok"}
    peaks = pd.read_csv(tmp_path / "out" / "icu.csv")["peak_mv"]
    # Peaks of lead II, not of ABP's ~120 mmHg: |II| < 2 mV (ecg_like), resampled 125 -> 250 Hz.
    assert len(peaks) == 2 and peaks.between(0.5 * np.abs(ecg[:, 0]).max(), 1.5 * np.abs(ecg[:, 0]).max()).all()
    assert any("icu.hea: dropped ABP (mmHg)" in r.getMessage() for r in caplog.records)


def _peak_fn(batch):
    """A stand-in model: each window's largest |amplitude| (mV)."""
    return {"peak_mv": np.abs(np.asarray(batch)).max(axis=(1, 2))}


def _strip_checksums(path: pathlib.Path) -> None:
    """Drops the checksum and block-size fields of every signal line (WFDB allows headers without them)."""
    def edit(text):
        record_line, *signal_lines = text.strip().splitlines()
        fields = [line.split() for line in signal_lines]
        return "\n".join([record_line] + [" ".join(f[:6] + f[8:]) for f in fields]) + "\n"
    _edit_header(path, edit)


@pytest.mark.parametrize("fmt", ["16", "212", "80", "24", "32"])
def test_header_shorter_than_the_signal_file_notes_it_and_reads_the_declared_length(tmp_path, fmt):
    signal = ecg_like(1000, 100.0, 2, seed=2)
    path = write_wfdb_fixture(tmp_path, signal_mv=signal, lead_names=("I", "II"), fmt=fmt)
    _strip_checksums(path)
    _edit_header(path, lambda text: text.replace("rec 2 100 1000", "rec 2 100 800", 1))
    record = readers.read_wfdb(path)
    assert record.num_samples == 800
    np.testing.assert_allclose(record.signal, signal[:800], atol=np.ptp(signal) / 2 ** 6)
    assert list(record.notes) == ["longer_file"]
    assert "declares 800 samples per signal but rec.dat holds 1000; read the declared 800" in record.notes["longer_file"]


def test_a_padded_last_group_is_not_taken_for_extra_samples(tmp_path):
    """Format 212 packs 2 samples in 3 bytes; 1001 samples end in a half group that writers pad to 3 bytes."""
    path = write_wfdb_fixture(tmp_path, fmt="212", lead_names=("I",), seconds=10.01)
    dat = path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes().ljust(1503, b"\0"))
    _strip_checksums(path)
    record = readers.read_wfdb(path)
    assert record.num_samples == 1001 and not record.notes


@pytest.mark.parametrize("fmt", ["16", "212"])
def test_header_longer_than_a_checksumless_signal_file_is_rejected(tmp_path, fmt):
    path = write_wfdb_fixture(tmp_path, lead_names=("I", "II"), fmt=fmt)
    _strip_checksums(path)
    _edit_header(path, lambda text: text.replace("rec 2 100 1000", "rec 2 100 1200", 1))
    _expect_error(path, "declares 1200 samples per signal but rec.dat holds 1000: truncated")


def test_header_shorter_than_a_checksummed_file_reads_the_declared_length_and_notes_both(tmp_path):
    path = write_wfdb_fixture(tmp_path, lead_names=("I", "II"))
    _edit_header(path, lambda text: text.replace("rec 2 100 1000", "rec 2 100 800", 1))
    record = readers.read_wfdb(path)
    assert record.num_samples == 800 and sorted(record.notes) == ["checksum", "longer_file"]
    assert "declares 800 samples per signal but rec.dat holds 1000" in record.notes["longer_file"]


def test_read_wfdb_recording_keeps_what_annotation_needs(tmp_path):
    """Unknown lead names, missing samples (NaN) and flat leads are for the caller to judge."""
    signal = ecg_like(1000, 100.0, 3)
    signal[10:20, 1] = np.nan
    signal[:, 2] = 0.25
    path = write_wfdb_fixture(tmp_path, signal_mv=signal, lead_names=("ECG1", "ECG2", "RESP"), units="uV")
    record = readers.read_wfdb_recording(path.with_suffix(".hea"))
    assert record.lead_names == ("ECG1", "ECG2", "RESP") and record.fs == 100.0 and record.record_id == "rec"
    assert np.isnan(record.signal[10:20, 1]).all() and np.isfinite(np.delete(record.signal, 1, axis=1)).all()
    np.testing.assert_allclose(record.signal, signal, atol=1e-3)  # uV read as mV
    with pytest.raises(ECGInputError, match="unknown lead name"):
        readers.validate_record(record)


def test_missing_header_is_rejected(tmp_path):
    _expect_error(tmp_path / "nothing", "missing WFDB header")


def test_validate_record_checks_in_memory_records():
    def record(**changes):
        fields = dict(signal=np.ones((100, 2), np.float32) * np.arange(100)[:, None], fs=100.0,
                      lead_names=("I", "II"), record_id="r", patient_id="p", source="test", path="mem/r")
        fields.update(changes)
        return ECGRecord(**fields)

    assert readers.validate_record(record()).record_id == "r"
    for changes, match in [({"fs": 0.0}, "sampling rate"), ({"fs": float("nan")}, "sampling rate"),
                           ({"lead_names": ("I",)}, "lead names"), ({"lead_names": ("I", "D1")}, "repeated"),
                           ({"signal": np.zeros((0, 2), np.float32)}, "empty")]:
        with pytest.raises(ECGInputError, match=match) as caught:
            readers.validate_record(record(**changes))
        assert str(caught.value).startswith("mem/r: ")


# ---------------------------------------------------------------------------------------- CODE-15

def test_read_code15_strips_padding_and_attaches_metadata(tmp_path):
    table = write_code15_fixture(tmp_path, exams_per_part=(3, 2))
    records = list(code15.read_code15(tmp_path, block_rows=2))
    assert [int(r.record_id) for r in records] == table["exam_id"].tolist()  # exam_id 0 rows skipped
    for record, (_, row) in zip(records, table.iterrows()):
        assert record.fs == 400 and record.lead_names == code15.CODE15_LEADS and record.source == "code15"
        assert record.num_samples == row["num_samples"]  # symmetric zero padding removed
        assert record.patient_id == str(row["patient_id"])
        assert record.metadata["AF"] == row["AF"] and record.metadata["sex"] == (0 if row["is_male"] else 1)
        np.testing.assert_allclose(record.signal, ecg_like(row["num_samples"], 400.0, 12, row["exam_id"]),
                                   atol=1e-6)
        readers.validate_record(record)


def test_read_code15_filters_exam_ids_and_scales(tmp_path):
    table = write_code15_fixture(tmp_path)
    wanted = int(table["exam_id"].iloc[-1])
    (only,) = code15.read_code15(tmp_path, exam_ids=[wanted], scale_to_mv=0.1)
    assert only.record_id == str(wanted)
    np.testing.assert_allclose(only.signal, 0.1 * ecg_like(int(table["num_samples"].iloc[-1]), 400.0, 12, wanted),
                               atol=1e-6)


def test_read_code15_without_table_is_rejected(tmp_path):
    with pytest.raises(ECGInputError, match="exams.csv"):
        next(code15.read_code15(tmp_path))


# ------------------------------------------------------------------------------------ Annotations

@pytest.mark.parametrize("name,has_afib", [("201", True), ("202", True), ("222", True), ("100", False)])
def test_mitdb_rhythm_intervals(mitdb_dir, name, has_afib):
    annotations = readers.read_annotations(mitdb_dir / name)
    labels = {label for _, _, label in annotations.rhythms}
    assert ("AFIB" in labels) == has_afib and "N" in labels
    assert all(re.fullmatch(r"[A-Z]+", label) for label in labels)  # no '(' and no '\x00'
    assert annotations.fs == 360 and annotations.rhythms[-1][1] == annotations.num_samples == 650_000
    starts, ends = np.array([r[0] for r in annotations.rhythms]), np.array([r[1] for r in annotations.rhythms])
    assert np.all(ends > starts) and np.array_equal(starts[1:], ends[:-1])  # contiguous


def test_mitdb_beats_and_rhythm_at(mitdb_dir):
    annotations = readers.read_annotations(mitdb_dir / "201")
    reference = wfdb.rdann(str(mitdb_dir / "201"), "atr")
    assert set(annotations.beat_symbols) <= readers._BEAT_SYMBOLS and "+" not in set(annotations.beat_symbols)
    assert len(annotations.beat_samples) == sum(s in readers._BEAT_SYMBOLS for s in reference.symbol) > 1500
    assert np.all(np.diff(annotations.beat_samples) > 0)
    first_start, first_end, first_label = annotations.rhythms[0]
    labels = readers.rhythm_at(annotations, [0, first_start, first_end - 1, annotations.num_samples - 1])
    assert labels[0] == ("" if first_start > 0 else first_label)
    assert labels[1] == labels[2] == first_label == "AFIB"
    assert labels[3] == annotations.rhythms[-1][2]


def test_missing_annotation_file_is_rejected(tmp_path):
    path = write_wfdb_fixture(tmp_path)
    with pytest.raises(ECGInputError, match="rec.atr: missing annotation file"):
        readers.read_annotations(path)
