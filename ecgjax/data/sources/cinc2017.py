"""PhysioNet/CinC Challenge 2017 (AF classification from a short single-lead ECG) as published.

Layout: a folder of single-lead WFDB records 'A00001.hea' + '.mat' at 300 Hz (AliveCor lead,
named 'ECG'), a RECORDS list, and REFERENCE.csv with one 'A00001,N' line per record; the class is
N (normal), A (AF), O (other rhythm) or ~ (noisy). Public copies of REFERENCE.csv often begin with
a header line ('data_source,class', ...) and have CRLF line ends: both are accepted.

Records are read like any WFDB record (readers.read_wfdb_recording: header, units to mV, length
checked). The distributed headers carry 0 in the checksum field and end their lines in CRLF: the
records are read as WFDB's tools read them, the checksum noted (ingest lists it in notes.csv, with
one warning). The lead is read as lead I; each record is its own patient (the challenge
publishes no patient ids); the class goes to metadata 'label', the column of the 'cinc2017' probe
task. A store of it is split at random 75/5/20 % (train/val/test) as in 001:

    python -m ecgjax.data.ingest --source=cinc2017 --input=/data/training2017 --output=stores/cinc2017
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterator

from ecgjax.data.errors import ECGInputError
from ecgjax.data.readers import read_wfdb_recording, validate_record
from ecgjax.data.record import ECGRecord
from ecgjax.data.sources.registry import Source, register
from ecgjax.data.splits import SplitConfig

CINC2017_CLASSES = ("N", "A", "O", "~")
# 001 splits the records at random 75/5/20 % train/val/test: a hashed split, record = patient.
CINC2017_SPLIT = SplitConfig(method="hash", val_fraction=0.05, test_fraction=0.20)
REFERENCE = "REFERENCE.csv"
LAYOUT_FIX = "expected the PhysioNet/CinC 2017 layout: REFERENCE.csv ('A00001,N' lines) beside the A*.hea/.mat records"


def read_cinc2017_reference(root) -> dict[str, str]:
    """REFERENCE.csv -> {record: label}; an optional header line is skipped, CRLF accepted."""
    path = pathlib.Path(root) / REFERENCE
    if not path.is_file():
        raise ECGInputError(path, f"missing REFERENCE.csv ({LAYOUT_FIX})")
    labels: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: spreadsheets add a BOM
    first = True
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        is_header = (first and len(parts) == 2 and parts[1] not in CINC2017_CLASSES
                     and not (path.parent / f"{parts[0]}.hea").is_file())  # a record's bad label is no header
        first = False
        if is_header:
            continue
        if len(parts) != 2 or parts[1] not in CINC2017_CLASSES:
            raise ECGInputError(path, f"line {number}: expected 'RECORD,LABEL' with LABEL in "
                                      f"{CINC2017_CLASSES}, got {line!r}")
        labels[parts[0]] = parts[1]
    if not labels:
        raise ECGInputError(path, f"no labelled records ({LAYOUT_FIX})")
    return labels


def cinc2017_items(root) -> list[dict]:
    """One picklable item {'path', 'record_id', 'label'} per record, in RECORDS order (else sorted);
    'label' is None for a record REFERENCE.csv does not label."""
    root = pathlib.Path(root)
    labels = read_cinc2017_reference(root)
    names = (root / "RECORDS").read_text().split() if (root / "RECORDS").is_file() else sorted(labels)
    return [{"path": str(root / name), "record_id": name, "label": labels.get(name)} for name in names]


def read_cinc2017_record(path, record_id: str, label: str | None) -> ECGRecord:
    """One record (path without extension) as a validated single-lead ECGRecord in mV, lead I.

    Raises ECGInputError naming the header (or REFERENCE.csv for an unlabelled record).
    """
    path = pathlib.Path(path)
    if label is None:
        raise ECGInputError(path.parent / REFERENCE, f"no label for record {record_id!r}")
    record = read_wfdb_recording(path, source="cinc2017")
    if len(record.lead_names) != 1:
        raise ECGInputError(record.path, f"expected one lead, found {len(record.lead_names)}")
    return validate_record(dataclasses.replace(record, lead_names=("I",), record_id=record_id,
                                               patient_id=record_id, metadata={"label": label}))


def read_cinc2017(root) -> Iterator[ECGRecord]:
    """Yields the labelled records (metadata {'label': N|A|O|~}) of a CinC 2017 folder; the first
    unusable record raises (ingest instead rejects it and goes on)."""
    for item in cinc2017_items(root):
        yield read_cinc2017_record(item["path"], item["record_id"], item["label"])


@register("cinc2017")
class CinC2017(Source):
    layout = "the PhysioNet/CinC 2017 folder (REFERENCE.csv, A*.hea + .mat)"
    validated = True

    def items(self, input, *, sampling_rate: int) -> list[dict]:
        return cinc2017_items(input)

    def read(self, item) -> list[ECGRecord]:
        return [read_cinc2017_record(item["path"], item["record_id"], item["label"])]

    def item_name(self, item) -> tuple[str, str]:
        return item["record_id"], item["path"]

    def default_split(self) -> SplitConfig:
        return CINC2017_SPLIT
