"""Generators of small fixtures in the native layouts of real corpora (for tests of any module)."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import wfdb

TWELVE_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def ecg_like(num_samples: int, fs: float, num_leads: int, seed: int = 0) -> np.ndarray:
    """[time, leads] float64 mV: a 72 bpm spiky beat train plus a little noise, different per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / fs
    phase = (t * 1.2) % 1.0
    beat = np.exp(-((phase - 0.3) / 0.012) ** 2) + 0.2 * np.exp(-((phase - 0.6) / 0.05) ** 2)
    gains = rng.uniform(0.5, 1.5, num_leads) * rng.choice([-1, 1], num_leads)
    return beat[:, None] * gains[None, :] + 0.01 * rng.standard_normal((num_samples, num_leads))


def write_wfdb_fixture(directory, name: str = "rec", *, signal_mv: np.ndarray | None = None, fs: float = 100.0,
                       lead_names=TWELVE_LEADS, fmt: str = "16", units: str = "mV",
                       seconds: float = 10.0, seed: int = 0) -> pathlib.Path:
    """Writes a WFDB record with wfdb.wrsamp; returns its path without extension.

    `signal_mv` [time, leads] (default `ecg_like`) is written in `units` ('mV' or 'uV').
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if signal_mv is None:
        signal_mv = ecg_like(int(seconds * fs), fs, len(lead_names), seed)
    physical = np.asarray(signal_mv, np.float64) * (1000.0 if units == "uV" else 1.0)
    wfdb.wrsamp(name, fs=fs, units=[units] * len(lead_names), sig_name=list(lead_names), p_signal=physical,
                fmt=[fmt] * len(lead_names), write_dir=str(directory))
    return directory / name


def write_telemetry_fixture(directory, name: str = "icu") -> tuple[pathlib.Path, np.ndarray]:
    """An ICU telemetry record: leads II and V1 in mV beside arterial pressure ABP in mmHg (125 Hz,
    the way bedside monitors export them). Returns (path, the ECG [time, 2] in mV)."""
    signal = ecg_like(1250, 125.0, 3, seed=4)
    signal[:, 2] = 90 + 30 * np.sin(np.arange(1250) / 125.0 * 2 * np.pi * 1.2)  # mmHg
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=125, units=["mV", "mV", "mmHg"], sig_name=["II", "V1", "ABP"], p_signal=signal,
                fmt=["16"] * 3, write_dir=str(directory))
    return directory / name, signal[:, :2]


def write_code15_fixture(directory, exams_per_part=(3, 2), *, active_samples=(4000, 2800),
                         padding_rows: int = 1, seed: int = 0) -> pd.DataFrame:
    """Writes CODE-15% in its documented layout: exams.csv plus exams_part{i}.hdf5.

    Each part holds `tracings` [N, 4096, 12] float32 (400 Hz, values as mV) with exams of
    `active_samples` length centred in zeros, `exam_id` [N], and `padding_rows` all-zero rows of
    exam_id 0 at the end (as in the released files). Returns the exams table written, plus a column
    `num_samples` with each exam's unpadded length.
    """
    import h5py

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, exam_id = [], 1000
    for part, count in enumerate(exams_per_part):
        tracings = np.zeros((count + padding_rows, 4096, 12), np.float32)
        ids = np.zeros(count + padding_rows, np.int64)
        for i in range(count):
            length = active_samples[(exam_id + i) % len(active_samples)]
            start = (4096 - length) // 2
            tracings[i, start:start + length] = ecg_like(length, 400.0, 12, seed + exam_id)
            ids[i] = exam_id
            rows.append({"exam_id": exam_id, "age": int(rng.integers(20, 90)), "is_male": bool(rng.integers(2)),
                         "nn_predicted_age": float(rng.uniform(20, 90)),
                         **{label: bool(rng.integers(2)) for label in ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")},
                         "patient_id": 500 + exam_id // 2, "death": False, "timey": 3.5,
                         "normal_ecg": bool(rng.integers(2)), "trace_file": f"exams_part{part}.hdf5",
                         "num_samples": length})
            exam_id += 1
        with h5py.File(directory / f"exams_part{part}.hdf5", "w") as file:
            file.create_dataset("tracings", data=tracings, chunks=(1, 4096, 12))
            file.create_dataset("exam_id", data=ids)
    table = pd.DataFrame(rows)
    table.drop(columns="num_samples").to_csv(directory / "exams.csv", index=False)
    return table


def write_cinc2017_record(directory, name: str, digital: np.ndarray, *, fs: int = 300,
                          base_time: str = "05:05:15", base_date: str = "1/05/2000") -> pathlib.Path:
    """Writes one record byte for byte as PhysioNet distributes CinC 2017: `NAME.hea` with CRLF line
    ends, a trailing space on each line and 0 in the checksum field, and `NAME.mat`, a MATLAB v4 file
    whose 24-byte prefix (type 30 = little-endian int16, 1 row, `len(digital)` columns, real, the
    4-byte name 'val') precedes the samples, read by WFDB as format `16+24` at 1000/mV.
    `digital` [time] int16 are the samples (mV x 1000). Returns the path without extension."""
    directory = pathlib.Path(directory)
    digital = np.asarray(digital, "<i2")
    prefix = np.array([30, 1, digital.size, 0, 4], "<i4").tobytes() + b"val\0"
    (directory / f"{name}.mat").write_bytes(prefix + digital.tobytes())
    lines = [f"{name} 1 {fs} {digital.size} {base_time} {base_date} ",
             f"{name}.mat 16+24 1000/mV 16 0 {int(digital[0])} 0 0 ECG "]
    (directory / f"{name}.hea").write_bytes("".join(line + "\r\n" for line in lines).encode("ascii"))
    return directory / name


def write_cinc2017_fixture(directory, n_records: int = 24, seed: int = 0) -> dict[str, str]:
    """Writes the PhysioNet/CinC 2017 layout as distributed (`write_cinc2017_record`: checksum 0,
    CRLF, .mat at 1000/mV): RECORDS, REFERENCE.csv ('A00001,N' lines) and single-lead records
    'A000NN' (lead named 'ECG', 300 Hz) of 9-30 s. Classes cycle N, A, O, ~: N regular beats,
    A irregular RR without P-like waves, O regular with wide beats, ~ mostly noise.
    Returns {record: label}."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fs, labels = 300, {}
    for i in range(n_records):
        name, label = f"A{i + 1:05d}", "NAO~"[i % 4]
        n = int(rng.uniform(9, 30) * fs)
        t = np.arange(n) / fs
        rr = rng.uniform(0.4, 1.2, 200) if label == "A" else np.full(200, rng.uniform(0.7, 1.0))
        beats = np.cumsum(rr)
        width = 0.03 if label == "O" else 0.012
        signal = np.zeros(n)
        for b in beats[beats < t[-1]]:
            signal += np.exp(-((t - b) / width) ** 2)
            if label != "A":
                signal += 0.15 * np.exp(-((t - b + 0.16) / 0.02) ** 2)
        noise = 0.5 if label == "~" else 0.02
        signal += noise * rng.standard_normal(n)
        write_cinc2017_record(directory, name, np.round(signal * 1000), fs=fs)
        labels[name] = label
    (directory / "RECORDS").write_text("".join(f"{name}\n" for name in labels))
    (directory / "REFERENCE.csv").write_text("".join(f"{name},{label}\n" for name, label in labels.items()))
    return labels


def write_fold_store(output, split, *, folds=range(1, 10), patients_per_fold: int = 3, fs: float = 250.0,
                     unlabelled_folds=()):
    """A store of one 10 s twelve-lead record per patient with PTB-XL-style strat_fold and a binary
    'MI' label (missing in `unlabelled_folds`), split at ingest by `split` (an ecgjax SplitConfig)."""
    from ecgjax.data.ingest import ingest_records
    from ecgjax.data.record import ECGRecord
    from ecgjax.data.store import ECGStore

    records = []
    for fold in folds:
        for k in range(patients_per_fold):
            number = fold * 100 + k
            label = None if fold in unlabelled_folds else number % 2
            records.append(ECGRecord(signal=ecg_like(int(10 * fs), fs, 12, seed=number).astype(np.float32), fs=fs,
                                     lead_names=TWELVE_LEADS, record_id=str(number), patient_id=f"p{number}",
                                     source="fixture", metadata={"strat_fold": fold, "MI": label}))
    ingest_records(records, output, target_fs=fs, split=split)
    return ECGStore(output)
