"""Grain pipelines: one segment per patient per epoch, the views, determinism, iterator restore."""
import numpy as np
import pytest

from ecgjax.data.ingest import build_synthetic_store, ingest_records
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.pipeline import CPCSpec, make_pretrain_dataset
from ecgjax.data.record import ECGRecord
from ecgjax.data.splits import SplitConfig
from ecgjax.data.store import ECGStore

FS, NUM_PATIENTS, SAMPLES = 250.0, 16, 2500


def _coded_records():
    """Records whose samples say where they come from (`_decode`); patient p has p % 3 + 1 records.

    Lead I = t // 50 and aVR = t % 50 (sample number t, in range of the ±60 mV rule and exact in
    float16), lead II = patient, lead III = record number (plus a ripple: flat leads are rejected).
    """
    t = np.arange(SAMPLES)
    ripple = 0.01 * np.sin(t / 10.0)
    records = []
    for patient in range(NUM_PATIENTS):
        for k in range(patient % 3 + 1):
            signal = np.tile(np.sin(t / 10.0)[:, None], (1, 12)).astype(np.float32)
            signal[:, 0], signal[:, 3] = t // 50, t % 50
            signal[:, 1], signal[:, 2] = patient + ripple, k + ripple
            records.append(ECGRecord(signal=signal, fs=FS, lead_names=CANONICAL_LEADS, record_id=f"r{patient}_{k}",
                                     patient_id=f"p{patient:02d}", source="test", metadata={"sick": patient % 2 == 1}))
    return records


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    path = tmp_path_factory.mktemp("coded")
    ingest_records(_coded_records(), path, shard_size=7, split=SplitConfig(val_fraction=0.0, test_fraction=0.0))
    return ECGStore(path)


def _decode(x):
    """[..., time, 12] -> (sample number [..., time], patient [..., time], record number [..., time])."""
    r = np.round(x).astype(int)
    return 50 * r[..., 0] + r[..., 3], r[..., 1], r[..., 2]


def _add_noise(x, rng):
    return x + rng.normal(0, 0.01, x.shape).astype(np.float32)


