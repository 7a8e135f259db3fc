"""Grain input pipelines over an ECGStore: the pretraining views.

Pretraining (telemetry paper, §4.1): the source is indexed by *patient*, so an epoch draws one
random segment per patient; patients with many records are not over-weighted. Patients are
shuffled per epoch and batched; each batch then picks a random record and crop per patient with
the generator Grain derives from (seed, epoch, batch index), so batches are a pure function of the
seed and the iterator position: identical with 0 or N worker processes, and resumable from
`iterator.get_state()`. An epoch is a whole number of batches: the patients left over after the
last full batch are a different few each epoch, and no batch mixes two epochs.

Several processes (ecgjax.train.multihost): process i of n reads only shard i of the patients
(`shard_index`, `shard_count`: every n-th patient, disjoint, together the whole split) and yields
its share of each global batch. Every shard has the same number of batches per epoch, so an epoch
of the global batch is still at most one segment per patient, in step across processes.

    ds = make_pretrain_dataset(store, views=('segment', 'patient_segment'), batch_size=256,
                               segment_s=10.0, seed=0, num_workers=2)
    it = iter(ds); batch = next(it); state = it.get_state(); ... it.set_state(state)

The loader only reads and crops: pretraining augments the crops on the device, inside the jitted
step (ecgjax.data.augment, ecgjax.train.step.augment_views).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import grain
import numpy as np

from ecgjax.data import beats as beats_lib
from ecgjax.data.beats import BeatIndex
from ecgjax.data.store import ECGStore
from ecgjax.data.workers import GrainWorkerInit
from ecgjax.errors import UserError

VIEWS = ("segment", "segment_aug", "patient_segment", "cpc", "heart_rate")


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


def view_arrays(views: Sequence[str], segment_samples: int, cpc: CPCSpec, fs: float,
                leads: int = 12) -> dict[str, tuple[tuple[int, ...], str]]:
    """{key: (per-example shape, 'signal' or a dtype name)} of the arrays a batch of `views` holds
    ('signal' arrays take the loader's dtype); 'segment', 'lead_mask' and 'patient' always."""
    out = {"segment": ((segment_samples, leads), "signal")}
    for view in views:
        if view in ("segment_aug", "patient_segment"):
            out[view] = ((segment_samples, leads), "signal")
        elif view == "cpc":
            frame = cpc.frame_samples(fs)
            out["context"] = ((cpc.n_context, frame, leads), "signal")
            out["future"] = ((frame, leads), "signal")
        elif view == "heart_rate":  # 001's class of the 'segment' crop, from the store's beats
            out["heart_rate_class"] = ((), "int32")
    out["lead_mask"] = ((leads,), "float32")
    out["patient"] = ((), "int32")
    return out


def _resolve_augmentation(augmentation, fs: float | None = None) -> Callable | None:
    """None, or a host-side callable (x [time, 12], rng) -> x for experiments and tests."""
    del fs  # the device augmentation takes fs from the config
    if augmentation is None or callable(augmentation):
        return augmentation
    raise UserError(f"augmentation={augmentation!r}: the loader only reads and crops; the pretraining "
                    f"step augments on the device (config.data.augmentation, ecgjax.data.augment). "
                    f"Pass a callable (x, rng) -> x here only for a host-side transform.")


@dataclasses.dataclass(frozen=True)
class PatientRecords:
    """The usable records of every kept patient as flat arrays (no per-patient Python objects).

    patients: [P] int32 store patient_index, ascending. records: [R] int64 store record indices,
    grouped by patient in store order; patient k's are records[offsets[k]:offsets[k + 1]].
    """

    patients: np.ndarray
    offsets: np.ndarray
    records: np.ndarray

    @classmethod
    def from_store(cls, store: ECGStore, split: str | None, min_samples: int) -> "PatientRecords":
        """Records of `split` (None: all) with at least min_samples samples; patients without any
        such record are left out."""
        usable = store.lengths >= min_samples
        if split is not None:
            usable &= store.metadata["split"].to_numpy() == split
        records = np.flatnonzero(usable)
        patient_of = store.metadata["patient_index"].to_numpy()[records]
        order = np.argsort(patient_of, kind="stable")
        records, patient_of = records[order].astype(np.int64), patient_of[order]
        patients, starts = np.unique(patient_of, return_index=True)
        offsets = np.append(starts, len(records)).astype(np.int64)
        return cls(patients.astype(np.int32), offsets, records)

    def __len__(self) -> int:
        return len(self.patients)

    def of(self, position: int) -> np.ndarray:
        """[n] record indices of the patient at `position`."""
        return self.records[self.offsets[position]:self.offsets[position + 1]]


def shard_positions(num_patients: int, shard_index: int, shard_count: int) -> np.ndarray:
    """Positions of shard `shard_index` of `shard_count`: every shard_count-th patient. Disjoint
    shards covering all positions; sizes differ by at most one."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard {shard_index} of {shard_count}: need 0 <= shard_index < shard_count")
    return np.arange(shard_index, num_patients, shard_count, dtype=np.int64)


def shard_seed(seed: int, shard_index: int, shard_count: int) -> int:
    """The shuffle/crop seed of one shard: `seed` itself for a single shard (one process), else
    one derived from (seed, shard) so shards draw independent crops."""
    if shard_count == 1:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), shard_index, shard_count]).generate_state(1)[0])


class PatientViews:
    """Maps a batch of positions into the kept patients and a numpy Generator to a batch of views.

    Working on whole batches (one Generator per batch, crops read straight into the output
    arrays) keeps Grain's per-element overhead and any intermediate copy out of the loop. Output
    (numpy), B = len(positions), float arrays in `dtype`: 'segment' [B, T, 12], 'lead_mask'
    [B, 12] f32, 'patient' [B] int32 (store patient_index), and as asked: 'segment_aug' [B, T, 12]
    (the same crop, transformed again by a host `augmentation`), 'patient_segment' [B, T, 12]
    (another record of the same patient where there is one, else another crop), 'context'
    [B, n_context, T_frame, 12] and 'future' [B, T_frame, 12] (from the anchor's record, never
    transformed), 'heart_rate_class' [B] int32 (001's class of the 'segment' crop, `beats`).
    """

    def __init__(self, store: ECGStore, patient_records: PatientRecords, views: Sequence[str],
                 segment_samples: int, augmentation: Callable | None, cpc: CPCSpec, dtype=np.float32,
                 beats: BeatIndex | None = None):
        if "heart_rate" in views and beats is None:
            raise ValueError("the 'heart_rate' view needs the store's beats (ecgjax.data.beats)")
        self.beats = beats
        self.store = store
        self.patient_records = patient_records
        self.views = tuple(views)
        self.segment_samples = segment_samples
        self.augmentation = augmentation
        self.cpc = cpc
        self.dtype = np.dtype(dtype)

    def _start(self, record: int, length: int, rng: np.random.Generator) -> int:
        return int(rng.integers(0, int(self.store.lengths[record]) - length + 1))

    def _crop(self, record: int, length: int, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
        return self.store.read(record, self._start(record, length, rng), length, out=out)

    def _view(self, record: int, start: int, rng: np.random.Generator, out: np.ndarray,
              crop: np.ndarray) -> np.ndarray:
        """The crop of `record` at `start` into `out` ([T, 12]), through the host augmentation if
        there is one; returns the unaugmented crop."""
        if self.augmentation is None:
            return self.store.read(record, start, self.segment_samples, out=out)
        self.store.read(record, start, self.segment_samples, out=crop)
        out[...] = self.augmentation(crop, rng)
        return crop

    def __call__(self, positions, rng: np.random.Generator) -> dict:
        positions = np.asarray(positions).reshape(-1)
        size, length, fs = len(positions), self.segment_samples, self.store.fs
        out = {key: np.empty((size, *shape), self.dtype if kind == "signal" else kind)
               for key, (shape, kind) in view_arrays(self.views, length, self.cpc, fs).items()}
        out["patient"] = self.patient_records.patients[positions]
        crop = np.empty((length, 12), np.float32)
        span = np.empty((self.cpc.span_samples(fs), 12), self.dtype) if "cpc" in self.views else None
        for row, position in enumerate(positions):
            records = self.patient_records.of(position)
            record = int(records[rng.integers(len(records))])
            start = self._start(record, length, rng)
            anchor = self._view(record, start, rng, out["segment"][row], crop)
            out["lead_mask"][row] = self.store.lead_mask(record)
            if "heart_rate_class" in out:
                out["heart_rate_class"][row] = self.beats.heart_rate_class(record, start, length, fs)
            if "segment_aug" in out:
                if self.augmentation is None:
                    out["segment_aug"][row] = anchor
                else:
                    out["segment_aug"][row] = self.augmentation(anchor, rng)
            if "patient_segment" in out:
                others = records[records != record] if len(records) > 1 else records
                other = int(others[rng.integers(len(others))])
                self._view(other, self._start(other, length, rng), rng, out["patient_segment"][row], crop)
            if span is not None:
                frames = self._crop(record, len(span), rng, span).reshape(-1, *out["future"].shape[1:])
                out["context"][row] = frames[:self.cpc.n_context]
                out["future"][row] = frames[-1]
        return out


class TooFewPatients(UserError):
    """A split with fewer usable patients than one batch takes (one segment per patient per batch)."""

    def __init__(self, patients: int, split: str | None, needed: int, batch_size: int, shard_count: int = 1):
        self.patients, self.split, self.needed = patients, split, needed
        self.batch_size, self.shard_count = batch_size, shard_count
        share = f" x {shard_count} processes" if shard_count > 1 else ""
        super().__init__(f"{patients} patients in split {split!r} with >= {needed} samples: "
                         f"fewer than batch_size {batch_size}{share}")


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
    # Workers end with this process, even on kill -9 (they would block on a full queue forever).
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                       per_worker_buffer_size=buffer_size),
                          worker_init_fn=GrainWorkerInit())


def make_pretrain_dataset(store: ECGStore, *, views: Sequence[str] = ("segment",), batch_size: int,
                          segment_s: float = 10.0, seed: int = 0, split: str | None = "train",
                          augmentation=None, num_workers: int = 0, num_epochs: int | None = None,
                          cpc: CPCSpec = CPCSpec(), drop_remainder: bool = True,
                          worker_buffer_size: int = 2, prefetch_batches: int = 4,
                          shard_index: int = 0, shard_count: int = 1, dtype=np.float32) -> grain.IterDataset:
    """Batches of pretraining views; one random segment per patient per epoch.

    Args:
      views: any of VIEWS; 'segment', 'lead_mask' and 'patient' are always present.
      segment_s: crop length in seconds (T = segment_s * store.fs samples).
      split: 'train' / 'val' / 'test', or None for every patient.
      augmentation: None, or a host-side callable (x [T, 12], rng) -> x applied to each view
        (experiments, tests). Pretraining passes None: its step augments on the device.
      num_workers: Grain worker processes (0: in this process). Batches do not depend on it.
      num_epochs: None repeats forever (reshuffled and re-cropped each epoch).
      cpc: frames for the 'cpc' view ('context', 'future').
      prefetch_batches: batches read ahead in this process (memory: batches x batch size).
      shard_index, shard_count: this process's shard of the patients (see the module docstring);
        batch_size is then this process's share of the global batch.
      dtype: of the signal views: float32, or the store's own float16 (its exact samples with no
        conversion on the host, ~6x cheaper to read and half the bytes to send; the pretraining
        step casts them on the device).
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
    kept = PatientRecords.from_store(store, split, needed)
    positions = shard_positions(len(kept), shard_index, shard_count)
    # Every shard gets the same number of batches per epoch: that of the smallest shard.
    epoch_batches = (len(kept) // shard_count) // batch_size
    if drop_remainder and epoch_batches == 0:
        raise TooFewPatients(len(kept), split, needed, batch_size, shard_count)
    # Workers get the signals and the flat record arrays, not the metadata table: loader memory
    # does not grow with the number of records beyond a few integers each.
    beats = beats_lib.load_or_build(store, workers=max(1, num_workers)) if "heart_rate" in views else None
    views_fn = PatientViews(store.signals_only(), kept, views, segment_samples,
                            _resolve_augmentation(augmentation, store.fs), cpc, dtype=dtype, beats=beats)
    # Positions are shuffled per epoch (Grain reseeds the shuffle for each pass of the repeat),
    # cut to whole batches, batched, then read: one Generator per batch, derived by Grain from
    # (seed, batch index).
    ds = grain.MapDataset.source(positions).seed(shard_seed(seed, shard_index, shard_count)).shuffle()
    if drop_remainder:
        ds = ds[:epoch_batches * batch_size]
    ds = ds.repeat(num_epochs).batch(batch_size, drop_remainder=drop_remainder).random_map(views_fn)
    return _prefetch(ds.to_iter_dataset(_read_options(prefetch_batches)), num_workers, worker_buffer_size)
