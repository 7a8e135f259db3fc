"""End-to-end tests of experiments/annotate.py (in-process, through its absl flags) and of the
auto-labelled heart-rate heads it serves: a tiny model trained for a few steps, saved, loaded by
the CLI and slid over real and generated records."""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pandas as pd
import pytest
import wfdb

import entry_points
from xla_settings import unoptimized
from ecgjax import loader
from ecgjax.annotate import apply, outputs, reference, train_heads
from ecgjax.eval.classifier import task_model
from ecgjax.eval.tasks import Task
from ecgjax.signal.heart_rate import BRADYCARDIA, HEART_RATE_CLASSES, NOISE, NORMAL, TACHYCARDIA

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL_FS, WINDOW_S = 100.0, 5.0
TINY_ENCODER = {"name": "resnet18", "chan_start": 4, "in_leads": 1, "num_samples": int(MODEL_FS * WINDOW_S)}
# What is checked is flow, files, validity flags, ranges and what QRS detection (numpy) gives, not the
# model's numbers: XLA's optimisations off (tests/xla_settings.py) halve the ResNet's compilations.
pytestmark = pytest.mark.usefixtures("unoptimized_xla")


def beat_train(bpm: float, seconds: float, fs: float, seed: int = 0) -> np.ndarray:
    """[time] mV: narrow 1.2 mV QRS spikes at `bpm` with a T wave and a little noise."""
    t = np.arange(int(seconds * fs)) / fs
    phase = (t * bpm / 60.0) % 1.0
    x = 1.2 * np.exp(-0.5 * ((phase - 0.3) * 60 / bpm / 0.01) ** 2) + 0.25 * np.exp(-0.5 * ((phase - 0.3) * 60 / bpm - 0.22) ** 2 / 0.04 ** 2)
    return (x + np.random.default_rng(seed).normal(0, 0.02, t.size)).astype(np.float32)


def run_cli(**values) -> int:
    """experiments/annotate.py's exit status with these flags (the others at their defaults), run in
    this process; what it prints goes to the test's capsys."""
    result = entry_points.run("experiments/annotate.py", *(f"--{k}={v}" for k, v in values.items()))
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    return result.returncode


@pytest.fixture(scope="module")
def heads_data():
    """Auto-labelled 5 s windows (360 Hz in, 100 Hz out) at 45 / 75 / 130 bpm, plus noise windows."""
    rates = [45, 75, 130, 45, 75, 130]
    signals = np.stack([beat_train(bpm, WINDOW_S, 360, seed=i)[:, None] for i, bpm in enumerate(rates)])
    data = train_heads.label_windows(signals, 360, MODEL_FS, af=[0, 1, 0, 1, 0, 1])
    noise = train_heads.noise_windows(3, data.windows.shape[1], 1, MODEL_FS, np.random.default_rng(0))
    return train_heads.HeadData.concatenate([data, noise])


@pytest.fixture(scope="module")
def model_dir(heads_data, tmp_path_factory):
    with unoptimized():  # read for its flow, files and what QRS detection gives, not its numbers
        model = train_heads.train_heads(heads_data, heads_data, encoder_config=TINY_ENCODER, fs=MODEL_FS, leads=("II",),
                                        window_s=WINDOW_S, steps=3, batch_size=8, log_every=1, log=lambda _: None)
    return model.save(str(tmp_path_factory.mktemp("model")))


def test_heart_rate_labels_come_from_qrs_detection(heads_data):
    assert heads_data.hr_class.tolist() == [BRADYCARDIA, NORMAL, TACHYCARDIA] * 2 + [NOISE] * 3
    np.testing.assert_allclose(heads_data.hr_bpm[:3], [45, 75, 130], rtol=0.03)
    assert np.isnan(heads_data.hr_bpm[6:]).all() and np.isnan(heads_data.af[6:]).all()
    assert heads_data.windows.shape == (9, 500, 1)


def test_trained_heads_save_and_load(model_dir, heads_data):
    model = loader.load_trained(str(model_dir))
    assert (model.fs, model.leads, model.window_s) == (MODEL_FS, ("II",), WINDOW_S)
    assert len(model.history) == 4 and all(np.isfinite(h["hr_class"]) for h in model.history[:3])
    assert set(model.history[-1]["val"]) == {"af_auroc", "af_threshold", "af_sensitivity", "af_specificity",
                                             "hr_class_accuracy", "hr_bpm_mae"}
    assert apply.af_threshold(model) == model.history[-1]["val"]["af_threshold"]
    out = model.predict(heads_data.windows[:4])
    assert out["af_prob"].shape == (4,) and out["heart_rate"].shape == (4,)
    np.testing.assert_allclose(out["hr_class_prob"].sum(1), 1, rtol=1e-5)


