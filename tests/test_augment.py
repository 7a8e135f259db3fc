"""The device augmentations (ecgjax.data.augment): their distributions, and each one's effect on a
known signal.

The JAX chain replaced a numpy chain run in the loader. Before the numpy one was removed, both were
run on the same 12-lead signal (4000 draws per transform and for the default chain with its
probabilities): per-sample means agreed within sampling error (mean |z| 0.3-1.7) and variances within
2% (report of issue 11). What stays here checks the JAX chain against the documented distributions
(closed-form moments) and the closed-form effects.

Tolerances on moments: N draws give a sample mean within 5 standard errors of the true mean except
with probability < 1e-6; the draws come from threefry with fixed keys, so the test is
deterministic, and the float32 arithmetic of the draws (exp, log, scaling of uniform bits) differs
between x86 CPUs by at most an ulp or two, ~1e-7 relative, far inside 5 standard errors (>= 1e-3
relative here). A sampler with the wrong range, scale or probability moves a moment by tens of
standard errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.data import augment
from ecgjax.data.errors import ECGInputError
from ecgjax.data.vcg import DOWER_12, INVERSE_DOWER_12, KORS_12, rotation_matrix, vcg_from_twelve
from ecgjax.errors import UserError

FS = 250.0
N = 20_000


def _segment(seed=0, time=1000, leads=12):
    return np.random.default_rng(seed).normal(size=(time, leads)).astype(np.float32)


def _key(seed=0):
    return jax.random.PRNGKey(seed)


def _draws(name, time=2500, leads=12, **params):
    """N independent draws of one transform's parameters, as numpy arrays [N, ...]."""
    params = augment._resolve_params(name, params, FS)
    fn = jax.jit(jax.vmap(lambda k: augment.DRAWS[name](k, time=time, leads=leads, **params)))
    return {k: np.asarray(v) for k, v in fn(jax.random.split(_key(1), N)).items()}


def _assert_moments(samples, mean, var, fourth_central=None, what=""):
    """Sample mean and variance within 5 standard errors of the true ones (see the docstring)."""
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    assert abs(samples.mean() - mean) < 5 * np.sqrt(var / n), (what, samples.mean(), mean)
    fourth = 3 * var ** 2 if fourth_central is None else fourth_central  # normal unless given
    if fourth > var ** 2:  # else (two equally likely values) the mean fixes the variance
        assert abs(samples.var() - var) < 5 * np.sqrt((fourth - var ** 2) / n), (what, samples.var(), var)


def _uniform(samples, a, b, what=""):
    _assert_moments(samples, (a + b) / 2, (b - a) ** 2 / 12, (b - a) ** 4 / 80, what)
    assert samples.min() >= a and samples.max() <= b, what


# ------------------------------------------------------------------ parameter distributions

def test_vcg_rotation_draws_uniform_angles_and_scale():
    d = _draws("vcg_rotation", max_degrees=15.0, min_scale=0.9, max_scale=1.1)
    limit = np.deg2rad(15.0)
    for axis in range(3):
        _uniform(d["angles"][:, axis], -limit, limit, f"angle {axis}")
    _uniform(d["scale"], 0.9, 1.1, "scale")


def test_amplitude_scale_draws_log_uniform_factors():
    a, b = 0.8, 1.25
    for per_lead in (False, True):
        factors = _draws("amplitude_scale", min_scale=a, max_scale=b, per_lead=per_lead)["factor"]
        logs = np.log(factors)
        _uniform(logs if per_lead else logs[:, 0], np.log(a) - 1e-6, np.log(b) + 1e-6, f"per_lead={per_lead}")
        # one factor for all leads, or one per lead
        assert (np.ptp(factors, axis=1) == 0).all() != per_lead


