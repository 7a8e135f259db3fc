"""Tests of the annotation heads' training data: record groups (AF, confounders), random crops
labelled from the beats inside them, the crop sampler, the records cache and the AF operating point."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgjax.annotate import apply, crops, sampling, train_heads, training_records
from ecgjax.annotate.operating_point import rates_at_threshold, threshold_at_sensitivity
from ecgjax.annotate.training_records import AF, CONFOUNDER, OTHER, RecordSet
from ecgjax.data.sources import ptbxl
from ecgjax.signal.heart_rate import NOISE, heart_rate_from_beats

FS, BEAT_FS, SECONDS = 100.0, 250.0, 10.0


def spikes(beat_s: np.ndarray, fs: float = FS, seconds: float = SECONDS) -> np.ndarray:
    """[time] mV: 1 mV QRS-like spikes at `beat_s`."""
    t = np.arange(int(seconds * fs)) / fs
    return sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beat_s).astype(np.float32)


def record_set(beat_times: list, codes: list) -> RecordSet:
    """A RecordSet of 2-lead records (II, V1 = -II / 2) with spikes at the given beat times."""
    signals = np.stack([np.stack([spikes(b), -0.5 * spikes(b)], axis=1) for b in beat_times])
    group = np.array([training_records.record_group(c) for c in codes])
    beats = [np.round(np.asarray(b) * BEAT_FS).astype(np.int64) for b in beat_times]
    return RecordSet(signals, ("II", "V1"), FS, beats, BEAT_FS, (group == AF).astype(np.float32), group, codes,
                     np.arange(len(codes)))


def regular(bpm: float, first: float = 0.2) -> np.ndarray:
    return np.arange(first, SECONDS, 60.0 / bpm)


def slowing() -> np.ndarray:
    """120 bpm for the first 5 s, 60 bpm after: a crop's rate depends on where it is cut."""
    return np.concatenate([np.arange(0.2, 5.0, 0.5), np.arange(5.0, SECONDS, 1.0)])


CODES = [{"SR": 100.0}, {"AFIB": 100.0, "PVC": 100.0}, {"AFLT": 100.0}, {"SR": 100.0, "PVC": 100.0},
         {"NORM": 100.0}, {"AFIB": 100.0}]


def test_record_groups_af_first_then_confounders():
    groups = [training_records.record_group(c) for c in CODES]
    assert groups == [OTHER, AF, CONFOUNDER, CONFOUNDER, OTHER, AF]  # flutter is a negative, AFIB + PVC is AF


def test_select_records_keeps_every_af_and_confounder():
    table = pd.DataFrame({"ecg_id": range(12), "strat_fold": [1] * 6 + [2] * 6, "scp_codes": CODES * 2})
    rows = training_records.select_records(table, [1], 1, np.random.default_rng(0))
    assert sorted(rows["ecg_id"]) in ([0, 1, 2, 3, 5], [1, 2, 3, 4, 5])
    assert len(training_records.select_records(table, [1, 2], None, np.random.default_rng(0))) == 12


def test_crop_heart_rate_is_recomputed_inside_each_crop():
    beats = [np.round(slowing() * BEAT_FS).astype(np.int64)]
    starts = np.array([0, 200, 500])                              # crops of 4 s at 100 Hz
    bpm = crops.crop_heart_rate(beats, np.zeros(3, np.int64), starts, 400, FS, BEAT_FS)
    # 2-6 s: five RR of 0.5 s (120 bpm) and one of 0.3 s (200 bpm) across the change; 5-9 s: 60 bpm.
    np.testing.assert_allclose(bpm, [120.0, (5 * 120 + 200) / 6, 60.0], rtol=1e-3)
    # The same numbers as the reference track's definition on the beat grid.
    expected = heart_rate_from_beats(beats[0], BEAT_FS, starts * 2.5, 1000)
    np.testing.assert_allclose(bpm, expected, rtol=1e-6)
    whole = heart_rate_from_beats(beats[0], BEAT_FS, np.array([0]), 2500)[0]
    assert abs(whole - bpm[2]) > 20                               # the record's rate is not the crop's
    assert np.isnan(crops.crop_heart_rate([np.array([10])], np.array([0]), np.array([0]), 400, FS, BEAT_FS)[0])


def test_crop_windows_and_random_starts():
    signals = np.arange(2 * 50 * 3, dtype=np.float32).reshape(2, 50, 3)
    got = crops.crop_windows(signals, np.array([1, 0]), np.array([2, 0]), np.array([5, 40]), 10)
    np.testing.assert_array_equal(got, [signals[1, 5:15, 2], signals[0, 40:50, 0]])
    starts = crops.random_starts(np.random.default_rng(0), 50, 10, 1000)
    assert starts.min() == 0 and starts.max() == 40
    with pytest.raises(ValueError, match="longer"):
        crops.random_starts(np.random.default_rng(0), 5, 10, 1)


