"""Writes per-window annotation tracks: CSV table, WFDB annotation file, PNG plot.

A tracks dict maps names to per-window arrays, first axis [num_windows]: 'start_s', 'end_s',
quality flags ('gap', 'flat', 'saturated', 'valid') and the model's outputs, scalars [N] or
vectors [N, K] (e.g. class probabilities); outputs are NaN on invalid windows.
"""
from __future__ import annotations

import os

import matplotlib.patches
import matplotlib.ticker
import numpy as np
import pandas as pd
import wfdb
from matplotlib.figure import Figure  # drawn off-screen: no backend chosen, no display needed

TIME_KEYS = ("start_s", "end_s")
QUALITY_KEYS = ("valid", "gap", "flat", "saturated")
# WFDB annotation codes: '+' rhythm change (aux_note names the new rhythm), '"' comment.
RHYTHM_CHANGE, NOTE = "+", '"'


def output_keys(tracks: dict) -> list[str]:
    """Names of the model-output tracks (everything but times and quality flags)."""
    return [k for k in tracks if k not in TIME_KEYS and k not in QUALITY_KEYS]


def _columns(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    values = np.asarray(values)
    if values.ndim == 1:
        return {name: values}
    flat = values.reshape(values.shape[0], -1)
    return {f"{name}_{i}": flat[:, i] for i in range(flat.shape[1])}


def tracks_to_frame(tracks: dict) -> pd.DataFrame:
    """One row per window; vector outputs [N, K] become columns name_0 .. name_{K-1}."""
    columns = {}
    for key in (*TIME_KEYS, *QUALITY_KEYS, *output_keys(tracks)):
        if key in tracks:
            columns.update(_columns(key, tracks[key]))
    return pd.DataFrame(columns)


def write_csv(tracks: dict, path: str) -> str:
    """Writes the tracks as CSV (NaN as empty cells) and returns the path."""
    tracks_to_frame(tracks).to_csv(path, index=False, float_format="%.6g")
    return path


def _note_text(tracks: dict, index: int, keys) -> str:
    if not tracks["valid"][index]:
        return "invalid"
    parts = []
    for key in keys:
        for name, column in _columns(key, tracks[key]).items():
            parts.append(f"{name}={column[index]:.3g}")
    return " ".join(parts)


def write_wfdb_annotations(tracks: dict, record_name: str, output_dir: str, fs: float, *,
                           af_key: str | None = "af_prob", threshold: float = 0.5,
                           extension: str = "ecgjax", notes: bool = True) -> str:
    """Writes the tracks as a WFDB annotation file that wfdb.rdann and PhysioNet tools read.

    Two kinds of annotation, as in MIT-BIH:
      '+' rhythm changes where the window state changes, aux_note '(AFIB' (tracks[af_key] >=
        threshold), '(N' (below) or '(NOISE' (invalid window); placed where the window's own
        stride-long share of the recording begins (the window centre minus half a stride).
      '"' one note per window at its centre, aux_note 'af_prob=0.93 heart_rate=72' with every
        scalar output (or 'invalid').
    Returns the path of the annotation file (<output_dir>/<record_name>.<extension>).
    """
    start = np.round(np.asarray(tracks["start_s"]) * fs).astype(np.int64)
    end = np.round(np.asarray(tracks["end_s"]) * fs).astype(np.int64)
    valid = np.asarray(tracks["valid"], bool)
    centre = (start + end) // 2
    samples, symbols, aux = [], [], []
    if af_key is not None and af_key in tracks and start.size:
        stride = np.diff(start, prepend=start[0] - (end[0] - start[0]))
        boundary = np.maximum(centre - stride // 2, 0)
        boundary[0] = 0
        state = np.where(~valid, "(NOISE", np.where(np.asarray(tracks[af_key]) >= threshold, "(AFIB", "(N"))
        changed = np.concatenate([[True], state[1:] != state[:-1]])
        samples += boundary[changed].tolist()
        symbols += [RHYTHM_CHANGE] * int(changed.sum())
        aux += state[changed].tolist()
    if notes:
        keys = [k for k in output_keys(tracks) if np.asarray(tracks[k]).ndim == 1]
        samples += centre.tolist()
        symbols += [NOTE] * centre.size
        aux += [_note_text(tracks, i, keys) for i in range(centre.size)]
    if not samples:
        raise ValueError("nothing to write: no windows")
    order = np.argsort(np.asarray(samples), kind="stable")
    os.makedirs(output_dir, exist_ok=True)
    wfdb.wrann(record_name, extension, np.asarray(samples, np.int64)[order],
               symbol=[symbols[i] for i in order], aux_note=[aux[i] for i in order],
               fs=fs, write_dir=output_dir)
    return os.path.join(output_dir, f"{record_name}.{extension}")


def _envelope(signal_1d: np.ndarray, fs: float, max_points: int):
    """Min/max per bin, so QRS spikes survive downsampling a long record for plotting."""
    bin_size = max(1, int(np.ceil(signal_1d.size / max(max_points // 2, 1))))
    usable = signal_1d[: signal_1d.size // bin_size * bin_size].reshape(-1, bin_size)
    times = (np.arange(usable.shape[0]) * bin_size + bin_size / 2) / fs
    with np.errstate(all="ignore"):
        low, high = np.nanmin(usable, axis=1), np.nanmax(usable, axis=1)
    return np.repeat(times, 2), np.stack([low, high], axis=1).ravel()


def _invalid_spans(tracks: dict):
    """Merged (start_s, end_s) of consecutive invalid windows, for shading."""
    spans = []
    for start, end, valid in zip(tracks["start_s"], tracks["end_s"], tracks["valid"]):
        if valid:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return spans


# Tick spacings for the time axis, in seconds: round numbers of seconds, minutes and hours.
_TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def format_time(seconds: float, duration_s: float) -> str:
    """A time-axis label: m:ss for a record under an hour, h:mm for an hour or more."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(float(seconds))
    if duration_s < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{sign}{minutes}:{secs:02d}"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{sign}{hours}:{minutes:02d}"


def time_axis(axis, duration_s: float, max_ticks: int = 12) -> None:
    """Ticks at round times over [0, duration_s], labelled by `format_time`."""
    step = next((s for s in _TIME_STEPS_S if duration_s / s <= max_ticks), _TIME_STEPS_S[-1])
    axis.set_xlim(0, duration_s)
    axis.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(step))
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: format_time(x, duration_s)))
    axis.set_xlabel(f"time ({'m:ss' if duration_s < 3600 else 'h:mm'})")


def legend_labels(key: str, num_columns: int, class_names=None) -> list[str]:
    """Legend texts of an output track of `num_columns` columns: its class names where given
    (e.g. the heart-rate classes), else key_0 .. key_{K-1}."""
    if class_names is None:
        return [f"{key}_{i}" for i in range(num_columns)]
    if len(class_names) != num_columns:
        raise ValueError(f"track {key!r} has {num_columns} columns but {len(class_names)} class names "
                         f"{list(class_names)}")
    return [str(name) for name in class_names]


def _shade_reference_af(axis, spans) -> None:
    """Reference AF episodes under the AF track, with a legend entry (or 'none' when it has none)."""
    for start, end in spans:
        axis.axvspan(start, end, color="tab:orange", alpha=0.3, lw=0, zorder=0)
    handles, labels = axis.get_legend_handles_labels()
    handles.append(matplotlib.patches.Patch(color="tab:orange", alpha=0.3))
    labels.append("reference AF" if spans else "reference AF: none")
    axis.legend(handles, labels, loc="upper right", fontsize=7)


def tracks_figure(tracks: dict, signal: np.ndarray, fs: float, *, lead_names=None, title: str = "",
                  max_points: int = 20000, signal_leads: int = 1, class_names=None, af_key: str | None = None,
                  reference_af=None):
    """A matplotlib Figure of every output track over time, invalid windows shaded, the signal below.

    Args:
      signal: [time, leads] mV at `fs`, drawn as a min/max envelope of at most `max_points`.
      signal_leads: how many leads to draw under the tracks.
      class_names: {track key: names of its columns} for vector outputs [N, K] (legend texts).
      af_key: the AF probability track, under which `reference_af` is shaded.
      reference_af: (start_s, end_s) reference AF episodes (e.g. from the record's .atr), or None
        when there is no reference.
    Returns the figure, one axis per output track then one per signal lead.
    """
    keys = output_keys(tracks)
    signal = np.asarray(signal)
    leads = min(signal_leads, signal.shape[1])
    figure = Figure(figsize=(14, 1.8 * (len(keys) + leads) + 0.6))
    axes = figure.subplots(len(keys) + leads, 1, sharex=True, squeeze=False)
    axes = axes[:, 0]
    centre = (np.asarray(tracks["start_s"]) + np.asarray(tracks["end_s"])) / 2
    spans = _invalid_spans(tracks)
    for axis, key in zip(axes, keys):
        values = np.asarray(tracks[key], np.float64).reshape(centre.size, -1)
        labels = legend_labels(key, values.shape[1], (class_names or {}).get(key)) if values.shape[1] > 1 else [None]
        for column, label in enumerate(labels):
            axis.plot(centre, values[:, column], lw=1, label=label)
        if values.shape[1] > 1:
            axis.legend(loc="upper right", fontsize=7, ncol=min(values.shape[1], 6))
        if key == af_key and reference_af is not None:
            _shade_reference_af(axis, reference_af)
        axis.set_ylabel(key, fontsize=8)
    for offset in range(leads):
        axis = axes[len(keys) + offset]
        times, values = _envelope(signal[:, offset], fs, max_points)
        axis.plot(times, values, lw=0.4, color="k")
        axis.set_ylabel(f"{lead_names[offset] if lead_names else f'lead {offset}'} (mV)", fontsize=8)
    for axis in axes:
        for start, end in spans:
            axis.axvspan(start, end, color="tab:red", alpha=0.15, lw=0)
    time_axis(axes[-1], max(signal.shape[0] / fs, float(np.max(tracks["end_s"], initial=0.0))))
    axes[0].set_title(title + ("  (shaded red: invalid windows)" if spans else ""), fontsize=9)
    figure.tight_layout()
    return figure


def plot_tracks(tracks: dict, signal: np.ndarray, fs: float, path: str, **options) -> str:
    """Writes `tracks_figure(tracks, signal, fs, **options)` as a PNG at `path`; returns the path."""
    tracks_figure(tracks, signal, fs, **options).savefig(path, dpi=100)
    return path
