"""ECGStore: O(1) reads that match what was ingested, patient lookup, lazy per-shard maps, pickling."""
import pickle

import numpy as np
import pytest

from ecgjax.data import store as store_lib
from ecgjax.data.ingest import build_synthetic_store
from ecgjax.data.synthetic import generate_cohort

NUM_PATIENTS, RECORDS = 6, 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # shard_size counts patients for the synthetic source: 6 patients -> 3 shards of 2.
    return build_synthetic_store(tmp_path_factory.mktemp("store"), NUM_PATIENTS, RECORDS, seed=3, shard_size=2)


def test_reads_match_the_cohort_within_float16_rounding(store):
    cohort = {r.record_id: r for r in generate_cohort(NUM_PATIENTS, RECORDS, seed=3)}
    assert len(store) == NUM_PATIENTS * RECORDS and store.fs == 250.0
    assert store.config["num_shards"] == 3
    for i, row in store.metadata.iterrows():
        expected = cohort[row.record_id].signal
        got = store.read(i)
        assert got.dtype == np.float32 and got.shape == expected.shape == (row.num_samples, 12)
        np.testing.assert_allclose(got, expected, rtol=2 ** -10, atol=1e-4)


def test_read_window_is_the_slice_of_the_full_record(store):
    full = store.read(7)
    np.testing.assert_array_equal(store.read(7, start=100, length=250), full[100:350])
    np.testing.assert_array_equal(store.read(7, start=2400), full[2400:])
    with pytest.raises(IndexError):
        store.read(7, start=2400, length=101)
    with pytest.raises(IndexError):
        store.read(7, start=-1, length=10)


def test_patient_lookup_and_metadata(store):
    meta = store.metadata
    assert store.num_patients == NUM_PATIENTS
    for patient in range(NUM_PATIENTS):
        records = store.records_of_patient(patient)
        assert len(records) == RECORDS
        assert set(meta.patient_index.iloc[records]) == {patient}
        assert meta.patient_id.iloc[records].nunique() == 1
    assert {"record_id", "patient_id", "patient_index", "source", "original_fs", "num_samples",
            "split"} <= set(meta.columns)
    assert store.label_columns() and set(store.label_columns()) <= set(meta.columns)
    assert store.lead_mask(0).dtype == bool and store.lead_mask(0).all()


def test_maps_are_opened_lazily_per_shard_and_dropped_when_pickled(store):
    fresh = store_lib.ECGStore(store.path)
    assert fresh._maps == {}
    fresh.read(0)
    fresh.read(1)
    assert len(fresh._maps) == 1  # one memory map per shard, not per record
    clone = pickle.loads(pickle.dumps(fresh))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone.read(len(clone) - 1), store.read(len(store) - 1))


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an ECG store"):
        store_lib.ECGStore(tmp_path)