def _excerpt(mitdb_dir, name, directory, seconds):
    """First `seconds` of an MIT-BIH record with its annotations, written as a format-16 WFDB record."""
    record = wfdb.rdrecord(str(mitdb_dir / name), sampto=int(360 * seconds))
    wfdb.wrsamp(name, fs=record.fs, units=record.units, sig_name=record.sig_name, p_signal=record.p_signal,
                fmt=["16"] * record.n_sig, write_dir=str(directory))
    ann = wfdb.rdann(str(mitdb_dir / name), "atr", sampto=int(360 * seconds))
    wfdb.wrann(name, "atr", ann.sample, symbol=ann.symbol, aux_note=ann.aux_note, write_dir=str(directory))
    return directory / name


def test_cli_annotates_mitdb_excerpt_and_skips_bad_records(mitdb_dir, model_dir, tmp_path, capsys, monkeypatch):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    record = _excerpt(mitdb_dir, "201", inputs, 120)
    (inputs / "broken.hea").write_text("broken 2 360 1000\nbroken.dat 16 200 11 1024 0 0 0 MLII\n")
    plotted, plot_tracks = {}, outputs.plot_tracks

    def recording_plot_tracks(tracks, signal, fs, path, **options):
        plotted.update(options)
        return plot_tracks(tracks, signal, fs, path, **options)

    monkeypatch.setattr(outputs, "plot_tracks", recording_plot_tracks)
    assert run_cli(checkpoint=model_dir, input=inputs, output=out, stride_s=2.5, batch_size=16) == 0
    printed = capsys.readouterr().out
    assert "201: ok" in printed and "broken:" in printed and "broken: ok" not in printed
    # The plot names the heart-rate classes and shades 201's reference AF (AFIB from sample 60 on).
    assert plotted["class_names"] == {"hr_class_prob": HEART_RATE_CLASSES} and plotted["af_key"] == "af_prob"
    assert plotted["reference_af"] == [(60 / 360, 120.0)]

    tracks = pd.read_csv(out / "201.csv")
    assert len(tracks) == 47                                       # 5 s windows every 2.5 s over 120 s
    np.testing.assert_allclose(tracks["start_s"][:3], [0, 2.5, 5])
    assert {"af_prob", "heart_rate", "qrs_hr_bpm", "hr_class_prob_3", "valid"} <= set(tracks.columns)
    ref = reference.reference_tracks(str(record), WINDOW_S, 2.5)
    ok = tracks["valid"].astype(bool).values & np.isfinite(ref["hr_bpm"])
    assert ok.sum() > 40 and np.mean(np.abs(tracks["qrs_hr_bpm"].values[ok] - ref["hr_bpm"][ok])) < 10

    ann = wfdb.rdann(str(out / "201"), "ecgjax")                   # round trip through wfdb
    notes = [a for a, s in zip(ann.aux_note, ann.symbol) if s == '"']
    rhythms = [a for a, s in zip(ann.aux_note, ann.symbol) if s == "+"]
    assert len(notes) == 47 and notes[0].startswith("af_prob=") and "heart_rate=" in notes[0]
    assert rhythms and set(rhythms) <= {"(AFIB", "(N", "(NOISE"} and ann.sample[0] == 0 and ann.fs == 360
    assert (out / "201.png").stat().st_size > 10_000


def test_cli_single_lead_resampling_and_bad_segments(model_dir, tmp_path):
    """500 Hz record without lead II: the model reads V5 (--lead); a gap, a flat stretch and a clipped
    stretch in V5 mark their windows invalid with NaN outputs, the rest is annotated (QRS detection
    at 150 Hz, beats mapped back to 500 Hz)."""
    fs, seconds = 500.0, 48.0
    v5 = beat_train(80, seconds, fs)
    v5[int(9 * fs):int(10 * fs)] = np.nan                         # window 2 (8-12 s): missing samples
    v5[int(17 * fs):int(19.5 * fs)] = 0.3                          # window 4 (16-20 s): lead off mid-window
    v5[int(28 * fs):int(32 * fs)] = np.minimum(v5[int(28 * fs):int(32 * fs)], 0.2)  # window 7: amplifier clips at 0.2 mV
    signal = np.stack([beat_train(80, seconds, fs, seed=1), beat_train(80, seconds, fs, seed=2), v5], axis=1)
    wfdb.wrsamp("rec", fs=fs, units=["mV"] * 3, sig_name=["I", "V1", "V5"], p_signal=signal, fmt=["16"] * 3,
                write_dir=str(tmp_path))
    out = tmp_path / "out"
    assert run_cli(checkpoint=model_dir, input=tmp_path / "rec.hea", output=out, window_s=4, stride_s=4,
                   lead="V5", qrs_fs=150, plot=False) == 0
    tracks = pd.read_csv(out / "rec.csv")
    assert len(tracks) == 12 and not (out / "rec.png").exists()
    bad = np.flatnonzero(~tracks["valid"].astype(bool).values).tolist()
    assert bad == [2, 4, 7]
    assert tracks.loc[bad, ["gap", "flat", "saturated"]].astype(bool).values.tolist() == [
        [True, False, False], [False, True, False], [False, False, True]]
    for key in ("af_prob", "heart_rate", "qrs_hr_bpm"):
        assert tracks[key][bad].isna().all() and tracks[key].drop(index=bad).notna().all()
    np.testing.assert_allclose(tracks["qrs_hr_bpm"].drop(index=bad), 80, atol=2)
    notes = wfdb.rdann(str(out / "rec"), "ecgjax").aux_note
    assert notes.count("invalid") == 3 and "(NOISE" in notes


