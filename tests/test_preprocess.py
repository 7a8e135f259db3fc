"""Each preprocessing step on signals with known content, then the composed record pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from ecgjax.data import preprocess
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.record import ECGRecord
from ecgjax.data.sources import ptbxl
from fixtures import ecg_like


def sine(freq_hz, fs, seconds, amplitude=1.0, leads=1):
    t = np.arange(int(fs * seconds)) / fs
    return np.repeat((amplitude * np.sin(2 * np.pi * freq_hz * t))[:, None], leads, axis=1).astype(np.float32)


def dominant_frequency(x, fs):
    spectrum = np.abs(np.fft.rfft(x - x.mean()))
    return np.fft.rfftfreq(len(x), 1 / fs)[np.argmax(spectrum)]


@pytest.mark.parametrize("fs_in,fs_out", [(100, 250), (360, 250), (400, 250), (500, 250)])
def test_resample_keeps_a_5hz_sine(fs_in, fs_out):
    out = preprocess.resample(sine(5.0, fs_in, 10.0, amplitude=1.5, leads=3), fs_in, fs_out)
    assert out.shape == (int(10 * fs_out), 3) and out.dtype == np.float32
    assert dominant_frequency(out[:, 0], fs_out) == pytest.approx(5.0, abs=0.1)
    middle = out[fs_out:-fs_out]  # away from the edges
    assert np.abs(middle).max() == pytest.approx(1.5, rel=0.02)
    np.testing.assert_allclose(middle, sine(5.0, fs_out, 10.0, 1.5, 3)[fs_out:-fs_out], atol=0.03)


def test_resample_suppresses_content_above_the_new_nyquist():
    # 150 Hz at 500 Hz would alias to 100 Hz at 250 Hz without the anti-aliasing filter.
    out = preprocess.resample(sine(150.0, 500, 4.0), 500, 250)
    assert np.abs(out[250:-250]).max() < 0.01


def test_resample_identity_and_irrational_ratio():
    x = sine(5.0, 250, 2.0)
    np.testing.assert_array_equal(preprocess.resample(x, 250, 250), x)
    assert preprocess.resample(x, 250, 257.3).shape[0] == pytest.approx(2 * 257.3, abs=2)


def test_bandpass_keeps_the_band_and_removes_drift_and_mains():
    fs = 500
    clean = sine(10.0, fs, 10.0)
    noisy = clean + sine(0.1, fs, 10.0, 2.0) + sine(100.0, fs, 10.0, 0.5)
    out = preprocess.bandpass(noisy, fs, 0.5, 40.0)
    assert out.shape == noisy.shape and out.dtype == np.float32
    edge = fs  # away from the edge transients
    np.testing.assert_allclose(out[edge:-edge], clean[edge:-edge], atol=0.05)
    assert np.abs(preprocess.bandpass(sine(100.0, fs, 10.0), fs, 0.5, 40.0)[edge:-edge]).max() < 0.01
    # high above Nyquist degrades to a high-pass rather than failing
    assert np.isfinite(preprocess.bandpass(noisy[:, :1], 60.0, 0.5, 40.0)).all()


def test_out_of_range_rule():
    x = np.zeros((100, 2), np.float32)
    x[10, 0], x[20, 1], x[30, 1] = 61.0, -75.0, 59.0
    mask = preprocess.out_of_range_mask(x)
    assert mask.shape == (100, 2) and mask.sum() == 2 and mask[10, 0] and mask[20, 1]
    zeroed, bad = preprocess.clip_out_of_range(x, mode="zero")
    assert np.flatnonzero(bad).tolist() == [10, 20] and zeroed[10, 0] == 0 and zeroed[30, 1] == 59.0
    flagged, _ = preprocess.clip_out_of_range(x, mode="flag")
    assert flagged[10, 0] == 61.0
    removed, _ = preprocess.clip_out_of_range(x, mode="remove")
    assert removed.shape == (98, 2)
    x[:60, 0] = 100.0  # mostly out of range
    with pytest.raises(ECGInputError, match="rec.hea: 60% of samples beyond"):
        preprocess.clip_out_of_range(x, source="rec.hea")


def _record(signal, fs=100.0, leads=CANONICAL_LEADS):
    return ECGRecord(signal=np.asarray(signal, np.float32), fs=fs, lead_names=tuple(leads), record_id="r",
                     patient_id="p", source="test", path="mem/r.hea")


def test_preprocess_record_on_real_ptbxl(ptbxl_dir):
    (record,) = ptbxl.read_ptbxl(ptbxl_dir, ecg_ids=[1])
    signal, mask = preprocess.preprocess_record(record)
    assert signal.shape == (2500, 12) and signal.dtype == np.float32 and mask.all()
    assert preprocess.resample(record.signal, 100, 250)[:, 1] == pytest.approx(signal[:, 1])
    record.signal = record.signal + 2.0  # a baseline offset, which the band-pass removes
    filtered, _ = preprocess.preprocess_record(record, bandpass=(0.5, 40.0))
    assert filtered.shape == (2500, 12) and np.abs(np.median(filtered, axis=0)).max() < 0.1


def test_preprocess_record_places_a_partial_lead_set_and_masks_the_rest():
    leads = ("MLII", "V5")
    signal, mask = preprocess.preprocess_record(_record(ecg_like(3600, 360.0, 2), fs=360.0, leads=leads))
    assert signal.shape == (2500, 12)
    assert [CANONICAL_LEADS[i] for i in np.flatnonzero(mask)] == ["II", "V5"]
    assert not signal[:, ~mask].any()


def test_preprocess_record_applies_the_60mv_rule_and_rejects_bad_records():
    x = ecg_like(1000, 100.0, 12)
    x[500, 3] = 80.0
    signal, _ = preprocess.preprocess_record(_record(x))
    assert np.abs(signal).max() < 5  # the spike was zeroed before resampling
    x[:700, 0] = -90.0
    with pytest.raises(ECGInputError, match="mem/r.hea: .*beyond"):
        preprocess.preprocess_record(_record(x))
    x = ecg_like(1000, 100.0, 12)
    x[3, 4] = np.nan
    with pytest.raises(ECGInputError, match="NaN"):
        preprocess.preprocess_record(_record(x))


def test_flat_lead_is_masked_as_absent_when_allowed(tmp_path):
    """Ingest keeps a record with one dead electrode (PTB-XL 12722, V5) and masks that lead."""
    signal = ecg_like(1000, 100.0, 3).astype(np.float32)
    signal[:, 2] = 0.25  # constant: electrode off
    record = ECGRecord(signal=signal, fs=100.0, lead_names=("I", "II", "V5"), record_id="r",
                       patient_id="p", source="test", path=str(tmp_path / "r"))
    with pytest.raises(ECGInputError, match="flat.*V5"):
        preprocess.preprocess_record(record)
    out, mask = preprocess.preprocess_record(record, allow_flat_leads=True)
    assert [CANONICAL_LEADS[i] for i in np.flatnonzero(mask)] == ["I", "II"]
    assert not out[:, CANONICAL_LEADS.index("V5")].any()
    record.signal = np.full_like(signal, 0.25)
    with pytest.raises(ECGInputError, match="flat"):
        preprocess.preprocess_record(record, allow_flat_leads=True)