def _batches(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_an_epoch_is_one_segment_per_patient_with_all_views(coded):
    cpc = CPCSpec(n_context=3, frame_s=1.0, offset=2)
    ds = make_pretrain_dataset(coded, views=("segment", "segment_aug", "patient_segment", "cpc"), batch_size=4,
                               segment_s=2.0, seed=0, augmentation=_add_noise, num_epochs=2, cpc=cpc)
    batches = list(ds)
    assert len(batches) == 2 * NUM_PATIENTS // 4
    for epoch in (batches[:4], batches[4:]):
        assert sorted(np.concatenate([b["patient"] for b in epoch])) == list(range(NUM_PATIENTS))
    b = batches[0]
    assert b["segment"].shape == b["segment_aug"].shape == b["patient_segment"].shape == (4, 500, 12)
    assert b["context"].shape == (4, 3, 250, 12) and b["future"].shape == (4, 250, 12)
    assert b["lead_mask"].shape == (4, 12) and b["lead_mask"].dtype == np.float32 and b["patient"].dtype == np.int32
    for batch in batches:
        patient = batch["patient"][:, None]
        for key in ("segment", "segment_aug", "patient_segment"):  # every view comes from its own patient
            assert (_decode(batch[key])[1] == patient).all()
        assert (_decode(batch["context"])[1] == patient[:, :, None]).all()
        # sample-level positive: same crop, independent noise
        np.testing.assert_allclose(batch["segment"], batch["segment_aug"], atol=0.1)
        assert not np.array_equal(batch["segment"], batch["segment_aug"])
        # contiguous crops; CPC frames consecutive, future `offset` frames after the context
        time, _, record = _decode(batch["segment"])
        np.testing.assert_array_equal(time - time[:, :1], np.broadcast_to(np.arange(500), (4, 500)))
        context_time, _, context_record = _decode(batch["context"])
        future_time, _, future_record = _decode(batch["future"])
        np.testing.assert_array_equal(context_time.reshape(4, -1) - context_time[:, :1, 0],
                                      np.broadcast_to(np.arange(750), (4, 750)))
        np.testing.assert_array_equal(future_time[:, 0] - context_time[:, 0, 0], (3 + 2) * 250)
        assert (future_record[:, :1] == context_record[:, 0, :1]).all()
        # patient-level positive comes from another record whenever the patient has one
        several = batch["patient"] % 3 > 0
        other_record = _decode(batch["patient_segment"])[2]
        assert (other_record[several, 0] != record[several, 0]).all()


def test_same_seed_same_batches_and_epochs_differ(coded):
    kwargs = dict(views=("segment", "segment_aug"), batch_size=4, segment_s=2.0, augmentation=_add_noise)
    a = _batches(make_pretrain_dataset(coded, seed=1, **kwargs), 8)
    b = _batches(make_pretrain_dataset(coded, seed=1, **kwargs), 8)
    c = _batches(make_pretrain_dataset(coded, seed=2, **kwargs), 8)
    _assert_same(a, b)
    assert not np.array_equal(a[0]["segment"], c[0]["segment"])
    # epoch 2 (batches 4..7) reshuffles the patients and draws new crops
    assert not np.array_equal(np.concatenate([x["patient"] for x in a[:4]]),
                              np.concatenate([x["patient"] for x in a[4:]]))


def _assert_same(batches, expected):
    for got, want in zip(batches, expected, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_workers_do_not_change_the_batches_and_restore_continues_exactly(tmp_path):
    store = build_synthetic_store(tmp_path, num_patients=12, records_per_patient=2, seed=0)
    kwargs = dict(views=("segment", "patient_segment"), batch_size=3, segment_s=4.0, seed=7, split=None,
                  augmentation=_add_noise)
    # 6 batches of 3 over 12 patients: the restore point (after 3) is mid-epoch.
    serial_it = iter(make_pretrain_dataset(store, num_workers=0, **kwargs))
    serial = [next(serial_it) for _ in range(3)]
    serial_state = serial_it.get_state()
    serial += [next(serial_it) for _ in range(3)]
    restored = iter(make_pretrain_dataset(store, num_workers=0, **kwargs))
    restored.set_state(serial_state)
    _assert_same([next(restored) for _ in range(3)], serial[3:])

    parallel_it = iter(make_pretrain_dataset(store, num_workers=2, **kwargs))
    parallel = [next(parallel_it) for _ in range(3)]
    parallel_state = parallel_it.get_state()
    _assert_same(parallel, serial[:3])
    # A state is restored into an iterator with the same num_workers (Grain's state layout differs).
    restored = iter(make_pretrain_dataset(store, num_workers=2, **kwargs))
    restored.set_state(parallel_state)
    _assert_same([next(restored) for _ in range(3)], serial[3:])


def _epoch_patients(ds, batches_per_epoch, epochs):
    """[epochs] sorted patient lists, one per epoch of `ds`."""
    it = iter(ds)
    return [np.sort(np.concatenate([next(it)["patient"] for _ in range(batches_per_epoch)]))
            for _ in range(epochs)]


def test_process_shards_are_disjoint_and_cover_the_split_each_epoch(coded):
    """Two processes of a batch of 8: each reads its own 8 of the 16 patients in batches of 4;
    per epoch the global batches hold every patient exactly once."""
    kwargs = dict(views=("segment",), batch_size=4, segment_s=2.0, seed=3)
    shards = [make_pretrain_dataset(coded, shard_index=i, shard_count=2, **kwargs) for i in range(2)]
    per_shard = [_epoch_patients(ds, 2, 3) for ds in shards]
    for epoch in range(3):
        a, b = per_shard[0][epoch], per_shard[1][epoch]
        assert not set(a) & set(b)
        assert sorted([*a, *b]) == list(range(NUM_PATIENTS))
        # a shard is the same patients every epoch: a process reads only its part of the store
        assert list(a) == list(per_shard[0][0])
    # the crops of a patient come from that patient's records, and the shards draw independent crops
    first = [next(iter(ds)) for ds in shards]
    for batch in first:
        assert (_decode(batch["segment"])[1] == batch["patient"][:, None]).all()
    assert not np.array_equal(_decode(first[0]["segment"])[0][:, 0], _decode(first[1]["segment"])[0][:, 0])


def test_unequal_shards_stay_in_step(coded):
    """16 patients over 3 processes (6, 5, 5) in batches of 2: every shard gives 2 batches per
    epoch (those of the smallest), no patient twice in an epoch, and every patient over epochs."""
    kwargs = dict(views=("segment",), batch_size=2, segment_s=2.0, seed=0)
    epochs = [_epoch_patients(make_pretrain_dataset(coded, shard_index=i, shard_count=3, num_epochs=8, **kwargs), 2, 8)
              for i in range(3)]
    for i in range(3):
        shard = set(range(NUM_PATIENTS)[i::3])
        assert all(set(e) <= shard and len(set(e)) == 4 for e in epochs[i])
        assert set(np.concatenate(epochs[i])) == shard  # the patients cut from an epoch differ
        assert len(list(make_pretrain_dataset(coded, shard_index=i, shard_count=3, num_epochs=8, **kwargs))) == 16
    with pytest.raises(ValueError, match="fewer than batch_size 4 x 5 processes"):
        make_pretrain_dataset(coded, shard_index=0, shard_count=5, **dict(kwargs, batch_size=4))
    with pytest.raises(ValueError, match="shard 3 of 3"):
        make_pretrain_dataset(coded, shard_index=3, shard_count=3, **kwargs)


def test_an_epoch_is_whole_batches_and_batches_never_mix_epochs(coded):
    """16 patients in batches of 5: 3 batches per epoch, each epoch 15 different patients."""
    epochs = _epoch_patients(make_pretrain_dataset(coded, views=("segment",), batch_size=5, segment_s=2.0),
                             3, 4)
    assert all(len(set(e)) == 15 for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # a different patient is left out each epoch


def test_bad_arguments(coded):
    with pytest.raises(ValueError, match="unknown views"):
        make_pretrain_dataset(coded, views=("segment", "jigsaw"), batch_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_pretrain_dataset(coded, batch_size=64, segment_s=2.0)
    with pytest.raises(ValueError, match="fewer than batch_size"):  # no record is 20 s long
        make_pretrain_dataset(coded, batch_size=2, segment_s=20.0)
