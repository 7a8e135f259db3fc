"""Tests for the loader augmentations: what each must preserve or change."""
import pickle

import numpy as np
import pytest

from ecgjax.data import augment
from ecgjax.data.errors import ECGInputError
from ecgjax.data.vcg import DOWER_12, INVERSE_DOWER_12, KORS_12, rotation_matrix, vcg_from_twelve

FS = 250.0


def _segment(seed=0, time=1000, leads=12):
    return np.random.default_rng(seed).normal(size=(time, leads)).astype(np.float32)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _power_at(signal_1d, fs, freq):
    spectrum = np.abs(np.fft.rfft(signal_1d)) ** 2
    freqs = np.fft.rfftfreq(len(signal_1d), 1 / fs)
    return spectrum, freqs, np.argmin(np.abs(freqs - freq))


def test_random_crop_is_contiguous_slice_of_requested_length():
    x = _segment()
    out = augment.random_crop(x, _rng(), length=300)
    assert out.shape == (300, 12)
    start = int(np.flatnonzero((x[:, 0] == out[0, 0]))[0])
    np.testing.assert_array_equal(out, x[start:start + 300])
    with pytest.raises(ECGInputError, match="random_crop"):
        augment.random_crop(x, _rng(), length=1001)


def test_amplitude_scale_multiplies_by_a_factor_in_range():
    x = _segment()
    out = augment.amplitude_scale(x, _rng(), min_scale=0.5, max_scale=2.0)
    factor = out[0, 0] / x[0, 0]
    np.testing.assert_allclose(out, x * factor, rtol=1e-5)
    assert 0.5 <= factor <= 2.0
    per_lead = augment.amplitude_scale(x, _rng(), 0.5, 2.0, per_lead=True)
    factors = per_lead[0] / x[0]
    np.testing.assert_allclose(per_lead, x * factors[None], rtol=1e-4)
    assert len(np.unique(factors.round(5))) == 12


@pytest.mark.parametrize("fresh", [False, True])
def test_gaussian_noise_has_requested_std(fresh):
    x = _segment()
    out = augment.gaussian_noise(x, _rng(), std=0.3, fresh=fresh)
    noise = out - x
    assert abs(noise.std() - 0.3) < 0.01 and abs(noise.mean()) < 0.01
    assert abs(np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]) < 0.05  # white


def test_baseline_wander_adds_only_low_frequency_power():
    x = np.zeros((2500, 12), np.float32)
    out = augment.baseline_wander(x, _rng(), fs=FS, amplitude=0.2, max_freq=0.5)
    spectrum = np.abs(np.fft.rfft(out, axis=0)) ** 2
    freqs = np.fft.rfftfreq(2500, 1 / FS)
    assert spectrum.sum() > 0
    assert spectrum[freqs > 1.0].sum() / spectrum.sum() < 0.01


@pytest.mark.parametrize("freq", [50.0, 60.0])
def test_powerline_adds_power_at_the_mains_frequency(freq):
    x = np.zeros((2500, 12), np.float32)
    out = augment.powerline(x, _rng(), fs=FS, amplitude=0.1, freq=freq)
    spectrum, _, peak = _power_at(out[:, 1], FS, freq)
    assert np.argmax(spectrum) == peak
    assert spectrum[peak] / spectrum.sum() > 0.99
    assert np.abs(out).max() <= 0.1 + 1e-6
    with pytest.raises(ECGInputError, match="Nyquist"):
        augment.powerline(x, _rng(), fs=100.0, freq=50.0)


def test_lead_dropout_zeros_only_the_dropped_leads():
    x = _segment()
    out, kept = augment.lead_dropout(x, _rng(3), drop_prob=0.5, return_mask=True)
    assert 0 < kept.sum() < 12
    np.testing.assert_array_equal(out[:, kept], x[:, kept])
    assert not out[:, ~kept].any()
    _, kept_all_dropped = augment.lead_dropout(x, _rng(), drop_prob=1.0, min_keep=2, return_mask=True)
    assert kept_all_dropped.sum() == 2


