"""Tests of ecgjax.annotate: windows, quality flags, QRS heart-rate labels, reference tracks,
windowed inference and its CSV / WFDB / PNG outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import wfdb

from ecgjax.annotate import heart_rate, outputs, reference, run, windows
from ecgjax.data.errors import ECGInputError
from ecgjax.data.preprocess import resample
from ecgjax.data.readers import read_annotations
from ecgjax.signal import heart_rate as signal_heart_rate, windows as signal_windows

FS = 360.0


def synthetic_ecg(bpm=None, *, duration_s=60.0, fs=FS, leads=2, rr_s=None, seed=0):
    """ECG-like spike train: narrow QRS (1.2 mV) + T wave + a little noise. Returns (signal [T, leads], beat times)."""
    rng = np.random.default_rng(seed)
    if rr_s is None:
        rr_s = np.full(int(duration_s * bpm / 60) + 1, 60.0 / bpm)
    beats = 0.3 + np.cumsum(np.concatenate([[0.0], rr_s]))
    beats = beats[beats < duration_s - 0.3]
    t = np.arange(int(duration_s * fs)) / fs
    x = np.zeros_like(t)
    for b in beats:
        near = np.abs(t - b) < 0.6
        x[near] += 1.2 * np.exp(-0.5 * ((t[near] - b) / 0.01) ** 2) + 0.25 * np.exp(-0.5 * ((t[near] - b - 0.22) / 0.04) ** 2)
    signal = np.stack([x * (0.8 + 0.2 * k) for k in range(leads)], axis=1)
    return (signal + rng.normal(0, 0.02, signal.shape)).astype(np.float32), beats


def rr_predict_fn(batch):
    """Deterministic stand-in for a model: heart rate and an 'AF probability' from RR irregularity."""
    af, hr = [], []
    for window in np.asarray(batch):
        lead = window[:, np.argmax(window.std(axis=0))]
        peaks, _ = scipy.signal.find_peaks(lead, height=0.5 * lead.max() if lead.max() > 0 else np.inf, distance=50)
        rr = np.diff(peaks).astype(float)
        af.append(np.clip(5 * rr.std() / rr.mean(), 0, 1) if rr.size > 1 else 0.0)
        hr.append(60 * 250 / rr.mean() if rr.size else 0.0)       # windows arrive at the model's 250 Hz
    return {"af_prob": np.array(af), "heart_rate": np.array(hr)}


# --- windows -----------------------------------------------------------------------------------

def test_window_starts_counts_positions_and_tail():
    np.testing.assert_array_equal(signal_windows.window_starts(1000, 100, 2.0, 1.0), np.arange(0, 801, 100))
    np.testing.assert_array_equal(signal_windows.window_starts(1050, 100, 2.0, 1.0), [*range(0, 801, 100), 850])
    np.testing.assert_array_equal(signal_windows.window_starts(1050, 100, 2.0, 1.0, include_tail=False),
                                  np.arange(0, 801, 100))
    assert signal_windows.window_starts(199, 100, 2.0, 1.0).size == 0
    assert signal_windows.window_starts(200, 100, 2.0, 5.0).tolist() == [0]


def test_extract_windows_matches_slicing():
    signal = np.arange(300, dtype=np.float32).reshape(150, 2)
    starts = np.array([0, 7, 130])
    got = signal_windows.extract_windows(signal, starts, 20)
    assert got.shape == (3, 20, 2)
    for window, start in zip(got, starts):
        np.testing.assert_array_equal(window, signal[start:start + 20])


def test_window_quality_flags_each_kind_of_bad_window():
    signal, _ = synthetic_ecg(70, duration_s=50)
    length = int(5 * FS)
    bad = signal.copy()
    bad[int(5.5 * FS):int(6 * FS), 0] = np.nan                   # window 1: missing samples
    bad[int(15 * FS):int(20 * FS), 1] = 0.3                       # window 3: flat lead
    # Window 5: a 2 mV motion artefact drives the amplifier into its ±1 mV rails.
    section = bad[int(25 * FS):int(27 * FS), 0] + 2 * np.hanning(int(2 * FS))
    bad[int(25 * FS):int(27 * FS), 0] = np.clip(section, -1.0, 1.0)
    bad[int(36 * FS), 1] = 80.0                                   # window 7: beyond ±60 mV
    bad[int(41 * FS):int(41.5 * FS), :] = 0.0                     # window 8: dropped packets (zeros)
    flags = windows.window_quality(signal_windows.extract_windows(bad, np.arange(10) * length, length), FS)
    assert np.flatnonzero(flags["gap"]).tolist() == [1, 8]
    assert np.flatnonzero(flags["flat"]).tolist() == [3]
    assert np.flatnonzero(flags["saturated"]).tolist() == [5, 7]
    assert np.flatnonzero(~flags["valid"]).tolist() == [1, 3, 5, 7, 8]
    # Ignoring lead 1 (e.g. absent, zero-filled) ignores its flat stretch and its spike.
    only_first = windows.window_quality(signal_windows.extract_windows(bad, np.arange(10) * length, length), FS,
                                        lead_mask=[True, False])
    assert np.flatnonzero(~only_first["valid"]).tolist() == [1, 5, 8]


def test_window_quality_finds_adc_saturation_in_mitdb_103(mitdb_dir):
    record = wfdb.rdrecord(str(mitdb_dir / "103"), sampfrom=int(1170 * FS), sampto=int(1200 * FS))
    flags = windows.window_quality(signal_windows.extract_windows(record.p_signal, [0, 3600, 7200], 3600), FS)
    # V2 sits at the 11-bit converter's limits (-5.12 / +5.115 mV) in 117-118 s and 119-120 s (x 10 s).
    assert flags["saturated"].tolist() == [True, False, True]


# --- heart rate --------------------------------------------------------------------------------

def test_heart_rate_from_beats_and_classes():
    beats = np.arange(0, 1000, 100)                               # 60 bpm at 100 Hz
    bpm = signal_heart_rate.heart_rate_from_beats(beats, 100, np.array([0, 250, 950]), 200)
    assert bpm.shape == (3,) and bpm[0] == pytest.approx(60.0) and bpm[1] == pytest.approx(60.0)
    assert np.isnan(bpm[2])                                       # one beat only
    assert np.isnan(signal_heart_rate.heart_rate_from_beats([], 100, np.array([0]), 200)).all()
    # Uneven RR: mean of instantaneous rates (60 and 120 bpm), not 60 / mean RR.
    assert signal_heart_rate.heart_rate_from_beats([0, 100, 150], 100, np.array([0]), 200)[0] == pytest.approx(90.0)
    with_margin = signal_heart_rate.heart_rate_from_beats(beats, 100, np.array([250]), 100, margin=100)
    assert with_margin[0] == pytest.approx(60.0)
    classes = signal_heart_rate.heart_rate_class(np.array([45.0, 59.9, 60.0, 100.0, 100.1, np.nan, 75.0, 400.0]),
                                          np.array([0, 0, 0, 0, 0, 0, 1, 0], bool))
    assert classes.tolist() == [0, 0, 1, 1, 2, 3, 3, 3]
    assert signal_heart_rate.heart_rate_class(72.0) == 1


@pytest.mark.parametrize("bpm, expected_class", [(50, 0), (75, 1), (120, 2)])
def test_auto_label_heart_rate_on_known_rates(bpm, expected_class):
    signal, _ = synthetic_ecg(bpm, duration_s=40)
    labels = heart_rate.auto_label_heart_rate(signal, FS, window_s=10, stride_s=5, lead=0)
    assert labels["starts"].tolist() == [int(s * FS) for s in (0, 5, 10, 15, 20, 25, 30)]
    np.testing.assert_allclose(labels["bpm"], bpm, atol=1.5)
    assert (labels["hr_class"] == expected_class).all()


def test_auto_label_marks_flat_and_missing_windows_as_noise():
    signal, _ = synthetic_ecg(75, duration_s=40)
    signal[int(10 * FS):int(20 * FS), 0] = 0.1
    signal[int(30 * FS):int(31 * FS), 0] = np.nan
    labels = heart_rate.auto_label_heart_rate(signal, FS, window_s=10, stride_s=10, lead=0)
    assert labels["hr_class"].tolist() == [1, 3, 1, 3]
    assert np.isnan(labels["bpm"][[1, 3]]).all()


def test_qrs_detector_on_mitdb_100(mitdb_dir):
    scores = reference.qrs_detection_scores(str(mitdb_dir / "100"))
    assert scores["sensitivity"] > 0.99 and scores["ppv"] > 0.99
    assert scores["hr_mae_bpm"] < 1.0


def test_qrs_detector_reasonable_on_af_record(mitdb_dir):
    scores = reference.qrs_detection_scores(str(mitdb_dir / "201"))
    assert scores["sensitivity"] > 0.9 and scores["ppv"] > 0.95


# --- reference tracks --------------------------------------------------------------------------

def test_reference_af_label_majority_or_any():
    rhythms = [(0, 150, "N"), (150, 400, "AFIB"), (400, 500, "N")]
    starts = np.array([0, 100, 200, 300, 400])
    np.testing.assert_allclose(reference.rhythm_fraction(rhythms, ("AFIB",), starts, 100), [0, 0.5, 1, 1, 0])
    assert reference.reference_af_label(rhythms, starts, 100).tolist() == [0, 0, 1, 1, 0]
    assert reference.reference_af_label(rhythms, starts, 100, min_fraction=0.0).tolist() == [0, 1, 1, 1, 0]


def test_reference_tracks_of_mitdb_201(mitdb_dir):
    ref = read_annotations(str(mitdb_dir / "201"))
    assert ("AFIB" in {label for _, _, label in ref.rhythms}) and ref.fs == 360
    tracks = reference.reference_tracks(str(mitdb_dir / "201"), 10, 10)
    assert tracks["af"][0] == 1 and 0 < tracks["af"].mean() < 1   # starts in AF, has sinus stretches
    assert np.nanmedian(tracks["hr_bpm"]) == pytest.approx(70, abs=30)


# --- windowed inference ------------------------------------------------------------------------

def test_resampling_360_to_250_keeps_beat_timing():
    signal, beats = synthetic_ecg(75, duration_s=20)
    resampled = resample(signal, 360, 250)
    assert resampled.shape == (5000, 2)
    peaks, _ = scipy.signal.find_peaks(resampled[:, 0], height=0.6)
    np.testing.assert_allclose(peaks / 250.0, beats, atol=1 / 250)


def test_lead_mapping_and_single_lead_selection():
    assert run.map_leads(["MLII", "V5"], ["I", "II", "V5"]).tolist() == [-1, 0, 1]
    assert run.map_leads(["MLII", "V5"], ["II"], lead="V5").tolist() == [1]
    assert run.map_leads(["MLII", "V5"], ["II"], lead=-1).tolist() == [1]
    with pytest.raises(ECGInputError, match="rec7"):
        run.map_leads(["MLII", "V5"], ["V1", "V2"], source="rec7")
    signal, _ = synthetic_ecg(75, duration_s=20)
    signal[:, 1] *= -3
    seen = []

    def capture(batch):
        seen.append(batch.copy())
        return {"mean": batch.mean(axis=(1, 2))}

    run.annotate_recording(signal, FS, ["MLII", "V5"], capture, model_fs=250, model_leads=["I", "II", "V5"],
                           window_s=5, stride_s=5, batch_size=8, qrs_heart_rate=False)
    assert seen[0].shape == (8, 1250, 3)
    assert (seen[0][:, :, 0] == 0).all()                          # lead I absent: zeros
    assert seen[0][:4, :, 2].min() < -2                           # V5 (scaled by -3) in the third slot
    seen.clear()
    run.annotate_recording(signal, FS, ["MLII", "V5"], capture, model_fs=250, model_leads=["II"],
                           window_s=5, stride_s=5, batch_size=8, lead="V5", qrs_heart_rate=False)
    assert seen[0].shape == (8, 1250, 1) and seen[0][:4].min() < -2


def test_annotate_recording_fixed_batches_and_masks_bad_windows():
    signal, _ = synthetic_ecg(80, duration_s=62)
    signal[int(12 * FS):int(13 * FS), 0] = np.nan                 # window 2 (10–20 s)
    signal[int(30 * FS):int(40 * FS), 1] = 0.0                    # window 3: flat lead, zeros
    signal[int(45 * FS), 0] = 99.0                                # window 4: beyond ±60 mV
    shapes = []

    def predict(batch):
        shapes.append(batch.shape)
        assert np.isfinite(batch).all()
        return {**rr_predict_fn(batch), "probs": np.tile([0.2, 0.8], (batch.shape[0], 1))}

    tracks = run.annotate_recording(signal, FS, ["MLII", "V1"], predict, model_fs=250, model_leads=["II", "V1"],
                                    window_s=10, stride_s=10, batch_size=4)
    assert set(shapes) == {(4, 2500, 2)} and len(shapes) == 2      # 7 windows (6 + tail) in 2 padded batches
    np.testing.assert_allclose(tracks["start_s"], [0, 10, 20, 30, 40, 50, 52])
    np.testing.assert_allclose(tracks["end_s"], [10, 20, 30, 40, 50, 60, 62])
    assert np.flatnonzero(~tracks["valid"]).tolist() == [1, 3, 4]
    for key in ("af_prob", "heart_rate", "probs", "qrs_hr_bpm"):
        assert np.isnan(tracks[key][[1, 3, 4]]).all() and np.isfinite(tracks[key][[0, 2, 5, 6]]).all()
    np.testing.assert_allclose(tracks["qrs_hr_bpm"][[0, 2, 5, 6]], 80, atol=1.5)
    np.testing.assert_allclose(tracks["heart_rate"][[0, 2, 5, 6]], 80, atol=3)
    assert tracks["probs"].shape == (7, 2)
    with pytest.raises(ECGInputError, match="shorter than one"):
        run.annotate_recording(signal[:100], FS, ["MLII", "V1"], predict, model_fs=250, model_leads=["II"],
                               window_s=10, stride_s=10)


def test_rr_irregularity_separates_regular_from_irregular():
    regular, _ = synthetic_ecg(75, duration_s=30)
    rr = np.random.default_rng(1).uniform(0.45, 1.1, 60)
    irregular, _ = synthetic_ecg(rr_s=rr, duration_s=30)
    kwargs = dict(model_fs=250, model_leads=["II"], window_s=10, stride_s=10, batch_size=4, qrs_heart_rate=False)
    steady = run.annotate_recording(regular, FS, ["II", "V1"], rr_predict_fn, **kwargs)["af_prob"]
    chaotic = run.annotate_recording(irregular, FS, ["II", "V1"], rr_predict_fn, **kwargs)["af_prob"]
    assert steady.max() < 0.2 < 0.8 < chaotic.min()


# --- outputs -----------------------------------------------------------------------------------

def _example_tracks():
    return {
        "start_s": np.array([0.0, 10, 20, 30, 40]), "end_s": np.array([10.0, 20, 30, 40, 50]),
        "valid": np.array([True, True, False, True, True]), "gap": np.array([False, False, True, False, False]),
        "flat": np.zeros(5, bool), "saturated": np.zeros(5, bool),
        "af_prob": np.array([0.1, 0.9, np.nan, 0.95, 0.2]), "heart_rate": np.array([72.0, 131, np.nan, 118, 70]),
        "probs": np.array([[0.3, 0.7]] * 5),
    }


def test_csv_round_trip(tmp_path):
    tracks = _example_tracks()
    frame = pd.read_csv(outputs.write_csv(tracks, str(tmp_path / "r.csv")))
    assert list(frame.columns) == ["start_s", "end_s", "valid", "gap", "flat", "saturated",
                                   "af_prob", "heart_rate", "probs_0", "probs_1"]
    np.testing.assert_allclose(frame["af_prob"], tracks["af_prob"])  # NaN round-trips as NaN
    assert frame["valid"].tolist() == tracks["valid"].tolist()


def test_wfdb_annotation_round_trip(tmp_path):
    path = outputs.write_wfdb_annotations(_example_tracks(), "rec", str(tmp_path), fs=100.0)
    assert path.endswith("rec.ecgjax")
    ann = wfdb.rdann(str(tmp_path / "rec"), "ecgjax")
    assert ann.fs == 100.0
    changes = [(s, a) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note) if sym == "+"]
    assert changes == [(0, "(N"), (1000, "(AFIB"), (2000, "(NOISE"), (3000, "(AFIB"), (4000, "(N")]
    notes = [(s, a) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note) if sym == '"']
    assert notes[1] == (1500, "af_prob=0.9 heart_rate=131") and notes[2] == (2500, "invalid")
    assert len(notes) == 5


def test_annotate_path_writes_outputs_and_skips_bad_records(tmp_path):
    data = tmp_path / "records"
    data.mkdir()
    signal, _ = synthetic_ecg(70, duration_s=45)
    wfdb.wrsamp("good", fs=FS, units=["mV", "mV"], sig_name=["MLII", "V1"], p_signal=signal.astype(np.float64),
                fmt=["16", "16"], write_dir=str(data))
    (data / "broken.hea").write_text("broken 2 360 1000\nbroken.dat 16 200 16 0 0 0 0 MLII\n")
    status = run.annotate_path(str(data), str(tmp_path / "out"), rr_predict_fn, model_fs=250, model_leads=["II"],
                               window_s=10, stride_s=5)
    assert status["good"] == "ok" and "broken" in status["broken"]
    png = tmp_path / "out" / "good.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    frame = pd.read_csv(tmp_path / "out" / "good.csv")
    assert len(frame) == 8 and frame["valid"].all()
    assert wfdb.rdann(str(tmp_path / "out" / "good"), "ecgjax").aux_note[0] == "(N"


def peak_fn(batch):
    """A stand-in model whose output is each window's largest |amplitude| (mV), to check units."""
    return {"peak_mv": np.abs(np.asarray(batch)).max(axis=(1, 2))}