def test_cli_with_eval_classifier_masks_absent_leads(tmp_path):
    """A saved probe model (ecgjax.eval.classifier, random weights) for leads II + V1 on a 128 Hz lead-II-only
    record: V1 arrives as zeros and is not judged, so every window stays valid."""
    task = Task("afib", "binary", ("AFIB",), leads=("II", "V1"), window_s=WINDOW_S)
    encoder = {**TINY_ENCODER, "in_leads": 2}
    task_model(encoder, task, MODEL_FS).save(tmp_path / "clf")
    wfdb.wrsamp("solo", fs=128, units=["mV"], sig_name=["MLII"], p_signal=beat_train(60, 30, 128)[:, None],
                fmt=["16"], write_dir=str(tmp_path))
    out = tmp_path / "out"
    assert run_cli(checkpoint=tmp_path / "clf", input=tmp_path / "solo", output=out, qrs_heart_rate=False,
                   plot=False) == 0
    tracks = pd.read_csv(out / "solo.csv")
    assert len(tracks) == 6 and tracks["valid"].astype(bool).all() and tracks["afib"].between(0, 1).all()
    assert "qrs_hr_bpm" not in tracks
    rhythms = [a for a, s in zip(*(lambda a: (a.aux_note, a.symbol))(wfdb.rdann(str(out / "solo"), "ecgjax"))) if s == "+"]
    assert rhythms and set(rhythms) <= {"(AFIB", "(N"}


def test_cli_flat_chest_leads_leave_the_other_leads_judged(tmp_path, caplog):
    """A model of leads II, V1, V4-V6 on a record whose V4-V6 are flat throughout (electrodes off):
    every window was invalid; now those leads are read as absent (zeros, as ingest masks them) and the
    windows are judged on II and V1. A lead flat in some windows only still voids them (test_annotate)."""
    leads = ("II", "V1", "V4", "V5", "V6")
    task_model({**TINY_ENCODER, "in_leads": len(leads)}, Task("afib", "binary", ("AFIB",), leads=leads,
                                                             window_s=WINDOW_S), MODEL_FS).save(tmp_path / "clf")
    live = [beat_train(70, 30, 250, seed=i) for i in range(2)]
    signal = np.stack([*live, *(np.full(live[0].shape, level, np.float32) for level in (0.0, 0.0, 0.3))], axis=1)
    wfdb.wrsamp("chest_off", fs=250, units=["mV"] * 5, sig_name=list(leads), p_signal=signal, fmt=["16"] * 5,
                write_dir=str(tmp_path))
    result = entry_points.run("experiments/annotate.py", f"--checkpoint={tmp_path / 'clf'}",
                              f"--input={tmp_path / 'chest_off'}", f"--output={tmp_path / 'out'}", "--noplot")
    assert result.returncode == 0, result.stderr
    # Logged through the root logger, which pytest's caplog holds (a real run prints it on stderr).
    assert "V4, V5, V6 flat throughout: read as absent leads (zeros), windows judged on the other 2" in caplog.text
    tracks = pd.read_csv(tmp_path / "out" / "chest_off.csv")
    assert len(tracks) == 6 and tracks["valid"].astype(bool).all() and tracks["afib"].notna().all()
    np.testing.assert_allclose(tracks["qrs_hr_bpm"], 70, atol=2)


def test_cli_fails_in_one_line_when_no_record_can_be_annotated(model_dir, tmp_path):
    """Was exit 1 with no error: line and an empty --output folder."""
    wfdb.wrsamp("short", fs=360, units=["mV"], sig_name=["MLII"], p_signal=beat_train(70, 2, 360)[:, None],
                fmt=["16"], write_dir=str(tmp_path))
    result = entry_points.run("experiments/annotate.py", f"--checkpoint={model_dir}", f"--input={tmp_path}",
                              f"--output={tmp_path / 'out'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: --input={tmp_path}: none of its 1 records could be annotated ({tmp_path / 'short'}")
    assert error.endswith(f"recording of 2.0 s is shorter than one 5.0 s window); nothing was written to "
                          f"--output={tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()
