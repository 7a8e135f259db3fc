"""Grain input pipelines over an ECGStore: pretraining views and fixed evaluation windows.

Pretraining (telemetry paper, §4.1): the source is indexed by *patient*, so an epoch draws one
random segment per patient; patients with many records are not over-weighted. Patients are
shuffled per epoch and batched; each batch then picks a random record and crop per patient with
the generator Grain derives from (seed, epoch, batch index), so batches are a pure function of the
seed and the iterator position: identical with 0 or N worker processes, and resumable from
`iterator.get_state()`.

    ds = make_pretrain_dataset(store, views=('segment', 'segment_aug'), batch_size=256,
                               segment_s=10.0, seed=0, augmentation='default', num_workers=2)
    it = iter(ds); batch = next(it); state = it.get_state(); ... it.set_state(state)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import grain
import numpy as np
import pandas as pd

from ecgjax.data.store import ECGStore

VIEWS = ("segment", "segment_aug", "patient_segment", "cpc")


@dataclasses.dataclass(frozen=True)
class CPCSpec:
    """Future prediction (Weimann & Conrad): n_context consecutive frames, then `offset` frames
    skipped, then the future frame. Needs (n_context + offset + 1) * frame_s seconds of signal."""

    n_context: int = 4
    frame_s: float = 1.0
    offset: int = 2

    def frame_samples(self, fs: float) -> int:
        return int(round(self.frame_s * fs))

    def span_samples(self, fs: float) -> int:
        return (self.n_context + self.offset + 1) * self.frame_samples(fs)


def _resolve_augmentation(augmentation, fs: float) -> Callable | None:
    """None (no augmentation), a callable (x [time, 12], rng) -> x, 'default'
    (augment.DEFAULT_AUGMENTATION), or names / a config for augment.build_augmentation."""
    if augmentation is None or callable(augmentation):
        return augmentation
    from ecgjax.data.augment import build_augmentation

    return build_augmentation(None if augmentation == "default" else augmentation, fs=fs)


class PatientViews:
    """Maps a batch of positions into the kept patients and a numpy Generator to a batch of views.

    Working on whole batches (one Generator per batch, arrays filled in place) keeps Grain's
    per-element overhead and the stacking copy out of the loop. Output (numpy), B = len(positions):
    'segment' [B, T, 12] f32, 'lead_mask' [B, 12] f32, 'patient' [B] int32 (store patient_index),
    and as asked: 'segment_aug' [B, T, 12] (second augmentation of the same crop),
    'patient_segment' [B, T, 12] (another record of the same patient where there is one, else
    another crop; augmented), 'context' [B, n_context, T_frame, 12] and 'future' [B, T_frame, 12]
    (unaugmented, from the anchor's record).
    """

    def __init__(self, store: ECGStore, records_by_patient: list[np.ndarray], patient_index: np.ndarray,
                 views: Sequence[str], segment_samples: int, augmentation: Callable | None, cpc: CPCSpec):
        self.store = store
        self.records_by_patient = records_by_patient  # store record indices, one array per position
        self.patient_index = patient_index
        self.views = tuple(views)
        self.segment_samples = segment_samples
        self.augmentation = augmentation
        self.cpc = cpc

    def _crop(self, record: int, length: int, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
        start = int(rng.integers(0, int(self.store.lengths[record]) - length + 1))
        return self.store.read(record, start, length, out=out)

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x if self.augmentation is None else np.asarray(self.augmentation(x, rng), np.float32)

    def __call__(self, positions, rng: np.random.Generator) -> dict:
        positions = np.asarray(positions).reshape(-1)
        size, length = len(positions), self.segment_samples
        frame = self.cpc.frame_samples(self.store.fs)
        shapes = {"segment": (length, 12), "segment_aug": (length, 12), "patient_segment": (length, 12),
                  "context": (self.cpc.n_context, frame, 12), "future": (frame, 12)}
        wanted = ["segment", *(k for k in ("segment_aug", "patient_segment") if k in self.views)]
        wanted += ["context", "future"] if "cpc" in self.views else []
        out = {key: np.empty((size, *shapes[key]), np.float32) for key in wanted}
        out["lead_mask"] = np.empty((size, 12), np.float32)
        out["patient"] = self.patient_index[positions].astype(np.int32)
        crop = np.empty((length, 12), np.float32)
        span = np.empty((self.cpc.span_samples(self.store.fs), 12), np.float32) if "cpc" in self.views else None
        for row, position in enumerate(positions):
            records = self.records_by_patient[position]
            record = int(records[rng.integers(len(records))])
            self._crop(record, length, rng, crop)
            out["segment"][row] = self._augment(crop, rng)
            out["lead_mask"][row] = self.store.lead_mask(record)
            if "segment_aug" in out:
                out["segment_aug"][row] = self._augment(crop, rng)
            if "patient_segment" in out:
                others = records[records != record] if len(records) > 1 else records
                other = int(others[rng.integers(len(others))])
                out["patient_segment"][row] = self._augment(self._crop(other, length, rng, crop), rng)
            if span is not None:
                frames = self._crop(record, len(span), rng, span).reshape(-1, frame, 12)
                out["context"][row] = frames[:self.cpc.n_context]
                out["future"][row] = frames[-1]
        return out


def _read_options(prefetch_batches: int) -> grain.ReadOptions:
    """Grain's default read-ahead is 500 elements on 16 threads; our elements are whole batches
    (a 128 x 3-view batch is ~46 MB), so that default would hold ~23 GB. Read a few ahead."""
    return grain.ReadOptions(num_threads=max(1, min(prefetch_batches, 4)),
                             prefetch_buffer_size=max(1, prefetch_batches))


def _prefetch(ds: grain.IterDataset, num_workers: int, buffer_size: int) -> grain.IterDataset:
    if num_workers <= 0:
        return ds
    from absl import flags

    if not flags.FLAGS.is_parsed():  # Grain workers read absl flags; outside absl.app.run use defaults
        flags.FLAGS.mark_as_parsed()
    from ecgjax.data.workers import GrainWorkerInit

    # Workers end with this process, even on kill -9 (they would block on a full queue forever).
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                       per_worker_buffer_size=buffer_size),
                          worker_init_fn=GrainWorkerInit())


def make_pretrain_dataset(store: ECGStore, *, views: Sequence[str] = ("segment",), batch_size: int,
                          segment_s: float = 10.0, seed: int = 0, split: str | None = "train",
                          augmentation=None, num_workers: int = 0, num_epochs: int | None = None,
                          cpc: CPCSpec = CPCSpec(), drop_remainder: bool = True,
                          worker_buffer_size: int = 2, prefetch_batches: int = 4) -> grain.IterDataset:
    """Batches of pretraining views; one random segment per patient per epoch.

    Args:
      views: any of VIEWS; 'segment', 'lead_mask' and 'patient' are always present.
      segment_s: crop length in seconds (T = segment_s * store.fs samples).
      split: 'train' / 'val' / 'test', or None for every patient.
      augmentation: None, callable (x [T, 12], rng) -> x, 'default', or names/config for
        `augment.build_augmentation`; applied independently to each augmented view.
      num_workers: Grain worker processes (0: in this process). Batches do not depend on it.
      num_epochs: None repeats forever (reshuffled and re-cropped each epoch).
      cpc: frames for the 'cpc' view ('context', 'future').
      prefetch_batches: batches read ahead in this process (memory: batches x batch size).
    Returns:
      A grain.IterDataset; `iter(ds)` gives a checkpointable iterator of dict batches with leading
      dimension batch_size (see PatientViews for keys and shapes). Restore a state into an
      iterator built with the same arguments, num_workers included (Grain's state layout differs).
    Records shorter than the longest crop asked for are skipped; patients left without records too.
    """
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)} (expected some of {VIEWS})")
    segment_samples = int(round(segment_s * store.fs))
    needed = max(segment_samples, cpc.span_samples(store.fs) if "cpc" in views else 0)
    patients = store.split_patients(split) if split is not None else np.arange(store.num_patients)
    long_enough = store.lengths >= needed
    records_by_patient, kept = [], []
    for patient in patients:
        records = store.records_of_patient(int(patient))
        records = records[long_enough[records]]
        if len(records):
            records_by_patient.append(records)
            kept.append(int(patient))
    if len(kept) < batch_size and drop_remainder:
        raise ValueError(f"{len(kept)} patients in split {split!r} with >= {needed} samples: "
                         f"fewer than batch_size {batch_size}")
    views_fn = PatientViews(store, records_by_patient, np.asarray(kept, np.int32), views, segment_samples,
                            _resolve_augmentation(augmentation, store.fs), cpc)
    # Positions are shuffled per epoch, then batched, then read: one Generator per batch, derived
    # by Grain from (seed, epoch, batch index).
    ds = (grain.MapDataset.range(len(kept)).seed(seed).shuffle()
          .repeat(num_epochs)
          .batch(batch_size, drop_remainder=drop_remainder)
          .random_map(views_fn))
    return _prefetch(ds.to_iter_dataset(_read_options(prefetch_batches)), num_workers, worker_buffer_size)


# ---------------------------------------------------------------------------------------------
# Evaluation: fixed, deterministic windows.
# ---------------------------------------------------------------------------------------------

def eval_windows(store: ECGStore, split: str | None, window_s: float = 10.0,
                 stride_s: float | None = None) -> np.ndarray:
    """[num_windows, 2] int64 (record index, start sample): every record of the split cut into
    windows of window_s every stride_s (default: non-overlapping); records shorter than one window
    give one window at 0 (zero-padded when read)."""
    window = int(round(window_s * store.fs))
    stride = int(round((stride_s or window_s) * store.fs))
    records = store.split_indices(split) if split is not None else np.arange(len(store))
    pairs = []
    for record in records:
        length = int(store.lengths[record])
        starts = np.arange(0, max(length - window, 0) + 1, stride)
        pairs.append(np.stack([np.full(len(starts), record), starts], axis=1))
    return np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)


class _ReadWindow:
    def __init__(self, store: ECGStore, window: int, label_columns: Sequence[str]):
        self.store = store
        self.window = window
        self.labels = (store.metadata[list(label_columns)].to_numpy(np.float32) if label_columns
                       else np.zeros((len(store), 0), np.float32))
        self.patient = store.metadata["patient_index"].to_numpy(np.int32)

    def __call__(self, pair) -> dict:
        record, start = int(pair[0]), int(pair[1])
        length = min(self.window, int(self.store.lengths[record]) - start)
        segment = np.zeros((self.window, 12), np.float32)
        segment[:length] = self.store.read(record, start, length)
        return {"segment": segment, "lead_mask": self.store.lead_mask(record).astype(np.float32),
                "record_index": np.int32(record), "patient": self.patient[record],
                "start": np.int32(start), "labels": self.labels[record]}


def make_eval_dataset(store: ECGStore, split: str | None, *, window_s: float = 10.0,
                      stride_s: float | None = None, batch_size: int = 256,
                      label_columns: Sequence[str] | None = None, num_workers: int = 0) -> grain.IterDataset:
    """Batches of fixed windows (no randomness, every window once, last batch may be smaller).

    Keys: 'segment' [B, T, 12] f32, 'lead_mask' [B, 12] f32, 'record_index' [B] int32,
    'patient' [B] int32, 'start' [B] int32 (sample), 'labels' [B, num_labels] f32
    (label_columns, default the store's label columns).
    """
    label_columns = store.label_columns() if label_columns is None else list(label_columns)
    pairs = eval_windows(store, split, window_s, stride_s)
    ds = (grain.MapDataset.source(pairs)
          .map(_ReadWindow(store, int(round(window_s * store.fs)), label_columns))
          .batch(batch_size))
    return _prefetch(ds.to_iter_dataset(_read_options(4)), num_workers, 2)


@dataclasses.dataclass
class SplitArrays:
    """One window per record of a split, in memory, for small-scale probing."""

    signals: np.ndarray        # [N, T, 12] float32 mV
    lead_mask: np.ndarray      # [N, 12] bool
    labels: np.ndarray         # [N, num_labels] float32
    label_names: list[str]
    patient: np.ndarray        # [N] int32 patient_index
    record_index: np.ndarray   # [N] int64 store index
    metadata: pd.DataFrame     # the N metadata rows


def load_split_arrays(store: ECGStore, split: str | None, *, window_s: float = 10.0, offset_s: float = 0.0,
                      label_columns: Sequence[str] | None = None, max_records: int | None = None) -> SplitArrays:
    """The window [offset_s, offset_s + window_s) of every record in `split` (zero-padded if short)."""
    label_columns = store.label_columns() if label_columns is None else list(label_columns)
    records = store.split_indices(split) if split is not None else np.arange(len(store))
    if max_records is not None:
        records = records[:max_records]
    window, offset = int(round(window_s * store.fs)), int(round(offset_s * store.fs))
    reader = _ReadWindow(store, window, label_columns)
    signals = np.zeros((len(records), window, 12), np.float32)
    for row, record in enumerate(records):
        start = min(offset, max(int(store.lengths[record]) - window, 0))
        signals[row] = reader((record, start))["segment"]
    metadata = store.metadata.iloc[records].reset_index(drop=True)
    return SplitArrays(signals=signals, lead_mask=np.stack([store.lead_mask(r) for r in records]).astype(bool)
                       if len(records) else np.zeros((0, 12), bool),
                       labels=reader.labels[records], label_names=label_columns,
                       patient=reader.patient[records], record_index=records.astype(np.int64), metadata=metadata)
