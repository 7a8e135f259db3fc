"""The in-memory form every reader yields and every preprocessing step takes."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class ECGRecord:
    """One ECG recording.

    Attributes:
      signal: [time, leads] float32, millivolts.
      fs: sampling rate in Hz.
      lead_names: one name per column of `signal` (canonical spelling once preprocessed).
      record_id: unique within its source (e.g. PTB-XL ecg_id, WFDB record name).
      patient_id: the person the record belongs to; splits and positives are patient-level.
      source: corpus name ('ptbxl', 'code15', 'wfdb', 'synthetic', ...).
      metadata: labels and everything else (age, sex, scp codes, superclasses, fold, ...).
      path: where the record came from, for error messages.
      notes: {kind: text} of what the reader noticed but did not refuse (a checksum that disagrees,
        non-ECG channels dropped, a signal file longer than declared; kinds in readers.NOTE_KINDS),
        for the caller to report (ingest lists them once, in notes.csv).
    """

    signal: np.ndarray
    fs: float
    lead_names: tuple[str, ...]
    record_id: str
    patient_id: str
    source: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.fs


def jsonable(value):
    """`value` (metadata: numpy scalars, NaN, tuples, nested dicts) as JSON values; NaN -> None,
    anything else unknown -> its str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