def test_baseline_wander_draws_documented_frequencies_phases_and_weights():
    d = _draws("baseline_wander", amplitude=0.2, max_freq=0.5, num_components=2)
    _uniform(d["freqs_hz"], 0.05, 0.5, "frequency")
    np.testing.assert_allclose(d["freqs"], d["freqs_hz"] / FS, rtol=1e-6)
    _uniform(d["phases"], 0.0, 1.0, "phase (cycles)")
    _assert_moments(d["weights"], 0.0, 0.2 ** 2, what="weights")


def test_powerline_draws_mains_gains_and_shifts():
    d = _draws("powerline", amplitude=0.05)
    assert set(np.unique(d["freq_hz"])) == {50.0, 60.0}
    _assert_moments(d["freq_hz"], 55.0, 25.0, 25.0 ** 2, "mains: 50 or 60 Hz, p = 1/2")
    _uniform(d["gains"], 0.0, 0.05, "gains")
    _assert_moments(d["shifts"], 0.0, 0.3 ** 2, what="per-lead phase shift")
    assert set(np.unique(_draws("powerline", freq=60.0)["freq_hz"])) == {60.0}


def test_gaussian_noise_draws_sign_and_window():
    d = _draws("gaussian_noise", std=0.02)
    _assert_moments(np.sign(d["noise_std"]), 0.0, 1.0, 1.0, "sign")
    np.testing.assert_allclose(np.abs(d["noise_std"]), 0.02, rtol=1e-7)
    rows = augment.noise_bank(2500, 12).shape[0]
    _uniform(d["noise_row"], 0, rows - 2500, "window start")


def test_lead_dropout_and_time_mask_draws():
    kept = _draws("lead_dropout", drop_prob=0.2)["kept"]
    _assert_moments(kept, 0.8, 0.16, 0.8 * 0.2 * (0.2 ** 3 + 0.8 ** 3), "kept")
    forced = _draws("lead_dropout", drop_prob=1.0, min_keep=3)["kept"]
    assert (forced.sum(1) == 3).all()
    _assert_moments(forced, 0.25, 0.25 * 0.75, 0.25 * 0.75 * (0.75 ** 3 + 0.25 ** 3), "which are forced")
    starts = _draws("time_mask", span=125)["mask_start"]
    _uniform(starts, 0, 2500 - 125, "mask start")


@pytest.mark.parametrize("name,prob", [("amplitude_scale", 0.8), ("lead_dropout", 0.2), ("time_mask", 0.3)])
def test_each_step_applies_with_its_probability(name, prob):
    params = {"time_mask": {"span": 125}, "lead_dropout": {"drop_prob": 1.0, "min_keep": 1}}.get(name, {})
    chain = augment.build_augmentation({name: dict(params, prob=prob)}, fs=FS)
    on = jax.jit(jax.vmap(lambda k: chain.draws(k, 2500, 12)[0][1]))(jax.random.split(_key(2), N))
    _assert_moments(np.asarray(on, np.float64), prob, prob * (1 - prob),
                    prob * (1 - prob) * (prob ** 3 + (1 - prob) ** 3), f"{name} applied")