def _write_record(directory, name, signal, *, units="mV", scale=1.0):
    wfdb.wrsamp(name, fs=FS, units=[units] * 2, sig_name=["MLII", "V1"], p_signal=signal.astype(np.float64) * scale,
                fmt=["16", "16"], write_dir=str(directory))
    return directory / f"{name}.hea"


def _edit_record_line(header, edit):
    """Applies `edit` to the fields of a header's record line (name, signals, fs, length)."""
    first, *rest = header.read_text().splitlines()
    header.write_text("\n".join([" ".join(edit(first.split())), *rest]) + "\n")


def test_annotate_path_reads_records_like_ingest_and_skips_bad_ones(tmp_path, caplog):
    """The ingest reader's checks, per record: absurd sampling rates and an empty header are named
    and skipped, the others annotated; uV are read as mV; a header shorter than its (checksum-less)
    signal file is read to its declared length with a warning."""
    data = tmp_path / "records"
    data.mkdir()
    signal, _ = synthetic_ecg(70, duration_s=30)
    _write_record(data, "in_mv", signal)
    _write_record(data, "in_uv", signal, units="uV", scale=1000.0)
    _edit_record_line(_write_record(data, "fs_negative", signal), lambda f: [*f[:2], "-100", *f[3:]])
    _edit_record_line(_write_record(data, "fs_huge", signal), lambda f: [*f[:2], "1e7", *f[3:]])
    _write_record(data, "empty", signal).write_text("")
    short = _write_record(data, "short_header", signal)
    short.write_text("\n".join([line if i == 0 else " ".join(line.split()[:6] + line.split()[8:])
                                for i, line in enumerate(short.read_text().splitlines())]) + "\n")  # no checksums
    _edit_record_line(short, lambda f: [*f[:3], str(int(20 * FS))])

    with caplog.at_level("WARNING"):
        status = run.annotate_path(str(data), str(tmp_path / "out"), peak_fn, model_fs=250, model_leads=["II"],
                                   window_s=5, stride_s=5, qrs_heart_rate=False, plot=False)
    assert status["in_mv"] == status["in_uv"] == status["short_header"] == "ok"
    assert "fs_negative.hea: absurd sampling rate -100 Hz" in status["fs_negative"]
    assert "fs_huge.hea: absurd sampling rate 1e+07 Hz" in status["fs_huge"]
    assert "empty.hea: empty header" in status["empty"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 3 and all(status[name] in " ".join(skipped) for name in ("fs_negative", "fs_huge", "empty"))

    peaks = {name: pd.read_csv(tmp_path / "out" / f"{name}.csv")["peak_mv"] for name in ("in_mv", "in_uv")}
    assert len(peaks["in_mv"]) == 6 and peaks["in_mv"].between(0.9, 2.0).all()  # ~1.2 mV R peaks
    np.testing.assert_allclose(peaks["in_uv"], peaks["in_mv"], rtol=1e-3)
    assert len(pd.read_csv(tmp_path / "out" / "short_header.csv")) == 4           # the declared 20 s
    (warning,) = [r.getMessage() for r in caplog.records if "holds" in r.getMessage()]
    assert "short_header.hea" in warning and f"declares {int(20 * FS)} samples" in warning
    assert f"short_header.dat holds {int(30 * FS)}" in warning


# --- plot ----------------------------------------------------------------------------------------

def test_time_labels_are_minutes_under_an_hour_and_hours_above():
    assert [outputs.format_time(t, 1805) for t in (0, 75, 599.6, 1805)] == ["0:00", "1:15", "10:00", "30:05"]
    assert [outputs.format_time(t, 3600) for t in (0, 1800, 5400, 90060)] == ["0:00", "0:30", "1:30", "25:01"]


def test_plot_legends_name_classes_and_shade_the_reference_af():
    tracks = {"start_s": np.arange(6) * 300.0, "end_s": np.arange(6) * 300.0 + 300, "valid": np.ones(6, bool),
              "af_prob": np.linspace(0, 1, 6), "hr_class_prob": np.full((6, 4), 0.25)}
    names = signal_heart_rate.HEART_RATE_CLASSES
    figure = outputs.tracks_figure(tracks, np.zeros((1800 * 10, 1)), 10.0, class_names={"hr_class_prob": names},
                                   af_key="af_prob", reference_af=[(300.0, 900.0), (1200.0, 1500.0)])
    try:
        af_axis, class_axis, signal_axis = figure.axes
        assert [t.get_text() for t in class_axis.get_legend().get_texts()] == list(names)
        assert [t.get_text() for t in af_axis.get_legend().get_texts()] == ["reference AF"]
        assert len(af_axis.patches) == 2 and not class_axis.patches               # shaded under the AF track only
        low, high = signal_axis.get_xlim()
        labels = [signal_axis.xaxis.get_major_formatter()(tick, 0) for tick in signal_axis.get_xticks()
                  if low <= tick <= high]
        assert labels[:3] == ["0:00", "5:00", "10:00"] and labels[-1] == "30:00"
        assert signal_axis.get_xlabel() == "time (m:ss)"
    finally:
        figure.clear()
    figure = outputs.tracks_figure(tracks, np.zeros((1800 * 10, 1)), 10.0, af_key="af_prob", reference_af=[])
    try:
        assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["reference AF: none"]
        default = [f"hr_class_prob_{i}" for i in range(4)]  # no class names given
        assert [t.get_text() for t in figure.axes[1].get_legend().get_texts()] == default
    finally:
        figure.clear()
    with pytest.raises(ValueError, match="4 columns but 2 class names"):
        outputs.legend_labels("hr_class_prob", 4, ("a", "b"))
