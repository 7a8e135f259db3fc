"""The ECGStore a data config names: its `store` folder, or the embedded synthetic cohort.

    store = open_store(config.data)                        # pretraining, benchmarks
    store = open_store(pretrain_config.data, store=path)   # evaluation: a store given there wins

The data config (ecgjax/config.py) holds `store` (a folder; '' for the synthetic cohort), `fs` (Hz)
and `synthetic` (num_patients, records_per_patient, seed, cache_dir). The synthetic cohort is built
once into a folder of the cache dir named after it and opened from there afterwards.
"""
from __future__ import annotations

import os
import pathlib

import ml_collections

from ecgjax.data.ingest import build_synthetic_store
from ecgjax.data.store import ECGStore


def synthetic_store_dir(data: ml_collections.ConfigDict) -> pathlib.Path:
    """cache_dir/synthetic-p<patients>-r<records>-s<seed>-<fs>hz: one folder per distinct cohort."""
    syn = data.synthetic
    return pathlib.Path(os.path.expanduser(syn.cache_dir)) / (
        f"synthetic-p{syn.num_patients}-r{syn.records_per_patient}-s{syn.seed}-{data.fs:g}hz")


def open_store(data: ml_collections.ConfigDict, store: str = "") -> ECGStore:
    """The store at `store` if given, else at data.store, else the synthetic cohort of `data`."""
    folder = store or data.store
    if folder:
        return ECGStore(os.path.expanduser(folder))
    syn = data.synthetic
    return build_synthetic_store(synthetic_store_dir(data), syn.num_patients, syn.records_per_patient, syn.seed,
                                 target_fs=data.fs)
