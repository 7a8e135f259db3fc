"""Rhythm-labelled single-lead training records for the AF head, beside PTB-XL's 10 s records.

PTB-XL teaches the AF head on 10 s of twelve leads; what fools it on telemetry is rhythm it saw
little of: the other rhythms of a hand-held single lead (CinC 2017's 'O' class: ectopy, flutter,
blocks) and long recordings with runs of bigeminy, flutter and nodal rhythm (MIT-BIH). Both become
RecordSets (training_records) of fixed `piece_s` pieces of one lead, so a CropSampler draws crops
from them exactly as from PTB-XL, each labelled from the beats inside it:

- CinC 2017: A -> AF, O -> CONFOUNDER (code OTHER_RHYTHM), N -> OTHER; '~' (too noisy to label)
  is left out. Beats by QRS detection, as for PTB-XL.
- MIT-BIH-style records with a reference (.atr): a piece is AF when '(AFIB' covers all of it,
  AF-negative when no AF touches it (CONFOUNDER when its rhythm or beats are ectopic, flutter,
  nodal, ...: codes mapped to PTB-XL's SCP statements), left out when AF covers part of it. Beats
  are the reference's.
"""
from __future__ import annotations

import logging

import numpy as np

from ecgjax.annotate.reference import rhythm_fraction, span_contents
from ecgjax.annotate.run import map_leads
from ecgjax.annotate.training_records import AF, CONFOUNDER, OTHER, RecordSet
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import canonical_lead_name
from ecgjax.data.preprocess import resample
from ecgjax.data.readers import read_annotations, read_wfdb_recording
from ecgjax.data.sources.cinc2017 import cinc2017_items, read_cinc2017_record
from ecgjax.signal.heart_rate import detect_qrs
from ecgjax.signal.windows import grid_starts

log = logging.getLogger(__name__)

BEAT_FS = 250.0  # beats are kept at this rate (XQRS agrees with PTB-XL's rate statements here)
CINC_GROUPS = {"A": AF, "O": CONFOUNDER, "N": OTHER}  # '~': no rhythm label, left out
CINC_OTHER_CODE = "OTHER_RHYTHM"  # the code of CinC's 'O' pieces (training_records.CONFOUNDER_CODES)
# MIT-BIH rhythm labels and beat symbols -> the SCP statement of the same rhythm (CONFOUNDER_CODES),
# so rare ones are drawn as often as in PTB-XL (sampling._confounder_weights).
RHYTHM_CODES = {"B": "BIGU", "T": "TRIGU", "AFL": "AFLT", "SVTA": "SVTAC", "VT": "PVC", "IVR": "PVC",
                "VFL": "PVC", "NOD": "SVARR", "AB": "PAC", "SBR": "SARRH", "BII": "SVARR", "PREX": "SVARR",
                "P": "PACE", "PM": "PACE"}
BEAT_CODES = {"V": "PVC", "E": "PVC", "F": "PVC", "A": "PAC", "a": "PAC", "J": "PAC", "S": "PAC",
              "j": "SVARR", "e": "SVARR", "/": "PACE", "f": "PACE"}
SINUS = {"N", ""}


def _piece_beats(beats_at_beat_fs: np.ndarray, start_s: float, piece_s: float) -> np.ndarray:
    """The beats inside one piece, in samples at BEAT_FS from the piece's start."""
    first, stop = int(round(start_s * BEAT_FS)), int(round((start_s + piece_s) * BEAT_FS))
    inside = beats_at_beat_fs[(beats_at_beat_fs >= first) & (beats_at_beat_fs < stop)]
    return (inside - first).astype(np.int64)


def _record_set(signals, lead: str, fs: float, beats, groups, codes, ids) -> RecordSet:
    if not signals:
        raise ValueError("no pieces: every record was shorter than one piece or left out")
    groups = np.asarray(groups, np.int64)
    return RecordSet(np.stack(signals)[:, :, None].astype(np.float32), (canonical_lead_name(lead),), float(fs),
                     beats, BEAT_FS, (groups == AF).astype(np.float32), groups, codes, np.asarray(ids))