def test_noise_bank_is_white_standard_normal():
    bank = augment.noise_bank(2500, 12)
    assert bank.shape == ((1 << 20) // 12, 12)
    _assert_moments(bank[:N], 0.0, 1.0, what="bank")
    assert abs(np.corrcoef(bank[:-1].ravel(), bank[1:].ravel())[0, 1]) < 5 / np.sqrt(bank.size)


# ------------------------------------------------------------------ effects on known signals

def _power_at(signal_1d, fs, freq):
    spectrum = np.abs(np.fft.rfft(signal_1d)) ** 2
    freqs = np.fft.rfftfreq(len(signal_1d), 1 / fs)
    return spectrum, freqs, np.argmin(np.abs(freqs - freq))


def _apply(name, x, seed=0, **params):
    return np.asarray(augment.transform(name, _key(seed), jnp.asarray(x), fs=FS, **params))


def test_sin_cycles_matches_sin():
    """Bound: Taylor truncation 6e-8, plus float32 rounding of 2 pi r and of ~12 multiply-adds
    (each <= 6e-8 relative, on values <= 1.6): < 1e-6 with any rounding order or FMA use."""
    u = np.linspace(-1000.0, 1000.0, 200_001, dtype=np.float32)
    got = np.asarray(jax.jit(augment.sin_cycles)(u), np.float64)
    assert np.abs(got - np.sin(2 * np.pi * u.astype(np.float64))).max() < 1e-6


def test_random_crop_is_contiguous_slice_of_requested_length():
    x = np.arange(1000 * 12, dtype=np.float32).reshape(1000, 12)
    out = _apply("random_crop", x, length=300)
    start = int(out[0, 0]) // 12
    np.testing.assert_array_equal(out, x[start:start + 300])
    with pytest.raises(ECGInputError, match="random_crop"):
        _apply("random_crop", x, length=1001)


def test_amplitude_scale_multiplies_by_a_factor_in_range():
    x = _segment()
    out = _apply("amplitude_scale", x, min_scale=0.5, max_scale=2.0)
    factor = out[0, 0] / x[0, 0]
    np.testing.assert_allclose(out, x * factor, rtol=1e-5)
    assert 0.5 <= factor <= 2.0
    per_lead = _apply("amplitude_scale", x, min_scale=0.5, max_scale=2.0, per_lead=True)
    factors = per_lead[0] / x[0]
    np.testing.assert_allclose(per_lead, x * factors[None], rtol=1e-4)
    assert len(np.unique(factors.round(5))) == 12


def test_gaussian_noise_has_requested_std_and_is_white():
    x = _segment()
    noise = _apply("gaussian_noise", x, std=0.3) - x
    assert abs(noise.std() - 0.3) < 0.01 and abs(noise.mean()) < 0.01
    assert abs(np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]) < 0.05  # white in time
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.1  # and across leads


def test_baseline_wander_adds_only_low_frequency_power():
    x = np.zeros((2500, 12), np.float32)
    out = _apply("baseline_wander", x, amplitude=0.2, max_freq=0.5)
    spectrum = np.abs(np.fft.rfft(out, axis=0)) ** 2
    freqs = np.fft.rfftfreq(2500, 1 / FS)
    assert spectrum.sum() > 0
    assert spectrum[freqs > 1.0].sum() / spectrum.sum() < 0.01


@pytest.mark.parametrize("freq", [50.0, 60.0])
def test_powerline_adds_power_at_the_mains_frequency(freq):
    x = np.zeros((2500, 12), np.float32)
    out = _apply("powerline", x, amplitude=0.1, freq=freq)
    spectrum, _, peak = _power_at(out[:, 1], FS, freq)
    assert np.argmax(spectrum) == peak
    assert spectrum[peak] / spectrum.sum() > 0.99
    assert np.abs(out).max() <= 0.1 + 1e-6
    with pytest.raises(ECGInputError, match="Nyquist"):
        augment.build_augmentation({"powerline": {}}, fs=100.0)


def test_lead_dropout_zeros_only_the_dropped_leads():
    x = _segment()
    out = _apply("lead_dropout", x, seed=3, drop_prob=0.5)
    kept = out.any(axis=0)
    assert 0 < kept.sum() < 12
    np.testing.assert_array_equal(out[:, kept], x[:, kept])
    assert (_apply("lead_dropout", x, drop_prob=1.0, min_keep=2).any(axis=0)).sum() == 2


def test_time_mask_zeros_one_span_of_requested_length():
    x = _segment() + 5.0  # no accidental zeros
    out = _apply("time_mask", x, span=125)
    zero_rows = np.flatnonzero(~out.any(axis=1))
    assert len(zero_rows) == 125 and np.all(np.diff(zero_rows) == 1)
    keep = np.ones(len(x), bool)
    keep[zero_rows] = False
    np.testing.assert_array_equal(out[keep], x[keep])