def test_time_mask_zeros_one_span_of_requested_length():
    x = _segment() + 5.0  # no accidental zeros
    out = augment.time_mask(x, _rng(), span=125)
    zero_rows = np.flatnonzero(~out.any(axis=1))
    assert len(zero_rows) == 125 and np.all(np.diff(zero_rows) == 1)
    keep = np.ones(len(x), bool)
    keep[zero_rows] = False
    np.testing.assert_array_equal(out[keep], x[keep])


def test_vcg_identity_round_trips_signals_in_the_dower_space():
    vcg = _segment(time=500, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    matrix = augment.vcg_transform_matrix(np.zeros(3), 1.0, "inverse_dower")
    np.testing.assert_allclose(twelve @ matrix, twelve, atol=5e-3 * np.abs(twelve).max())
    # Inverse Dower is the pseudo-inverse of Dower (to its published 3 decimals).
    np.testing.assert_allclose(INVERSE_DOWER_12 @ DOWER_12, np.eye(3), atol=2e-3)
    assert KORS_12.shape == (3, 12)


def test_vcg_rotation_preserves_vector_norm_and_scales_it():
    vcg = _segment(time=500, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    angles = np.deg2rad([10.0, -20.0, 30.0])
    rotated = twelve @ augment.vcg_transform_matrix(angles, 1.0)
    back = vcg_from_twelve(rotated)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(back, vcg @ rotation_matrix(angles).T, atol=2e-2)
    scaled = vcg_from_twelve(twelve @ augment.vcg_transform_matrix(np.zeros(3), 1.5))
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), 1.5 * np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)


def test_vcg_rotation_changes_the_signal_within_bounds():
    vcg = _segment(time=200, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    out = augment.vcg_rotation(twelve, _rng(), max_degrees=10.0, min_scale=1.0, max_scale=1.0, method="inverse_dower")
    assert out.shape == twelve.shape and out.dtype == np.float32
    assert not np.allclose(out, twelve, atol=1e-3)
    norms = np.linalg.norm(vcg_from_twelve(out), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)
    assert augment.vcg_rotation(twelve, _rng(), method="kors").shape == twelve.shape
    with pytest.raises(ECGInputError, match="12"):
        augment.vcg_rotation(twelve[:, :8], _rng())
    with pytest.raises(ValueError, match="unknown VCG method"):
        augment.vcg_rotation(twelve, _rng(), method="frank")


@pytest.mark.parametrize("name", list(augment.AUGMENTATIONS))
def test_every_augmentation_is_seeded_and_leaves_input_untouched(name):
    params = {"random_crop": {"length": 500}, "time_mask": {"span": 50}}.get(name, {})
    if name in ("baseline_wander", "powerline"):
        params["fs"] = FS
    fn = augment.AUGMENTATIONS[name]
    x = _segment()
    before = x.copy()
    a, b, c = (fn(x, _rng(seed), **params) for seed in (1, 1, 2))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32


def test_build_augmentation_from_config_names_and_defaults():
    x = _segment(time=2500)
    chain = augment.build_augmentation(
        {"random_crop": {"length_s": 2.0}, "time_mask": {"span_s": 0.2, "prob": 1.0},
         "gaussian_noise": {"prob": 0.0}}, fs=FS)
    out = chain(x, _rng())
    assert out.shape == (500, 12)
    assert (~out.any(axis=1)).sum() == 50
    assert [name for name, _, _ in chain.steps] == ["random_crop", "gaussian_noise", "time_mask"]
    default = augment.build_augmentation(None, fs=FS)
    np.testing.assert_array_equal(default(x, _rng(5)), default(x, _rng(5)))
    restored = pickle.loads(pickle.dumps(default))  # Grain workers receive it pickled
    np.testing.assert_array_equal(restored(x, _rng(5)), default(x, _rng(5)))
    assert augment.build_augmentation(["amplitude_scale"], fs=FS)(x, _rng()).shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentations"):
        augment.build_augmentation({"flip": {}}, fs=FS)


def test_build_augmentation_accepts_configdict():
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict({"amplitude_scale": {"min_scale": 2.0, "max_scale": 2.0}})
    x = _segment()
    np.testing.assert_allclose(augment.build_augmentation(config, fs=FS)(x, _rng()), 2 * x, rtol=1e-5)
