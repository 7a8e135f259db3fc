"""Signal preprocessing as in the papers: mV, canonical 12 leads, 250 Hz, ±60 mV rule, band-pass.

Everything is vectorised numpy over [time, leads] arrays; it runs on the ingest hot path.
"""
from __future__ import annotations

import fractions
import functools

import numpy as np
import scipy.signal

from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import to_canonical
from ecgjax.data.readers import flat_leads, validate_record
from ecgjax.data.record import ECGRecord
from ecgjax.signal.limits import OUT_OF_RANGE_MV


def resample(signal: np.ndarray, fs_in: float, fs_out: float, max_denominator: int = 1000) -> np.ndarray:
    """Anti-aliased polyphase resampling of [time, channels] from `fs_in` to `fs_out` Hz.

    The ratio fs_out / fs_in is approximated by a fraction up/down with down <= `max_denominator`
    (exact for the usual rates: 100->250 is 5/2, 360->250 is 25/36, 400->250 is 5/8).
    scipy.signal.resample_poly low-pass filters at the lower Nyquist frequency, so content above
    the new Nyquist is suppressed rather than aliased. padtype='line' avoids pulling the ends of a
    record with a baseline offset toward zero. Returns float32 [ceil(time * up / down), channels].
    """
    signal = np.asarray(signal, np.float32)
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in} -> {fs_out}")
    ratio = fractions.Fraction(fs_out / fs_in).limit_denominator(max_denominator)
    if ratio == 1:
        return signal.copy()
    up, down = ratio.numerator, ratio.denominator
    return scipy.signal.resample_poly(signal, up, down, axis=0, window=_polyphase_filter(up, down),
                                      padtype="line").astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's own default anti-aliasing FIR (Kaiser, beta 5), designed once per ratio
    rather than once per record (the design was ~40% of preprocessing time)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = scipy.signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
    taps.setflags(write=False)  # shared by every call; resample_poly copies it before scaling by `up`
    return taps


@functools.lru_cache(maxsize=64)
def _butter_sos(fs: float, low: float | None, high: float | None, order: int) -> np.ndarray:
    nyquist = fs / 2
    high = high if high is not None and high < 0.99 * nyquist else None  # no low-pass above Nyquist
    if low and high:
        return scipy.signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    if low:
        return scipy.signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    if high:
        return scipy.signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
    raise ValueError(f"band ({low}, {high}) Hz leaves nothing to filter at fs={fs} Hz")


def bandpass(signal: np.ndarray, fs: float, low: float | None = 0.5, high: float | None = 40.0,
             order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass of [time, channels] (scipy butter + sosfiltfilt), float32.

    `low=None` gives a low-pass, `high=None` (or high at/above Nyquist) a high-pass.
    """
    sos = _butter_sos(float(fs), low, high, order)
    signal = np.asarray(signal, np.float32)
    # Edge transients of a high-pass last about 1/low seconds; an even (mirror) extension that long
    # keeps them out of the record (sosfiltfilt's default 27-sample odd pad leaves ~0.2 of a
    # 100 Hz tone at 1 s from the ends of a 0.5-40 Hz filtered record).
    padlen = int(round(fs / low)) if low else 3 * (2 * len(sos) + 1)
    padlen = min(padlen, signal.shape[0] - 1)
    return scipy.signal.sosfiltfilt(sos, signal, axis=0, padtype="even",
                                    padlen=padlen).astype(np.float32, copy=False)


_bandpass_filter = bandpass  # preprocess_record's `bandpass` argument shadows the function name


def out_of_range_mask(signal: np.ndarray, limit_mv: float = OUT_OF_RANGE_MV) -> np.ndarray:
    """[time, leads] bool: True where |sample| exceeds `limit_mv` (or is not finite)."""
    return ~(np.abs(signal) <= limit_mv)


def clip_out_of_range(signal: np.ndarray, limit_mv: float = OUT_OF_RANGE_MV, *, mode: str = "zero",
                      max_fraction: float = 0.5, source: str = "<signal>"):
    """Applies the ±`limit_mv` rule to [time, leads] in mV.

    Args:
      mode: 'flag' leaves the signal as it is; 'zero' sets out-of-range samples (per lead) to 0;
        'remove' drops every time step where any lead is out of range (so the result is no longer
        continuous: use 'flag' and the returned mask where continuity matters).
      max_fraction: records with more than this fraction of time steps out of range in any lead are
        rejected with ECGInputError naming `source`.
    Returns:
      (signal, bad [time] bool) where `bad` marks time steps with any out-of-range lead (of the input).
    """
    per_lead = out_of_range_mask(signal, limit_mv)
    bad = per_lead.any(axis=1)
    fraction = float(bad.mean()) if bad.size else 0.0
    if fraction > max_fraction:
        raise ECGInputError(source, f"{fraction:.0%} of samples beyond ±{limit_mv:g} mV")
    if mode == "flag" or not bad.any():
        return signal, bad
    if mode == "zero":
        return np.where(per_lead, np.float32(0), signal).astype(np.float32, copy=False), bad
    if mode == "remove":
        return signal[~bad], bad
    raise ValueError(f"mode must be 'flag', 'zero' or 'remove', not {mode!r}")


def preprocess_record(record: ECGRecord, target_fs: float = 250.0, bandpass: tuple[float, float] | None = None,
                      *, limit_mv: float = OUT_OF_RANGE_MV, out_of_range: str = "zero",
                      max_out_of_range_fraction: float = 0.5, validate: bool = True,
                      allow_flat_leads: bool = False):
    """Turns a record into the model's input form (paper 003: 250 Hz, mV; telemetry paper: ±60 mV).

    Steps: `validate_record` -> ±`limit_mv` rule on the native signal (`clip_out_of_range`,
    'zero' or 'flag'; records mostly out of range are rejected) -> optional zero-phase band-pass
    `bandpass=(low_hz, high_hz)` -> anti-aliased resampling to `target_fs` -> canonical 12-lead order.

    With `allow_flat_leads`, a constant lead (electrode off) is treated as absent: zeroed and
    masked out, rather than refusing the record.

    Returns:
      (signal [time at target_fs, 12] float32 mV, lead_mask [12] bool: True where the lead is present).
    Raises ECGInputError naming the record's file for anything unusable.
    """
    if validate:
        validate_record(record, allow_flat_leads=allow_flat_leads)
    source = record.path or f"{record.source}:{record.record_id}"
    if out_of_range not in ("zero", "flag"):
        raise ValueError("preprocess_record keeps time continuous: out_of_range must be 'zero' or 'flag'")
    signal, _ = clip_out_of_range(record.signal, limit_mv, mode=out_of_range,
                                  max_fraction=max_out_of_range_fraction, source=source)
    if bandpass is not None:
        signal = _bandpass_filter(signal, record.fs, *bandpass)
    flat = flat_leads(record.signal) if allow_flat_leads else None
    signal = resample(signal, record.fs, target_fs)
    if flat is not None and flat.any():
        signal = np.where(flat[None, :], 0.0, signal).astype(np.float32)
        present = [name for name, is_flat in zip(record.lead_names, flat) if not is_flat]
        signal, mask = to_canonical(signal[:, ~flat], present, source)
        return signal, mask
    return to_canonical(signal, record.lead_names, source)
