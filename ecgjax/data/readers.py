"""Readers for real ECG corpora in the layouts users download; each yields `ECGRecord`s in mV.

- `read_wfdb_recording`: any WFDB record (formats 16, 212, FLAC 508/516/524, ...) as it is, header,
  units and length checked; any length and lead names, NaN where samples are missing; non-ECG
  channels (units not a voltage) dropped and a checksum that disagrees kept as `ECGRecord.notes`.
- `read_wfdb`: the same, then `validate_record` (ingest's record-level checks).
- `read_annotations` / `rhythm_at`: MIT-BIH style beat and rhythm annotations of long recordings.
- `validate_record`: the checks every record passes before it is used.

Bad input raises `ECGInputError` naming the file and the problem. What is particular to one corpus
(PTB-XL's tables, CODE-15%'s HDF5 files, CinC 2017's REFERENCE.csv) lives in its module of
`ecgjax.data.sources`.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from typing import Sequence

import numpy as np
import wfdb
import wfdb.io.annotation
import wfdb.io.header
from wfdb.io import _header, _signal

from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import canonical_lead_name
from ecgjax.data.record import ECGRecord

# Sampling rates outside this range are a broken header, not an ECG: below 50 Hz the QRS complex
# (energy up to ~40 Hz) is aliased away; recorders that resolve pacemaker spikes or high-frequency
# QRS sample at up to ~10-16 kHz, so a larger value is a typo or another field (e.g. a length).
MIN_FS_HZ = 50.0
MAX_FS_HZ = 20_000.0

# Physical units found in WFDB headers, as multipliers to millivolts. WFDB's default unit is mV.
_UNIT_TO_MV = {"mv": 1.0, "": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}

# wfdb's table of which annotation codes mark a beat (QRS complex).
_BEAT_SYMBOLS = frozenset(
    wfdb.io.annotation.ann_label_table.loc[
        wfdb.io.annotation.ann_label_table.label_store.map(
            lambda code: code < len(wfdb.io.annotation.is_qrs) and wfdb.io.annotation.is_qrs[code]),
        "symbol"])

# What `ECGRecord.notes` can hold: things a reader tolerates and reports rather than refusing the
# record for, each explained once per ingest (not once per record).
NOTE_KINDS = {
    "checksum": "the header's checksum disagrees with the samples (0 is a common placeholder, e.g. in "
                "PhysioNet/CinC 2017); read as WFDB's own tools read them, with length and truncation "
                "checked",
    "dropped_channels": "non-ECG channels (units not a voltage, e.g. ABP in mmHg) dropped, the ECG channels kept",
    "longer_file": "the signal file holds more samples than the header declares; the declared length read "
                   "(correct the length in the header's record line if the rest belongs to the record)",
}

# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def check_sampling_rate(fs, source, fix: str = "") -> float:
    """`fs` as a float; ECGInputError naming `source` when it is missing, not positive, not finite
    or outside MIN_FS_HZ..MAX_FS_HZ. `fix` is appended to the message (where to correct it)."""
    if fs is None:
        raise ECGInputError(source, f"no sampling rate{fix}")
    fs = float(fs)
    if not (math.isfinite(fs) and MIN_FS_HZ <= fs <= MAX_FS_HZ):
        raise ECGInputError(source, f"absurd sampling rate {fs:g} Hz (expected {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz){fix}")
    return fs


def flat_leads(signal: np.ndarray) -> np.ndarray:
    """[leads] bool: True where a lead of [time, leads] is constant (no signal, e.g. electrode off)."""
    return signal.max(axis=0) == signal.min(axis=0)


def validate_record(record: ECGRecord, *, allow_flat_leads: bool = False) -> ECGRecord:
    """Checks a record is usable as it is and returns it unchanged.

    Raises ECGInputError (naming `record.path` or its id) for: an absurd or missing sampling rate,
    a signal that is not [time, leads] or is empty, a lead count different from the lead names,
    unknown or repeated lead names, non-finite samples, and flat (constant) leads. With
    `allow_flat_leads` (ingest), some flat leads are accepted, to be masked as absent
    (`preprocess_record`); a record whose every lead is flat is still refused.
    """
    source = record.path or f"{record.source}:{record.record_id}"
    check_sampling_rate(record.fs, source)
    signal = record.signal
    if signal.ndim != 2:
        raise ECGInputError(source, f"signal has shape {signal.shape}, expected [time, leads]")
    if signal.shape[0] == 0:
        raise ECGInputError(source, "empty signal (no samples)")
    if signal.shape[1] != len(record.lead_names):
        raise ECGInputError(source, f"{signal.shape[1]} signal columns but {len(record.lead_names)} lead names")
    canonical = [canonical_lead_name(name, source) for name in record.lead_names]
    if len(set(canonical)) != len(canonical):
        raise ECGInputError(source, f"repeated lead names {list(record.lead_names)}")
    finite = np.isfinite(signal)
    if not finite.all():
        bad_leads = [record.lead_names[i] for i in np.flatnonzero(~finite.all(axis=0))]
        raise ECGInputError(source, f"{int((~finite).sum())} NaN/infinite samples in leads {bad_leads}")
    flat = flat_leads(signal)
    if flat.any() and not (allow_flat_leads and not flat.all()):
        raise ECGInputError(source, f"flat (constant) leads {[record.lead_names[i] for i in np.flatnonzero(flat)]}")
    return record


# --------------------------------------------------------------------------------------------
# WFDB
# --------------------------------------------------------------------------------------------

def _ecg_channels(units: Sequence[str], names: Sequence[str], source) -> tuple[np.ndarray, np.ndarray, str]:
    """Which channels are ECG: ([channels] bool keep, [kept] multipliers to mV, a note on the dropped
    ones or '').

    A channel in volts (mV, uV, V; WFDB's default unit is mV) is ECG. Any other unit (mmHg, %, bpm,
    ...) marks another signal recorded beside it, as ICU telemetry routinely does, and is dropped.
    ECGInputError naming `source` when a standard lead name carries such a unit (the header
    contradicts itself) or when no channel is left.
    """
    keys = [(unit or "").strip().lower() for unit in units]
    keep = np.array([key in _UNIT_TO_MV for key in keys], bool)
    for unit, name, kept in zip(units, names, keep):
        if not kept and _is_lead_name(name):
            raise ECGInputError(source, f"unsupported physical unit {unit!r} of signal {name!r} (expected mV, "
                                        "uV or V): fix the units in the header's signal line")
    dropped = ", ".join(f"{name} ({unit})" for unit, name, kept in zip(units, names, keep) if not kept)
    if not keep.any():
        raise ECGInputError(source, f"no ECG channel: signals {dropped} are not in volts (expected mV, uV or V); "
                                    "fix the units in the header's signal lines if they are ECG")
    scale = np.asarray([_UNIT_TO_MV[key] for key, kept in zip(keys, keep) if kept], np.float32)
    return keep, scale, (f"dropped {dropped}" if dropped else "")


def _is_lead_name(name: str) -> bool:
    try:
        canonical_lead_name(name)
    except ECGInputError:
        return False
    return True


# wfdb's own header grammar, with its per-field defaults and types looked up once: wfdb's
# header parser does a pandas .loc per field per lead, which is ~75% of reading a 10 s record.
def _field_casts(specs) -> dict:
    return {field: (int if types is _header.int_types else float if types is _header.float_types else str)
            for field, types in specs["allowed_types"].items()}


_SIGNAL_FIELDS = tuple(_header.SIGNAL_SPECS.index)
_SIGNAL_DEFAULTS = _header.SIGNAL_SPECS["read_default"].to_dict()
_SIGNAL_CASTS = _field_casts(_header.SIGNAL_SPECS)
_RECORD_FIELDS = ("record_name", "n_seg", "n_sig", "fs", "counter_freq", "base_counter", "sig_len",
                  "base_time", "base_date")  # the groups of wfdb's rx_record, in order
_RECORD_CASTS = {**_field_casts(_header.RECORD_SPECS), "base_time": str, "base_date": str}


_FS_FIX = "; fix the third field of the header's first line (record name, signals, fs, length)"


def _parse_record_line(line: str, source) -> dict:
    """Record-line fields as wfdb reads them, base_time / base_date as strings, and the sampling
    rate checked (`check_sampling_rate`).

    The rate is read from the third field itself: wfdb's grammar would take '-100' for a counter
    frequency and '1e7' for 1 Hz, and assume 250 Hz where the field is missing.
    """
    match = _header.rx_record.match(line)
    if match is None:
        raise ECGInputError(source, f"invalid record line in header: {line!r}")
    fields = {field: (_RECORD_CASTS[field](text) if text else None)
              for field, text in zip(_RECORD_FIELDS, match.groups())}
    tokens = line.split()
    fs_text = re.split(r"[/(]", tokens[2], maxsplit=1)[0] if len(tokens) > 2 else ""
    try:
        fs = float(fs_text) if fs_text else None
    except ValueError:
        raise ECGInputError(source, f"sampling rate {tokens[2]!r} is not a number{_FS_FIX}") from None
    fields["fs"] = check_sampling_rate(fs, source, _FS_FIX)
    return fields


def _parse_signal_lines(lines: Sequence[str], source) -> dict[str, list]:
    """Same result as wfdb.io._header._parse_signal_lines, without its per-field pandas lookups."""
    fields = {field: [] for field in _SIGNAL_FIELDS}
    for line in lines:
        match = _header.rx_signal.match(line)
        if match is None:
            raise ECGInputError(source, f"invalid signal line in header: {line!r}")
        values = dict(zip(_SIGNAL_FIELDS, match.groups()))
        for field, text in values.items():
            if text == "":
                value = _SIGNAL_DEFAULTS[field]
                if field == "baseline" and values["adc_zero"] != "":
                    value = int(values["adc_zero"])  # wfdb: a missing baseline defaults to adc_zero
            else:
                value = _SIGNAL_CASTS[field](text)
                if field == "adc_gain" and value == 0:
                    value = 200.0  # WFDB: gain 0 means the default 200
            fields[field].append(value)
    return fields


# Formats that pack samples in groups (212: 2 samples in 3 bytes, 310 / 311: 3 in 4): a writer may
# pad the last group, so a file of N samples can hold up to a group's worth more bytes.
_GROUP_SAMPLES = {"212": 2, "310": 3, "311": 3}


def _compare_file_sizes(record, directory: pathlib.Path, header_path: pathlib.Path) -> str:
    """Checks each signal file's size against the header's length, for the uncompressed formats
    whose bytes per sample wfdb knows (16, 212, 80, 24, 32, ...; not FLAC 508/516/524, nor
    multi-segment records).

    Raises ECGInputError for a file too short for the declared samples (truncated). Returns '' or
    a note naming the files that hold more samples than declared (the header's length is wrong, or
    the file belongs to another record).
    """
    names, formats = getattr(record, "file_name", None), getattr(record, "fmt", None)
    if not names or not formats or record.sig_len is None:
        return ""
    layout = {}  # file -> [samples per frame, format, byte offset]
    for index, (name, fmt) in enumerate(zip(names, formats)):
        if not _signal.BYTES_PER_SAMPLE.get(str(fmt)):  # compressed: the size says nothing
            continue
        entry = layout.setdefault(name, [0, str(fmt), (record.byte_offset or [0] * len(names))[index] or 0])
        entry[0] += (record.samps_per_frame or [1] * len(names))[index] or 1
    notes = []
    for name, (per_frame, fmt, offset) in layout.items():
        file = directory / name
        if not file.is_file():
            continue
        per_sample = _signal.BYTES_PER_SAMPLE[fmt]
        data_bytes = file.stat().st_size - offset
        held = int(data_bytes / per_sample) // per_frame
        declared = f"header declares {record.sig_len} samples per signal but {name} holds {held}"
        if data_bytes < math.ceil(record.sig_len * per_frame * per_sample):
            raise ECGInputError(header_path, f"{declared}: truncated signal file, or the wrong length in the "
                                             "header's record line")
        group = _GROUP_SAMPLES.get(fmt, 1)
        if data_bytes > math.ceil(record.sig_len * per_frame / group) * round(group * per_sample):
            notes.append(declared)
    return "; ".join(notes)


def _read_digital(path: pathlib.Path, header_path: pathlib.Path):
    """(wfdb.Record with header fields, digital samples [time, leads], {base_time, base_date} as text,
    a note on signal files longer than the header says or ''), the samples checked against the
    header's length.

    Single-segment records with one sample per frame (nearly all ECG records) take a fast path
    through wfdb's header grammar and sample reader (`_signal._rd_segment`, which handles every
    format); anything else goes through wfdb.rdrecord.
    """
    header_lines, comment_lines = wfdb.io.header.parse_header_content(
        header_path.read_text(encoding="ascii", errors="ignore"))
    if not header_lines:
        raise ECGInputError(header_path, "empty header (no record line): the file is blank, only comments, "
                                         "or not a WFDB header")
    record_fields = _parse_record_line(header_lines[0], header_path)
    signal_fields = _parse_signal_lines(header_lines[1:], header_path)
    simple = (record_fields["n_seg"] is None and record_fields["sig_len"] is not None
              and all(spf in (None, 1) for spf in signal_fields["samps_per_frame"])
              and not any(signal_fields["skew"]))
    if not simple:
        record = wfdb.rdrecord(str(path), physical=False, return_res=32)
        record.fs = record_fields["fs"]
        start_time = {"base_time": _as_text(record.base_time), "base_date": _as_text(record.base_date)}
        return record, record.d_signal, start_time, _compare_file_sizes(record, path.parent, header_path)
    record = wfdb.Record()
    for field, value in {**signal_fields, **record_fields}.items():
        if field not in ("n_seg", "base_time", "base_date"):
            setattr(record, field, value)
    record.comments = [line.strip(" \t#") for line in comment_lines]
    if record.n_sig != len(record.sig_name or []):
        raise ECGInputError(header_path, f"header declares {record.n_sig} signals but describes "
                                         f"{len(record.sig_name or [])}")
    longer = _compare_file_sizes(record, path.parent, header_path)
    channels = list(range(record.n_sig))
    per_lead = _signal._rd_segment(
        file_name=record.file_name, dir_name=str(path.parent), pn_dir=None, fmt=record.fmt,
        n_sig=record.n_sig, sig_len=record.sig_len, byte_offset=record.byte_offset,
        samps_per_frame=[1] * record.n_sig, skew=[None] * record.n_sig, init_value=record.init_value,
        sampfrom=0, sampto=record.sig_len, channels=channels, ignore_skew=False, return_res=32)
    lengths = {len(lead) for lead in per_lead}
    if lengths != {record.sig_len}:
        raise ECGInputError(header_path, f"header says {record.sig_len} samples, signal files hold "
                                         f"{sorted(lengths)}: truncated or mismatched signal file")
    return record, np.stack(per_lead, axis=1), {"base_time": record_fields["base_time"],
                                                "base_date": record_fields["base_date"]}, longer


def _as_text(value) -> str | None:
    return None if value is None else str(value)


def read_wfdb_recording(path, *, source: str = "wfdb") -> ECGRecord:
    """Reads one WFDB record (path with or without .hea) as it is, into an ECGRecord in mV.

    Samples are read as digital values, checked against the header's length (a truncated signal
    file is refused), then converted with the header's gain and baseline (invalid-sample codes
    become NaN) and scaled to mV from the header's units. What WFDB's own tools also read is read
    and noted in `ECGRecord.notes` (see NOTE_KINDS), not logged: a checksum that disagrees with the
    samples, a signal file longer than declared (the declared length is read), channels whose
    units are not a voltage (dropped). Any length and lead names are accepted and NaN is kept: the
    record-level checks are `validate_record`'s (see `read_wfdb`).

    Returns an ECGRecord with signal [time, ECG channels] float32 mV, record_id and patient_id the
    record name, metadata {'comments', 'base_time', 'base_date'}; ECGInputError naming the header
    otherwise.
    """
    path = pathlib.Path(path)
    header_path = path.with_suffix(".hea") if path.suffix != ".hea" else path
    path = header_path.with_suffix("")
    if not header_path.is_file():
        raise ECGInputError(header_path, "missing WFDB header file")
    try:
        record, digital, start_time, longer = _read_digital(path, header_path)
    except ECGInputError:
        raise
    except Exception as error:  # wfdb raises many types; all mean "this file is unreadable".
        raise ECGInputError(header_path, f"cannot read WFDB record ({type(error).__name__}: {error})") from None
    if record.n_sig == 0 or digital is None or digital.size == 0:
        raise ECGInputError(header_path, "record has no samples")
    record.d_signal = digital
    notes = {}
    if record.checksum is not None and all(c is not None for c in record.checksum):
        wrong = [f"{name}: header {int(want)}, samples {got}" for name, want, got
                 in zip(record.sig_name, record.checksum, record.calc_checksum()) if int(want) % 65536 != got]
        if wrong:
            notes["checksum"] = f"checksum disagrees ({'; '.join(wrong)})"
    if longer:
        notes["longer_file"] = f"{longer}; read the declared {record.sig_len}"
    keep, scale, dropped = _ecg_channels(record.units or [""] * record.n_sig, record.sig_name, header_path)
    if dropped:
        notes["dropped_channels"] = dropped
    signal = record.dac(return_res=32)[:, keep] * scale
    return ECGRecord(
        signal=np.ascontiguousarray(signal, np.float32),
        fs=float(record.fs),
        lead_names=tuple(name for name, kept in zip(record.sig_name, keep) if kept),
        record_id=record.record_name,
        patient_id=record.record_name,
        source=source,
        metadata={"comments": list(record.comments or []), **start_time},
        path=str(header_path),
        notes=notes,
    )


def read_wfdb(path, patient_id: str | None = None, *, source: str = "wfdb",
              metadata: dict | None = None, allow_flat_leads: bool = False) -> ECGRecord:
    """Reads one WFDB record (path without extension) into an ECGRecord in mV, for ingest.

    `read_wfdb_recording`, then `validate_record` (known lead names, no NaN, no flat leads unless
    `allow_flat_leads`). `patient_id` defaults to the record name; `metadata` is added to the
    header's comments and start time.
    """
    record = read_wfdb_recording(path, source=source)
    if patient_id is not None:
        record.patient_id = str(patient_id)
    record.metadata.update(metadata or {})
    return validate_record(record, allow_flat_leads=allow_flat_leads)


# --------------------------------------------------------------------------------------------
# Annotations of long recordings
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Annotations:
    """Reference annotations of one long recording.

    Attributes:
      fs: sampling rate in Hz of the sample positions.
      num_samples: length of the annotated record in samples.
      beat_samples: [beats] int64 sample positions of beat (QRS) annotations.
      beat_symbols: [beats] str symbols (N, V, A, L, ...), wfdb's beat codes only.
      rhythms: (start_sample, end_sample, label) intervals, end exclusive, labels like 'AFIB', 'N';
        the last interval ends at `num_samples`.
    """

    fs: float
    num_samples: int
    beat_samples: np.ndarray
    beat_symbols: np.ndarray
    rhythms: list[tuple[int, int, str]]


def read_annotations(path, extension: str = "atr") -> Annotations:
    """Reads WFDB annotations (path without extension) of a record with its header next to it."""
    path = pathlib.Path(path)
    annotation_path = path.with_suffix(f".{extension}")
    if not annotation_path.is_file():
        raise ECGInputError(annotation_path, "missing annotation file")
    try:
        header = wfdb.rdheader(str(path))
        annotation = wfdb.rdann(str(path), extension)
    except Exception as error:
        raise ECGInputError(annotation_path, f"cannot read annotations ({type(error).__name__}: {error})") from None
    fs = float(annotation.fs or header.fs)
    samples = np.asarray(annotation.sample, np.int64)
    symbols = np.asarray(annotation.symbol, dtype=object)
    is_beat = np.fromiter((s in _BEAT_SYMBOLS for s in symbols), bool, count=len(symbols))

    aux = annotation.aux_note or [""] * len(symbols)
    changes = [(int(s), note.replace("\x00", "").strip().lstrip("(").strip())
               for s, sym, note in zip(samples, symbols, aux) if sym == "+" and note.strip("\x00 ")]
    num_samples = int(header.sig_len)
    rhythms = [(start, end, label) for (start, label), end in
               zip(changes, [s for s, _ in changes[1:]] + [num_samples]) if end > start]
    return Annotations(fs=fs, num_samples=num_samples, beat_samples=samples[is_beat],
                       beat_symbols=symbols[is_beat].astype(str), rhythms=rhythms)


def rhythm_at(annotations: Annotations, samples) -> np.ndarray:
    """The rhythm label at each sample position ([n] ints -> [n] str; '' before the first label)."""
    samples = np.asarray(samples, np.int64)
    if not annotations.rhythms:
        return np.full(samples.shape, "", dtype=object)
    starts = np.asarray([start for start, _, _ in annotations.rhythms], np.int64)
    ends = np.asarray([end for _, end, _ in annotations.rhythms], np.int64)
    labels = np.asarray([label for _, _, label in annotations.rhythms] + [""], dtype=object)
    index = np.searchsorted(starts, samples, side="right") - 1
    inside = (index >= 0) & (samples < ends[np.clip(index, 0, None)])
    return labels[np.where(inside, index, -1)]