def test_crop_sampler_batches_fresh_labelled_crops():
    records = record_set([regular(60), regular(90), slowing(), regular(75), regular(50), regular(130)], CODES)
    sampler = sampling.CropSampler(records, crop_s=4.0, group_fractions=(0.4, 0.3, 0.3), noise_fraction=0.1)
    rng = np.random.default_rng(0)
    batch = sampler(rng, 200)
    assert batch.windows.shape == (200, 400, 1) and batch.windows.dtype == np.float32
    noise = batch.hr_class == NOISE
    assert 5 < noise.sum() < 40 and np.isnan(batch.af[noise]).all() and np.isnan(batch.hr_bpm[noise]).all()
    assert 0.2 < np.mean(batch.af[~noise]) < 0.4                   # the AF share asked for
    # Crop labels vary within the slowing record and stay in its range; regular records keep their rate.
    rates = np.round(batch.hr_bpm[~noise])
    assert set(rates) <= {60, 90, 75, 50, 130} | set(range(60, 135))
    assert len(set(rates)) > 5
    again = sampler(rng, 200)                                     # fresh crops every call
    assert not np.allclose(batch.windows[:20], again.windows[:20])
    # Both leads are used; V1 is inverted, so some crops peak below zero.
    clean = sampling.CropSampler(records, crop_s=4.0, augment=False, noise_fraction=0.0)(rng, 100)
    assert (clean.windows.min(axis=(1, 2)) < -0.3).any() and (clean.windows.max(axis=(1, 2)) > 0.6).any()


def test_crop_sampler_lead_weights_and_fixed_crops():
    records = record_set([regular(60), regular(90)], [{"SR": 100.0}, {"AFIB": 100.0}])
    only_v1 = sampling.CropSampler(records, crop_s=4.0, augment=False, noise_fraction=0.0, lead_weights={"V1": 1.0})
    assert (only_v1(np.random.default_rng(1), 20).windows.max(axis=(1, 2)) < 0.4).all()
    val = sampling.fixed_crops(records, "II", 8.0)
    assert val.windows.shape == (2, 800, 1) and val.af.tolist() == [0, 1]
    np.testing.assert_allclose(val.hr_bpm, [60, 90], rtol=1e-3)


def test_augment_records_changes_gain_but_keeps_shape():
    x = np.tile(spikes(regular(70))[None], (50, 1))
    y = sampling.augment_records(x, FS, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32
    spike = x - x.mean(axis=1, keepdims=True)                 # zero-mean: ~orthogonal to wander and noise
    gains = (y * spike).sum(1) / (x * spike).sum(1)
    assert 0.3 < gains.min() < 0.8 and 1.5 < gains.max() < 2.7


def test_records_cache_round_trip(tmp_path):
    records = record_set([regular(60), slowing()], CODES[:2])
    built = []
    first, cached = training_records.cached_records(str(tmp_path / "r.npz"), lambda: built.append(1) or records)
    second, cached_again = training_records.cached_records(str(tmp_path / "r.npz"), lambda: built.append(1) or records)
    assert built == [1] and not cached and cached_again
    np.testing.assert_array_equal(second.signals, records.signals)
    assert second.leads == ("II", "V1") and second.codes == records.codes and second.fs == FS
    assert [b.tolist() for b in second.beats] == [b.tolist() for b in records.beats]


def test_operating_point_threshold_for_sensitivity():
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.1, 0.2, 0.5, 0.58, 0.05])
    threshold = threshold_at_sensitivity(y, p, 0.9)
    assert threshold == pytest.approx(0.55)
    assert rates_at_threshold(y, p, threshold) == {"sensitivity": 0.9, "specificity": 0.75}
    assert np.isnan(threshold_at_sensitivity(np.zeros(3), p[:3]))


@pytest.mark.usefixtures("unoptimized_xla")  # flow and the operating point chosen on validation, not numbers
def test_train_heads_on_a_crop_sampler_stores_the_af_threshold():
    records = record_set([regular(60), regular(90), slowing(), regular(75), regular(50), regular(130)], CODES)
    sampler = sampling.CropSampler(records, crop_s=4.0)
    val = sampling.fixed_crops(records, "II", 4.0)
    encoder = {"name": "resnet18", "chan_start": 4, "in_leads": 1, "num_samples": 400}
    model = train_heads.train_heads(sampler, val, encoder_config=encoder, fs=FS, leads=("II",), window_s=4.0,
                                    steps=2, batch_size=8, log_every=1, log=lambda _: None)
    scores = model.history[-1]["val"]
    assert {"af_auroc", "af_threshold", "af_sensitivity", "af_specificity", "hr_bpm_mae"} <= set(scores)
    assert scores["af_sensitivity"] >= 0.9
    assert apply.af_threshold(model) == pytest.approx(scores["af_threshold"])


def test_load_records_from_ptbxl(ptbxl_dir):
    table = ptbxl.load_ptbxl_table(ptbxl_dir)
    rows = table[table["strat_fold"] == 9]
    rows = pd.concat([rows[rows["AFIB"] == 1].iloc[:2], rows[rows["AFIB"] != 1].iloc[:3]])
    records = training_records.load_records(str(ptbxl_dir), rows, fs=FS, leads=("II", "aVF", "V1"))
    assert records.signals.shape == (5, 1000, 3) and records.leads == ("II", "aVF", "V1")
    assert records.af.tolist() == [1, 1, 0, 0, 0] and records.group[:2].tolist() == [AF, AF]
    rates = [heart_rate_from_beats(b, BEAT_FS, np.array([0]), 2500)[0] for b in records.beats]
    assert all(30 < r < 200 for r in rates)
