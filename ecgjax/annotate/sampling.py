"""Training batches for the annotation heads, drawn afresh at every step from a RecordSet.

Each item is one random crop of one lead of one record, after amplitude augmentation of the whole
record (gain, noise, baseline wander) and the model's band-pass: the model sees a record many
times, never twice the same, and never learns one lead's morphology or one recorder's gain.
Batches hold fixed shares of AF records, of confounder records (rhythms AF is mistaken for) and of
the others, plus a few synthetic no-ECG windows for the heart-rate 'noise' class.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ecgjax.annotate import crops
from ecgjax.annotate.run import filter_signal
from ecgjax.annotate.train_heads import HeadData, noise_windows
from ecgjax.annotate.training_records import AF, CONFOUNDER, CONFOUNDER_CODES, OTHER, RecordSet
from ecgjax.signal.heart_rate import heart_rate_class
from ecgjax.signal.windows import window_length


def augment_records(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    """[N, time] mV -> [N, time]: gain 0.4-2.5x (log-uniform), baseline wander (a slow sine up to
    1 mV plus a drift) and white noise up to 0.08 mV; the band-pass that follows removes most of
    the wander, as it does on real recordings."""
    num, length = x.shape
    t = np.arange(length) / fs
    gain = np.exp(rng.uniform(np.log(0.4), np.log(2.5), (num, 1)))
    wander = rng.uniform(0, 1.0, (num, 1)) * np.sin(2 * np.pi * rng.uniform(0.05, 0.6, (num, 1)) * t
                                                     + rng.uniform(0, 2 * np.pi, (num, 1)))
    drift = rng.uniform(-0.5, 0.5, (num, 1)) * t / t[-1]
    noise = rng.normal(0, 1, x.shape) * rng.uniform(0, 0.08, (num, 1))
    return (x * gain + wander + drift + noise).astype(np.float32)


def _filter_rows(x: np.ndarray, fs: float, band_hz) -> np.ndarray:
    """Band-pass of every row of [N, time] (filter_signal takes [time, channels])."""
    return filter_signal(x.T, fs, band_hz).T


def _confounder_weights(codes) -> np.ndarray:
    """Per confounder record, 1 / sqrt(records sharing its rarest confounder code): a handful of
    flutter records is drawn about as often as hundreds of PVC records are, each, sqrt-damped."""
    counts = {c: sum(c in record for record in codes) for c in CONFOUNDER_CODES}
    return np.array([1 / np.sqrt(min(counts[c] for c in CONFOUNDER_CODES if c in record)) for record in codes])


@dataclasses.dataclass
class CropSampler:
    """sampler(rng, batch_size) -> HeadData of windows [batch_size, crop_s * fs, 1].

    group_fractions: shares of OTHER, CONFOUNDER and AF records in a batch (renormalised over the
      groups present).
    lead_weights: {lead: weight} of the single lead a crop is cut from (default: II, the lead
      annotated on telemetry, a third of the time, the others evenly).
    noise_fraction: share of synthetic no-ECG windows (heart-rate class 'noise', no AF / bpm target).
    """

    records: RecordSet
    crop_s: float
    band_hz: tuple[float, float] | None = (0.5, 40.0)
    group_fractions: tuple[float, float, float] = (0.4, 0.3, 0.3)
    lead_weights: dict | None = None
    noise_fraction: float = 0.03
    augment: bool = True

    def __post_init__(self):
        self.length = window_length(self.records.fs, self.crop_s)
        group = self.records.group
        self._members = [np.flatnonzero(group == g) for g in (OTHER, CONFOUNDER, AF)]
        weights = [np.ones(len(self._members[OTHER])),
                   _confounder_weights([self.records.codes[i] for i in self._members[CONFOUNDER]]),
                   np.ones(len(self._members[AF]))]
        self._member_p = [w / w.sum() if w.size else w for w in weights]
        shares = np.array([f if m.size else 0.0 for f, m in zip(self.group_fractions, self._members)])
        self._group_p = shares / shares.sum()
        leads = self.lead_weights or {lead: (2.0 if lead == "II" else 4.0 / max(len(self.records.leads) - 1, 1))
                                      for lead in self.records.leads}
        self._columns = np.array([self.records.lead_index(lead) for lead in leads])
        self._column_p = np.array(list(leads.values()), np.float64) / sum(leads.values())

    def __call__(self, rng: np.random.Generator, batch_size: int) -> HeadData:
        num_noise = int(rng.binomial(batch_size, self.noise_fraction))
        num = batch_size - num_noise
        if not num:  # a share of a mixed batch small enough to be all noise
            return noise_windows(num_noise, self.length, 1, self.records.fs, rng, band_hz=self.band_hz)
        groups = rng.choice(3, num, p=self._group_p)
        rows = np.array([rng.choice(self._members[g], p=self._member_p[g]) for g in groups], np.int64)
        columns = rng.choice(self._columns, num, p=self._column_p)
        whole = self.records.signals[rows, :, columns]                       # [num, time]
        if self.augment:
            whole = augment_records(whole, self.records.fs, rng)
        whole = _filter_rows(whole, self.records.fs, self.band_hz)
        starts = crops.random_starts(rng, whole.shape[1], self.length, num)
        windows = crops.crop_windows(whole[:, :, None], np.arange(num), np.zeros(num, np.int64), starts, self.length)
        bpm = crops.crop_heart_rate(self.records.beats, rows, starts, self.length, self.records.fs,
                                    self.records.beat_fs)
        batch = HeadData(windows[:, :, None], self.records.af[rows], heart_rate_class(bpm), bpm)
        if not num_noise:
            return batch
        noise = noise_windows(num_noise, self.length, 1, self.records.fs, rng, band_hz=self.band_hz)
        return HeadData.concatenate([batch, noise])


def fixed_crops(records: RecordSet, lead: str, crop_s: float, *, band_hz=(0.5, 40.0)) -> HeadData:
    """One centred crop of `lead` per record, band-passed, labelled like the training crops
    (validation: windows [R, crop_s * fs, 1])."""
    whole = _filter_rows(records.signals[:, :, records.lead_index(lead)], records.fs, band_hz)
    length = window_length(records.fs, crop_s)
    starts = np.full(len(records), (whole.shape[1] - length) // 2, np.int64)
    rows = np.arange(len(records))
    windows = crops.crop_windows(whole[:, :, None], rows, np.zeros(len(records), np.int64), starts, length)
    bpm = crops.crop_heart_rate(records.beats, rows, starts, length, records.fs, records.beat_fs)
    return HeadData(windows[:, :, None], records.af.copy(), heart_rate_class(bpm), bpm)


@dataclasses.dataclass
class MixedSampler:
    """sampler(rng, batch_size) -> HeadData: each batch drawn from several samplers (CropSamplers of
    PTB-XL, CinC 2017, MIT-BIH pieces) in `shares` (renormalised), the counts drawn multinomially so
    every source is seen at its share over the steps; windows must agree in length and leads."""

    samplers: tuple
    shares: tuple[float, ...]

    def __post_init__(self):
        if len(self.samplers) != len(self.shares) or not self.samplers:
            raise ValueError(f"{len(self.samplers)} samplers but {len(self.shares)} shares")
        shares = np.asarray(self.shares, np.float64)
        if (shares < 0).any() or not shares.sum() > 0:
            raise ValueError(f"shares must be >= 0 with a positive sum, got {self.shares}")
        self._p = shares / shares.sum()

    def __call__(self, rng: np.random.Generator, batch_size: int) -> HeadData:
        counts = rng.multinomial(batch_size, self._p)
        return HeadData.concatenate([sampler(rng, int(n)) for sampler, n in zip(self.samplers, counts) if n])

