"""001's heart-rate pretext as a pretraining method: beats detected once per store, each crop
labelled from them, and the `hr` method pretraining through the normal loop."""
from __future__ import annotations

import json

import numpy as np
import pytest

from configs import heart_rate as heart_rate_config
from ecgjax.data import beats as beats_lib
from ecgjax.data.ingest import ingest_records
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.pipeline import make_pretrain_dataset
from ecgjax.data.record import ECGRecord
from ecgjax.data.splits import SplitConfig
from ecgjax.data.store import ECGStore
from ecgjax.methods import registry
from ecgjax.signal.heart_rate import BRADYCARDIA, NOISE, NORMAL, TACHYCARDIA
from ecgjax.train import cost, loop
from ecgjax.train.checkpoint import Checkpointer

FS = 250.0
# One patient per rate; each record a steady rhythm, so every crop of it has the patient's class.
RATES = {45.0: BRADYCARDIA, 80.0: NORMAL, 130.0: TACHYCARDIA}


def _rhythm(bpm: float, seconds: float, seed: int) -> np.ndarray:
    """[time, 12] mV: QRS-like spikes (with a small S wave and a T wave) at a steady `bpm`, on
    baseline wander and noise; lead amplitudes differ so no lead is a copy of another."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    x = 0.02 * rng.normal(size=t.size) + 0.1 * np.sin(2 * np.pi * 0.3 * t)
    for beat in np.arange(rng.uniform(0.1, 0.6), seconds, 60.0 / bpm):
        x += (1.5 * np.exp(-0.5 * ((t - beat) / 0.012) ** 2) - 0.3 * np.exp(-0.5 * ((t - beat - 0.03) / 0.015) ** 2)
              + 0.3 * np.exp(-0.5 * ((t - beat - 0.3) / 0.05) ** 2))
    return (x[:, None] * np.linspace(0.5, 1.2, 12)[None]).astype(np.float32)


@pytest.fixture(scope="module")
def rhythm_store(tmp_path_factory):
    """3 patients (45, 80, 130 bpm) x 2 records of 12 s, all in the training split."""
    records = [ECGRecord(signal=_rhythm(bpm, 12.0, seed=10 * p + k), fs=FS, lead_names=CANONICAL_LEADS,
                         record_id=f"r{p}_{k}", patient_id=f"p{p}", source="test")
               for p, bpm in enumerate(RATES) for k in range(2)]
    path = tmp_path_factory.mktemp("rhythms")
    ingest_records(records, path, shard_size=4, split=SplitConfig(val_fraction=0.0, test_fraction=0.0))
    return ECGStore(path)


def test_beats_are_detected_once_and_give_each_record_its_rate(rhythm_store):
    index = beats_lib.load_or_build(rhythm_store)
    assert (rhythm_store.path / "beats" / "offsets.npy").is_file()
    for record in range(len(rhythm_store)):
        bpm = list(RATES)[int(rhythm_store.metadata["patient_index"][record])]
        beats = index.of(record)
        # Spikes every 60 / bpm s over 12 s: one beat each, at the store's rate (samples).
        assert abs(beats.size - 12.0 * bpm / 60.0) <= 1, (record, beats)
        np.testing.assert_allclose(np.median(np.diff(beats)), 60.0 * FS / bpm, atol=1.0)
    again = beats_lib.load(rhythm_store)  # read back (memory-mapped), not detected again
    np.testing.assert_array_equal(again.positions, index.positions)


def test_a_crop_is_labelled_from_its_beats_and_no_beats_is_noise():
    index = beats_lib.BeatIndex(positions=np.array([100, 300, 500, 700], np.int32), offsets=np.array([0, 4, 4]))
    # 200-sample intervals at 250 Hz = 75 bpm; the 1 s margin (250 samples) reaches the beats.
    assert index.heart_rate_class(0, start=350, length=100, fs=FS) == NORMAL
    assert index.heart_rate_class(0, start=2000, length=500, fs=FS) == NOISE  # no beat within reach
    assert index.heart_rate_class(1, start=0, length=500, fs=FS) == NOISE     # a record without beats


def test_the_heart_rate_view_labels_every_crop(rhythm_store):
    ds = make_pretrain_dataset(rhythm_store, views=("segment", "heart_rate"), batch_size=3, segment_s=2.0,
                               seed=0, num_epochs=4)
    seen = 0
    for batch in ds:
        assert batch["heart_rate_class"].dtype == np.int32 and batch["segment"].shape == (3, 500, 12)
        expected = [RATES[list(RATES)[p]] for p in batch["patient"]]
        np.testing.assert_array_equal(batch["heart_rate_class"], expected)
        seen += 1
    assert seen == 4


def test_a_cost_batch_draws_labels_from_the_method_label_space():
    """train.cost asks the method for its classes: the random batch it compiles a step with holds
    every heart-rate class and no other value."""
    config = heart_rate_config.get_config("runlocal")
    assert registry.get(config.objective.method).label_classes() == {"heart_rate_class": 4}
    labels = cost.random_host_batch(config, 64)["heart_rate_class"]
    assert labels.dtype == np.int32 and set(labels.tolist()) == {BRADYCARDIA, NORMAL, TACHYCARDIA, NOISE}


def test_a_stale_beat_index_is_refused_by_name(rhythm_store, tmp_path):
    beats_lib.load_or_build(rhythm_store)
    offsets = rhythm_store.path / "beats" / "offsets.npy"
    saved = np.load(offsets)
    try:
        np.save(offsets, saved[:-1])
        with pytest.raises(ValueError, match=r"beats of 5 records, the store has 6; delete .*beats"):
            beats_lib.load(rhythm_store)
    finally:
        np.save(offsets, saved)


@pytest.mark.usefixtures("unoptimized_xla")  # a drop of a third: far beyond what rounding changes
def test_hr_pretrains_through_the_loop(tmp_path):
    config = heart_rate_config.get_config("runlocal")
    config.update_from_flattened_dict({
        "data.synthetic.num_patients": 24, "data.synthetic.records_per_patient": 2,
        "data.synthetic.cache_dir": str(tmp_path / "cache"), "train.batch_size": 8, "train.num_steps": 12,
        "train.checkpoint_every": 6, "train.log_every": 1, "optim.lr": 1e-3})
    workdir = tmp_path / "run"
    loop.pretrain(config, str(workdir))
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = np.array([row["heart_rate"] for row in rows])
    assert np.isfinite(losses).all() and all(0.0 <= row["heart_rate_accuracy"] <= 1.0 for row in rows)
    np.testing.assert_allclose(losses, [row["loss"] for row in rows])  # its one term, weight 1
    # From ln 4 = 1.39 at chance the class prior alone (mostly 'normal' in the synthetic cohort)
    # is learnt within a few Adam steps at lr 1e-3: a drop of a third, far beyond step-to-step noise.
    assert losses[-4:].mean() < losses[:4].mean()
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    assert ckpt.latest_step() == 12
    ckpt.close()
    _, _, variables = loop.restore_pretrained(str(workdir))
    assert set(variables["params"]) == {"encoder", "heart_rate_head"}
