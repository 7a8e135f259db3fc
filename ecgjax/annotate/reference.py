"""Reference tracks from expert annotations (MIT-BIH .atr), to evaluate annotation and QRS detection.

MIT-BIH marks each beat with a symbol at its R peak and each rhythm change with a '+' annotation
whose aux_note names the rhythm that starts there ('(AFIB', '(N', '(B', ...); ecgjax.data.readers
.read_annotations parses both.
"""
from __future__ import annotations

import os
import time

import numpy as np
from wfdb import processing

from ecgjax.data.readers import read_annotations, read_wfdb_recording
from ecgjax.signal.heart_rate import detect_qrs, heart_rate_from_beats
from ecgjax.signal.windows import window_length, window_starts

AF_LABELS = ("AFIB",)


def rhythm_fraction(rhythms, labels, starts: np.ndarray, length: int) -> np.ndarray:
    """[num_windows] fraction of each window covered by any rhythm in `labels`."""
    starts = np.asarray(starts, np.int64)
    covered = np.zeros(starts.shape, np.int64)
    for begin, end, label in rhythms:
        if label in labels:
            covered += np.clip(np.minimum(end, starts + length) - np.maximum(begin, starts), 0, None)
    return covered / float(length)


def reference_af_label(rhythms, starts: np.ndarray, length: int, *, min_fraction: float = 0.5,
                       labels=AF_LABELS) -> np.ndarray:
    """[num_windows] int 1 where AF covers more than `min_fraction` of the window.

    min_fraction=0.5: AF is the majority rhythm; min_fraction=0: any AF in the window.
    """
    return (rhythm_fraction(rhythms, labels, starts, length) > min_fraction).astype(np.int64)


# Reference rhythm groups of a window, to see which non-AF rhythms an AF track confuses with AF.
RHYTHM_GROUPS = ("AF", "sinus", "ventricular ectopy", "flutter, SVT, nodal", "other")
_VENTRICULAR_RHYTHMS, _VENTRICULAR_BEATS = {"B", "T", "VT", "IVR", "VFL"}, {"V", "E", "F"}
_SUPRAVENTRICULAR = {"AFL", "SVTA", "NOD", "AB"}


def span_contents(ref, start: int, stop: int) -> tuple[set, set]:
    """(rhythm labels touching samples [start, stop), beat symbols inside them) of readers.Annotations."""
    labels = {label for begin, end, label in ref.rhythms if end > start and begin < stop}
    inside = (ref.beat_samples >= start) & (ref.beat_samples < stop)
    return labels, set(ref.beat_symbols[inside])


def rhythm_groups(ref, starts: np.ndarray, length: int, af: np.ndarray) -> np.ndarray:
    """[num_windows] one of RHYTHM_GROUPS per window: 'AF' where `af`; else 'flutter, SVT, nodal'
    when any of AFL / SVTA / NOD / AB touches the window, else 'ventricular ectopy' when bigeminy,
    trigeminy, VT or a ventricular beat is in it, else 'sinus' (rhythm N only), else 'other'.

    ref: readers.Annotations of the record; starts, length: the windows in its samples.
    """
    groups = []
    for start, is_af in zip(np.asarray(starts, np.int64), af):
        labels, symbols = span_contents(ref, start, start + length)
        if is_af:
            groups.append("AF")
        elif labels & _SUPRAVENTRICULAR:
            groups.append("flutter, SVT, nodal")
        elif labels & _VENTRICULAR_RHYTHMS or symbols & _VENTRICULAR_BEATS:
            groups.append("ventricular ectopy")
        elif labels <= {"N"}:
            groups.append("sinus")
        else:
            groups.append("other")
    return np.asarray(groups, dtype=object)


def reference_af_spans(record_path: str, *, labels=AF_LABELS) -> list[tuple[float, float]] | None:
    """(start_s, end_s) of every reference AF episode in the record's .atr file, or None when the
    record has no .atr beside it."""
    if not os.path.isfile(f"{record_path}.atr"):
        return None
    ref = read_annotations(record_path)
    return [(begin / ref.fs, end / ref.fs) for begin, end, label in ref.rhythms if label in labels]


def reference_tracks(record_path: str, window_s: float, stride_s: float, *, min_af_fraction: float = 0.5,
                     af_labels=AF_LABELS) -> dict[str, np.ndarray]:
    """Per-window reference tracks on the same window grid as `annotate_recording`.

    Returns dict of [num_windows]: 'start_s', 'end_s', 'af' (0/1), 'af_fraction', 'hr_bpm' (from the
    reference beats, NaN with fewer than 2 beats), 'rhythm_group' (rhythm_groups).
    """
    ref = read_annotations(record_path)
    length = window_length(ref.fs, window_s)
    starts = window_starts(ref.num_samples, ref.fs, window_s, stride_s)
    fraction = rhythm_fraction(ref.rhythms, af_labels, starts, length)
    af = reference_af_label(ref.rhythms, starts, length, min_fraction=min_af_fraction, labels=af_labels)
    return {
        "start_s": starts / ref.fs,
        "end_s": (starts + length) / ref.fs,
        "af": af,
        "af_fraction": fraction,
        "hr_bpm": heart_rate_from_beats(ref.beat_samples, ref.fs, starts, length),
        "rhythm_group": rhythm_groups(ref, starts, length, af),
    }


def qrs_detection_scores(record_path: str, *, lead: int = 0, tolerance_s: float = 0.15,
                         window_s: float = 10.0, method: str = "xqrs") -> dict[str, float]:
    """Scores `detect_qrs` against the reference beats of one record.

    A detection within `tolerance_s` of a reference beat is a match (wfdb.processing.compare_annotations).
    Returns sensitivity, PPV, the mean absolute error of the heart rate per non-overlapping
    `window_s` window (detected vs reference beats; windows where either is unknown are skipped),
    beat counts and the detector's run time.
    """
    ref = read_annotations(record_path)
    signal = read_wfdb_recording(record_path).signal[:, lead]
    began = time.perf_counter()
    detected = detect_qrs(signal, ref.fs, method=method)
    seconds = time.perf_counter() - began
    comparison = processing.compare_annotations(ref.beat_samples, detected, int(round(tolerance_s * ref.fs)))
    length = window_length(ref.fs, window_s)
    starts = window_starts(ref.num_samples, ref.fs, window_s, window_s, include_tail=False)
    hr_detected = heart_rate_from_beats(detected, ref.fs, starts, length)
    hr_reference = heart_rate_from_beats(ref.beat_samples, ref.fs, starts, length)
    both = np.isfinite(hr_detected) & np.isfinite(hr_reference)
    return {
        "record": os.path.basename(record_path),
        "sensitivity": float(comparison.sensitivity),
        "ppv": float(comparison.positive_predictivity),
        "hr_mae_bpm": float(np.mean(np.abs(hr_detected[both] - hr_reference[both]))) if both.any() else float("nan"),
        "num_reference": int(ref.beat_samples.size),
        "num_detected": int(detected.size),
        "detector_s": seconds,
        "signal_s": ref.num_samples / ref.fs,
    }