def test_vcg_identity_round_trips_signals_in_the_dower_space():
    vcg = _segment(time=500, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    matrix = np.asarray(augment.vcg_transform_matrix(np.zeros(3), 1.0, "inverse_dower"))
    np.testing.assert_allclose(twelve @ matrix, twelve, atol=5e-3 * np.abs(twelve).max())
    # Inverse Dower is the pseudo-inverse of Dower (to its published 3 decimals).
    np.testing.assert_allclose(INVERSE_DOWER_12 @ DOWER_12, np.eye(3), atol=2e-3)
    assert KORS_12.shape == (3, 12)


def test_vcg_rotation_preserves_vector_norm_and_scales_it():
    vcg = _segment(time=500, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    angles = np.deg2rad([10.0, -20.0, 30.0])
    rotated = twelve @ np.asarray(augment.vcg_transform_matrix(angles, 1.0))
    back = vcg_from_twelve(rotated)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(back, vcg @ rotation_matrix(angles).T, atol=2e-2)
    scaled = vcg_from_twelve(twelve @ np.asarray(augment.vcg_transform_matrix(np.zeros(3), 1.5)))
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), 1.5 * np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)


def test_vcg_rotation_changes_the_signal_within_bounds():
    vcg = _segment(time=200, leads=3).astype(np.float64)
    twelve = (vcg @ DOWER_12.T).astype(np.float32)
    out = _apply("vcg_rotation", twelve, max_degrees=10.0, min_scale=1.0, max_scale=1.0)
    assert out.shape == twelve.shape and out.dtype == np.float32
    assert not np.allclose(out, twelve, atol=1e-3)
    norms = np.linalg.norm(vcg_from_twelve(out), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(vcg, axis=1), rtol=1e-2, atol=1e-2)
    assert _apply("vcg_rotation", twelve, method="kors").shape == twelve.shape
    with pytest.raises(ECGInputError, match="12"):
        _apply("vcg_rotation", twelve[:, :8])
    with pytest.raises(ValueError, match="unknown VCG method"):
        _apply("vcg_rotation", twelve, method="frank")


def test_the_chain_is_its_transforms_applied_one_after_another():
    """The one-pass plan (lead mix, sinusoids, noise, gains) against the transforms applied in
    sequence to the parameters the chain drew, by a plain numpy reference of each effect."""
    chain = augment.build_augmentation({name: dict(params, prob=0.6) for name, params in
                                        augment.DEFAULT_AUGMENTATION.items()}, fs=FS)
    x = _segment(time=2500)
    t = np.arange(2500)[:, None]
    for seed in range(8):
        key = jax.random.split(_key(seed))[1]  # Augmentation.one splits off the crop's key first
        y = x.astype(np.float64)
        for name, on, d in chain.draws(key, 2500, 12):
            if not on:
                continue
            d = {k: np.asarray(v, np.float64) for k, v in d.items()}
            if name == "vcg_rotation":
                y = y @ d["mix"]
            elif name == "amplitude_scale":
                y = y * d["factor"]
            elif name in ("baseline_wander", "powerline"):
                y = y + np.sin(2 * np.pi * (t * d["freqs"] + d["phases"])) @ d["weights"]
            elif name == "gaussian_noise":
                bank = augment.noise_bank(2500, 12)
                y = y + d["noise_std"] * bank[int(d["noise_row"]):int(d["noise_row"]) + 2500]
            elif name == "lead_dropout":
                y = y * d["kept"]
            elif name == "time_mask":
                y[int(d["mask_start"]):int(d["mask_start"] + d["mask_span"])] = 0.0
        got = np.asarray(chain.one(_key(seed), jnp.asarray(x)))
        # float32 against float64: a few ulps of values up to ~10 mV.
        np.testing.assert_allclose(got, y, atol=1e-5 * max(1.0, np.abs(y).max()))


