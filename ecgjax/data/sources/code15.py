"""CODE-15% (Ribeiro et al. 2021): 345,779 exams of 233,770 patients, 12 leads at 400 Hz, with six
abnormalities (1dAVb, RBBB, LBBB, SB, ST, AF) as metadata columns.

Layout: exams.csv (exam_id, patient_id, labels, age, is_male, ...) and exams_part*.hdf5 files
holding 'tracings' [N, 4096, 12] and 'exam_id' [N]. The corpus is too large to plan up front: the
source streams its records (only the shards in flight are held in memory). Split: 80/10/10 % of
patients by hash.
"""
from __future__ import annotations

import pathlib
import re
import warnings
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.record import ECGRecord
from ecgjax.data.sources.registry import Source, register

CODE15_FS_HZ = 400.0
# CODE-15% lead order, as documented with the dataset (DI, DII, DIII, AVR, AVL, AVF, V1-V6).
CODE15_LEADS = CANONICAL_LEADS
CODE15_LABELS = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")


# --------------------------------------------------------------------------------------------

def _part_number(path: pathlib.Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def strip_zero_padding(signal: np.ndarray) -> np.ndarray:
    """Drops the all-zero rows at both ends of [time, leads] (CODE-15% centres short exams in zeros)."""
    active = np.flatnonzero(np.any(signal != 0, axis=1))
    if active.size == 0:
        return signal[:0]
    return signal[active[0]:active[-1] + 1]


def read_code15(root, *, scale_to_mv: float = 1.0, exam_ids: Iterable[int] | None = None,
                block_rows: int = 64) -> Iterator[ECGRecord]:
    """Yields CODE-15% exams from `exams.csv` and `exams_part*.hdf5` in `root`.

    Each HDF5 file holds `tracings` [N, 4096, 12] float32 (400 Hz, leads I, II, III, aVR, aVL,
    aVF, V1-V6, shorter exams centred in zeros) and `exam_id` [N]. Tracings are read
    `block_rows` exams at a time, never a whole file; zero padding is stripped at both ends.

    Units: the authors' README says "scale 1e-4V ... multiplied by 1000 to obtain V", which
    contradicts itself; the PhysioNet Challenge 2025 conversion of CODE-15% (prepare_code15_data.py)
    treats the values as mV (gain 1000/mV), so `scale_to_mv` defaults to 1.0. Pass 0.1 to read
    them as 1e-4 V units.

    Rows with exam_id 0 (padding rows at the end of a file) are skipped; exams missing from
    exams.csv are skipped with a warning (no patient id, so they cannot be split by patient).
    An all-zero tracing is yielded empty, for `validate_record` to reject.
    """
    import h5py  # only this reader needs it

    root = pathlib.Path(root)
    exams_path = root / "exams.csv"
    if not exams_path.is_file():
        raise ECGInputError(exams_path, "missing CODE-15% exams table")
    exams = pd.read_csv(exams_path).set_index("exam_id", drop=False)
    parts = sorted(root.glob("exams_part*.hdf5"), key=_part_number)
    if not parts:
        raise ECGInputError(root, "no exams_part*.hdf5 files")
    wanted = None if exam_ids is None else set(int(i) for i in exam_ids)
    for part in parts:
        try:
            file = h5py.File(part, "r")
        except OSError as error:
            raise ECGInputError(part, f"cannot open HDF5 file ({error})") from None
        with file:
            if "tracings" not in file or "exam_id" not in file:
                raise ECGInputError(part, "expected datasets 'tracings' and 'exam_id'")
            tracings, ids = file["tracings"], np.asarray(file["exam_id"][:]).astype(np.int64)
            if tracings.ndim != 3 or tracings.shape[0] != ids.shape[0] or tracings.shape[2] != len(CODE15_LEADS):
                raise ECGInputError(part, f"tracings shape {tracings.shape} does not match "
                                          f"{ids.shape[0]} exam ids x {len(CODE15_LEADS)} leads")
            keep = ids != 0
            if wanted is not None:
                keep &= np.isin(ids, list(wanted))
            rows = np.flatnonzero(keep)
            for block_start in range(0, rows.size, block_rows):
                block = rows[block_start:block_start + block_rows]
                # One contiguous slice per block (h5py reads contiguous ranges fastest).
                data = tracings[block[0]:block[-1] + 1]
                for row in block:
                    exam_id = int(ids[row])
                    if exam_id not in exams.index:
                        warnings.warn(f"{part}: exam {exam_id} is not in exams.csv; skipped")
                        continue
                    yield _code15_record(data[row - block[0]], exams.loc[exam_id], part, scale_to_mv)


def _code15_record(tracing: np.ndarray, exam: pd.Series, part: pathlib.Path, scale_to_mv: float) -> ECGRecord:
    exam = exam.iloc[0] if isinstance(exam, pd.DataFrame) else exam  # tolerate duplicated exam ids
    signal = strip_zero_padding(np.asarray(tracing, np.float32)) * np.float32(scale_to_mv)
    metadata = {key: (exam[key].item() if hasattr(exam[key], "item") else exam[key])
                for key in exam.index if key not in ("patient_id",)}
    if "is_male" in exam.index:
        metadata["sex"] = 0 if bool(exam["is_male"]) else 1  # PTB-XL coding: 0 male, 1 female
    return ECGRecord(
        signal=np.ascontiguousarray(signal),
        fs=CODE15_FS_HZ,
        lead_names=CODE15_LEADS,
        record_id=str(int(exam["exam_id"])),
        patient_id=str(int(exam["patient_id"])),
        source="code15",
        metadata=metadata,
        path=f"{part}:{int(exam['exam_id'])}",
    )


@register("code15")
class CODE15(Source):
    """Items are the ECGRecords themselves, read in this process (one HDF5 block at a time) and
    validated by preprocess in the workers."""

    layout = "the CODE-15% folder (exams.csv, exams_part*.hdf5)"
    streamed = True

    def items(self, input, *, sampling_rate: int) -> Iterator[ECGRecord]:
        return read_code15(input)