def load_cinc_records(root: str, record_ids=None, *, fs: float, piece_s: float = 10.0) -> RecordSet:
    """CinC 2017 records (all, or those in `record_ids`) as pieces [P, piece_s * fs, 1] of lead I at `fs`.

    Records shorter than one piece, '~' records and unreadable ones (logged) are left out;
    `ecg_ids` holds each piece's record number (A00001 -> 1).
    """
    wanted = None if record_ids is None else set(record_ids)
    piece = int(round(piece_s * fs))
    signals, beats, groups, codes, ids = [], [], [], [], []
    for item in cinc2017_items(root):
        if item["label"] not in CINC_GROUPS or (wanted is not None and item["record_id"] not in wanted):
            continue
        try:
            record = read_cinc2017_record(item["path"], item["record_id"], item["label"])
        except ECGInputError as error:
            log.info("left out of the CinC pieces: %s", error)
            continue
        lead = np.nan_to_num(record.signal[:, 0].astype(np.float32))
        at_fs = resample(lead[:, None], record.fs, fs)[:, 0]
        record_beats = detect_qrs(resample(lead[:, None], record.fs, BEAT_FS)[:, 0], BEAT_FS)
        for start in grid_starts(at_fs.size, piece, piece, include_tail=False):
            signals.append(at_fs[start:start + piece])
            beats.append(_piece_beats(record_beats, start / fs, piece_s))
            groups.append(CINC_GROUPS[item["label"]])
            codes.append({CINC_OTHER_CODE: 100.0} if item["label"] == "O" else {})
            ids.append(int(item["record_id"].lstrip("A")))
    return _record_set(signals, "I", fs, beats, groups, codes, ids)


def piece_codes(rhythms: set, symbols: set) -> dict:
    """SCP-style codes of an AF-free piece from its rhythm labels and beat symbols ({}: sinus, normal beats)."""
    found = {RHYTHM_CODES.get(r, "SVARR") for r in rhythms - SINUS}
    found |= {BEAT_CODES[s] for s in symbols if s in BEAT_CODES}
    return {code: 100.0 for code in sorted(found)}


def load_annotated_records(paths, *, fs: float, piece_s: float = 10.0, lead: str = "II",
                           af_label: str = "AFIB") -> RecordSet:
    """Long WFDB records with reference annotations (.atr: MIT-BIH) as pieces [P, piece_s * fs, 1] of
    `lead` (MLII reads as II; the first channel where the record lacks it) at `fs`.

    `ecg_ids` holds each piece's index in `paths`, so a split by record is a split of the pieces.
    """
    piece = int(round(piece_s * fs))
    signals, beats, groups, codes, ids = [], [], [], [], []
    for index, path in enumerate(paths):
        record = read_wfdb_recording(path)
        reference = read_annotations(path)
        try:
            column = int(map_leads(record.lead_names, [lead], source=str(path))[0])
        except ECGInputError:
            column = 0
            log.warning("%s: no lead %s, training on %s", path, lead, record.lead_names[column])
        at_fs = resample(np.nan_to_num(record.signal[:, [column]]), record.fs, fs)[:, 0]
        record_beats = np.round(reference.beat_samples * (BEAT_FS / reference.fs)).astype(np.int64)
        for start in grid_starts(at_fs.size, piece, piece, include_tail=False):
            first, stop = int(round(start / fs * reference.fs)), int(round((start + piece) / fs * reference.fs))
            af = rhythm_fraction(reference.rhythms, (af_label,), np.array([first]), stop - first)[0]
            if 0 < af < 1:
                continue  # part AF: neither a clean positive nor a clean negative
            piece_code = {} if af else piece_codes(*span_contents(reference, first, stop))
            signals.append(at_fs[start:start + piece])
            beats.append(_piece_beats(record_beats, start / fs, piece_s))
            groups.append(AF if af else (CONFOUNDER if piece_code else OTHER))
            codes.append(piece_code)
            ids.append(index)
    return _record_set(signals, lead, fs, beats, groups, codes, ids)