def test_batches_draw_independently_per_example_and_reproducibly():
    chain = augment.build_augmentation(None, fs=FS)
    x = jnp.broadcast_to(jnp.asarray(_segment(time=500)), (4, 500, 12))
    a, b, c = (np.asarray(jax.jit(chain)(_key(s), x)) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert all(not np.array_equal(a[0], a[i]) for i in range(1, 4))


def test_build_augmentation_from_config_names_and_defaults():
    x = jnp.asarray(_segment(time=2500))
    chain = augment.build_augmentation(
        {"time_mask": {"span_s": 0.2, "prob": 1.0}, "random_crop": {"length_s": 2.0},
         "gaussian_noise": {"prob": 0.0}}, fs=FS)
    assert [name for name, _, _ in chain.steps] == ["random_crop", "gaussian_noise", "time_mask"]  # canonical
    out = np.asarray(chain.one(_key(), x))
    assert out.shape == (500, 12) and (~out.any(axis=1)).sum() == 50
    assert [s[0] for s in augment.build_augmentation(None).steps] == list(augment.DEFAULT_AUGMENTATION)
    assert augment.build_augmentation(["amplitude_scale"], fs=FS).one(_key(), x).shape == x.shape
    empty = augment.build_augmentation({}, fs=FS)
    assert not empty
    np.testing.assert_array_equal(np.asarray(empty(_key(), x[None])), np.asarray(x[None]))
    with pytest.raises(UserError, match="unknown augmentations"):
        augment.build_augmentation({"flip": {}}, fs=FS)
    with pytest.raises(UserError, match="no parameter.*'fresh'"):
        augment.build_augmentation({"gaussian_noise": {"fresh": True}}, fs=FS)
    with pytest.raises(UserError, match="must always apply"):
        augment.build_augmentation({"random_crop": {"length": 100, "prob": 0.5}}, fs=FS)
    with pytest.raises(UserError, match="needs.*span"):
        augment.build_augmentation({"time_mask": {}}, fs=FS)


def test_build_augmentation_accepts_configdict():
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict({"amplitude_scale": {"min_scale": 2.0, "max_scale": 2.0}})
    x = _segment()
    np.testing.assert_allclose(augment.build_augmentation(config, fs=FS).one(_key(), jnp.asarray(x)), 2 * x,
                               rtol=1e-5)


def test_the_step_augments_each_view_of_the_host_crops_independently():
    from configs import cpc, generative, hybrid  # configs/ is on sys.path (pytest.ini)
    from ecgjax.train import step

    config = hybrid.get_config("runlocal")
    views = step.device_views(config.objective)
    assert views == (("segment", "segment"), ("segment_aug", "segment"), ("patient_segment", "patient_segment"))
    assert step.device_views(generative.get_config("runlocal").objective) == (("segment", "segment"),)
    assert step.device_views(cpc.get_config("runlocal").objective) == ()
    crops = {"segment": _segment(1, 2500).astype(np.float16), "patient_segment": _segment(2, 2500).astype(np.float16)}
    batch = {k: np.stack([v, v]) for k, v in crops.items()} | {"patient": np.arange(2, dtype=np.int32)}
    chain = augment.build_augmentation({"amplitude_scale": {"min_scale": 0.5, "max_scale": 2.0}}, fs=FS)
    out = {k: np.asarray(v) for k, v in step.augment_views(batch, _key(), chain, views).items()}
    assert out["segment"].dtype == np.float32 and out["patient"].dtype == np.int32
    for view, source in views:  # a gain of its own crop, per view and per example
        gains = out[view][:, 0, 0] / batch[source][:, 0, 0].astype(np.float32)
        np.testing.assert_allclose(out[view], batch[source] * gains[:, None, None], rtol=1e-5)
        assert gains[0] != gains[1]
    assert not np.array_equal(out["segment"], out["segment_aug"])
    again = step.augment_views(batch, _key(), chain, views)
    np.testing.assert_array_equal(np.asarray(again["segment_aug"]), out["segment_aug"])
    plain = step.augment_views(batch, _key(), augment.build_augmentation({}), views)  # no augmentation
    np.testing.assert_array_equal(np.asarray(plain["segment_aug"]), batch["segment"].astype(np.float32))
