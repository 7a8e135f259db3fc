"""Windowed inference over long recordings: any `predict_fn`, any lead set, any sampling rate.

`annotate_recording` judges window quality on the recording as it came (NaN gaps and clipping
are only visible there), then resamples to the model's rate, maps the leads onto the model's
leads, cuts the same windows in time, runs `predict_fn` in fixed-size batches (the last one
padded, so a jitted function compiles once) and writes NaN where a window was invalid.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Callable

import numpy as np

from ecgjax.annotate import outputs, reference
from ecgjax.annotate.windows import any_lead, lead_quality
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import canonical_lead_name
from ecgjax.data.preprocess import bandpass, resample
from ecgjax.data.readers import check_sampling_rate, read_wfdb_recording
from ecgjax.downstream.batches import batched_apply
from ecgjax.signal.heart_rate import detect_qrs, heart_rate_from_beats
from ecgjax.signal.windows import extract_windows, window_length, window_starts

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], dict]


def filter_signal(signal: np.ndarray, fs: float, band_hz) -> np.ndarray:
    """A model's input filter on [time, leads]: band-pass (low, high) Hz, or unchanged when band_hz is None.
    Applied to the whole model-rate recording before windowing (no edge effects per window)."""
    return np.asarray(signal, np.float32) if band_hz is None else bandpass(signal, fs, band_hz[0], band_hz[1])


def _canonical_or_raw(name: str) -> str:
    try:
        return canonical_lead_name(name)
    except ECGInputError:
        return name.strip()


def map_leads(lead_names, model_leads, *, lead=None, source: str = "<recording>") -> np.ndarray:
    """Which recording column feeds each model lead: [num_model_leads] int, -1 where absent.

    Names are compared in canonical spelling (MLII is II). A single-lead model can be applied
    to any lead by naming it (or its column index) in `lead`. Raises ECGInputError when no model
    lead is present, since every window would be zeros.
    """
    names = [_canonical_or_raw(n) for n in lead_names]
    if lead is not None:
        if len(model_leads) != 1:
            raise ValueError(f"`lead` selects the input of a single-lead model; this model has {len(model_leads)} leads")
        if isinstance(lead, (int, np.integer)):
            if not -len(names) <= lead < len(names):
                raise ECGInputError(source, f"lead index {lead} out of range for {len(names)} leads")
            return np.array([lead % len(names)])
        if _canonical_or_raw(lead) not in names:
            raise ECGInputError(source, f"lead {lead!r} not in recording leads {list(lead_names)}")
        return np.array([names.index(_canonical_or_raw(lead))])
    columns = np.array([names.index(m) if m in names else -1 for m in map(_canonical_or_raw, model_leads)])
    if (columns < 0).all():
        raise ECGInputError(source, f"none of the model's leads {list(model_leads)} is in the recording "
                                    f"{list(lead_names)}; pass lead= to choose one for a single-lead model")
    return columns


def annotate_recording(signal: np.ndarray, fs: float, lead_names, predict_fn: PredictFn, *, model_fs: float,
                       model_leads, window_s: float, stride_s: float, batch_size: int = 64, lead=None,
                       qrs_heart_rate: bool = True, qrs_fs: float | None = None, band_hz=None,
                       source: str = "<recording>") -> dict[str, np.ndarray]:
    """Per-window tracks of a model's outputs over a recording of any length.

    Args:
      signal: [time, leads] mV at `fs`, NaN where samples are missing.
      lead_names: one per column of `signal`.
      predict_fn: windows [batch_size, window_s * model_fs, len(model_leads)] float32 ->
        dict of arrays [batch_size, ...]; absent leads arrive as zeros.
      model_fs, model_leads: the sampling rate and lead names the model was trained on.
      window_s, stride_s: window length and hop in seconds; a last window is aligned to the end.
      lead: for a single-lead model, the recording lead (name or column) to feed it.
      qrs_heart_rate: add 'qrs_hr_bpm', the heart rate from QRS detection on the first model lead
        (a reference track that needs no model).
      qrs_fs: run the QRS detector on the lead resampled to this rate (None: the recording's own).
        XQRS time scales with the rate: at 150 Hz it is ~3x faster than at 360 Hz, with the same
        window heart rates on most MIT-BIH records (see benchmarks/RESULTS.md, '## Annotation').
      band_hz: (low, high) band-pass the model was trained with, applied after resampling; None: none.
    Returns:
      dict of [num_windows, ...] arrays: 'start_s', 'end_s', 'valid', 'gap', 'flat', 'saturated',
      every predict_fn output as float64 (NaN on invalid windows), and optionally 'qrs_hr_bpm'.
    """
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2 or signal.shape[1] != len(lead_names):
        raise ECGInputError(source, f"signal shape {signal.shape} does not match {len(lead_names)} lead names")
    fs = check_sampling_rate(fs, source)
    columns = map_leads(lead_names, model_leads, lead=lead, source=source)
    present = columns >= 0
    mapped = np.zeros((signal.shape[0], columns.size), np.float32)
    mapped[:, present] = signal[:, columns[present]]

    length = window_length(fs, window_s)
    starts = window_starts(signal.shape[0], fs, window_s, stride_s)
    if starts.size == 0:
        raise ECGInputError(source, f"recording of {signal.shape[0] / fs:.1f} s is shorter than one {window_s} s window")
    per_lead = _batched_quality(mapped[:, present], starts, length, fs)
    # A lead flat in every window is off for the whole recording: fed as an absent lead (zeros, as
    # ingest masks a flat lead) and not judged, so it cannot void the windows of the leads that work.
    off = np.flatnonzero(present)[per_lead["flat"].all(axis=0)]
    if 0 < off.size < present.sum():
        log.warning("%s: %s flat throughout: read as absent leads (zeros), windows judged on the other %d",
                    source, ", ".join(str(model_leads[c]) for c in off), present.sum() - off.size)
        per_lead = {key: value[:, ~np.isin(np.flatnonzero(present), off)] for key, value in per_lead.items()}
        mapped[:, off], present[off] = 0.0, False
    quality = any_lead(per_lead)

    # Missing samples become 0 mV before filtering, so NaN cannot smear into valid neighbours.
    model_signal = filter_signal(resample(np.nan_to_num(mapped, nan=0.0), fs, model_fs), model_fs, band_hz)
    model_length = window_length(model_fs, window_s)
    if model_signal.shape[0] < model_length:
        model_signal = np.pad(model_signal, ((0, model_length - model_signal.shape[0]), (0, 0)))
    model_starts = np.clip(np.round(starts * (model_fs / fs)).astype(np.int64), 0, model_signal.shape[0] - model_length)
    def cut(first, stop):  # windows [stop - first, model_length, leads], cut one batch at a time
        return extract_windows(model_signal, model_starts[first:stop], model_length)

    predictions = batched_apply(predict_fn, cut, batch_size, num=model_starts.size)

    tracks = {"start_s": starts / fs, "end_s": (starts + length) / fs, **quality}
    valid = quality["valid"]
    for key, values in predictions.items():
        if key in tracks:
            raise ValueError(f"predict_fn output {key!r} clashes with a track name")
        values = values.astype(np.float64)
        values[~valid] = np.nan
        tracks[key] = values
    if qrs_heart_rate:
        lead_signal = np.nan_to_num(mapped[:, np.flatnonzero(present)[:1]], nan=0.0)
        if qrs_fs is None or qrs_fs == fs:
            beats = detect_qrs(lead_signal[:, 0], fs)
        else:  # detect at qrs_fs, then put the beats back on the recording's sample grid
            beats = np.round(detect_qrs(resample(lead_signal, fs, qrs_fs)[:, 0], qrs_fs) * (fs / qrs_fs)).astype(np.int64)
        tracks["qrs_hr_bpm"] = np.where(valid, heart_rate_from_beats(beats, fs, starts, length), np.nan)
    return tracks


def _batched_quality(signal, starts, length, fs, windows_per_chunk: int = 256) -> dict[str, np.ndarray]:
    """lead_quality of signal [time, leads] over chunks of windows ([num_windows, leads] flags), so
    hour-long records need no window copy in memory."""
    parts: dict[str, list] = {}
    for first in range(0, starts.size, windows_per_chunk):
        flags = lead_quality(extract_windows(signal, starts[first:first + windows_per_chunk], length), fs)
        for key, value in flags.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(value) for key, value in parts.items()}


def record_paths(path: str) -> list[str]:
    """WFDB records (paths without extension) at `path`: one record, or a folder (RECORDS file or *.hea)."""
    if os.path.isdir(path):
        listing = os.path.join(path, "RECORDS")
        if os.path.isfile(listing):
            with open(listing) as names:
                return [os.path.join(path, line.strip()) for line in names if line.strip()]
        return sorted(p[:-4] for p in glob.glob(os.path.join(path, "*.hea")))
    stem = path[:-4] if path.endswith(".hea") else path
    if not os.path.isfile(stem + ".hea"):
        raise ECGInputError(path, "no WFDB header (.hea) here, and not a folder")
    return [stem]


def _reference_af(record_path: str):
    """Reference AF episodes from the record's .atr for the plot; None (with a warning) when unusable."""
    try:
        return reference.reference_af_spans(record_path)
    except ECGInputError as error:
        log.warning("plotting without the reference rhythm: %s", error)
        return None


def annotate_path(path: str, output_dir: str, predict_fn: PredictFn, *, model_fs: float, model_leads,
                  window_s: float, stride_s: float, batch_size: int = 64, lead=None, af_key: str | None = "af_prob",
                  af_threshold: float = 0.5, qrs_heart_rate: bool = True, qrs_fs: float | None = None,
                  band_hz=None, plot: bool = True, class_names: dict | None = None) -> dict[str, str]:
    """Annotates one WFDB record or every record of a folder; writes per record into `output_dir`:
    <name>.csv (tracks), <name>.ecgjax (WFDB annotations, `wfdb.rdann(output_dir/<name>, 'ecgjax')`)
    and <name>.png (plot, with the reference AF episodes of a <name>.atr beside the record, and
    `class_names` {track: names of its columns} in the legends). The WFDB file's '(AFIB' episodes
    are the windows with tracks[af_key] >= af_threshold.

    Records are read as ingest reads them (`read_wfdb_recording`: sampling rate, units to mV and
    length checked, non-ECG channels such as ABP in mmHg dropped, what it noted logged), keeping
    any length, lead set and missing samples (NaN). Bad records are logged and skipped. Returns
    {record name: 'ok' or the reason it was skipped}.
    """
    status = {}
    for record_path in record_paths(path):
        name = os.path.basename(record_path)
        try:
            record = read_wfdb_recording(record_path)
            for note in record.notes.values():  # e.g. non-ECG channels dropped, a checksum that disagrees
                log.warning("%s: %s", record.path, note)
            tracks = annotate_recording(record.signal, record.fs, record.lead_names, predict_fn,
                                        model_fs=model_fs, model_leads=model_leads, window_s=window_s,
                                        stride_s=stride_s, batch_size=batch_size, lead=lead,
                                        qrs_heart_rate=qrs_heart_rate, qrs_fs=qrs_fs, band_hz=band_hz,
                                        source=record.path)
            os.makedirs(output_dir, exist_ok=True)  # made for the first good record: none, no folder
            outputs.write_csv(tracks, os.path.join(output_dir, f"{name}.csv"))
            outputs.write_wfdb_annotations(tracks, name, output_dir, record.fs, af_key=af_key,
                                           threshold=af_threshold)
            if plot:
                outputs.plot_tracks(tracks, record.signal, record.fs, os.path.join(output_dir, f"{name}.png"),
                                    lead_names=record.lead_names, title=name, class_names=class_names,
                                    af_key=af_key, reference_af=_reference_af(record_path))
            status[name] = "ok"
            log.info("%s: %d windows, %d invalid", name, tracks["valid"].size, int((~tracks["valid"]).sum()))
        except ECGInputError as error:
            log.warning("skipping %s", error)
            status[name] = str(error)
    return status
