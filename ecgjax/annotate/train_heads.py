"""Annotation heads: one small encoder fine-tuned with an AF, a heart-rate-class and a bpm head.

The heart-rate targets need no human: they come from QRS detection (heart_rate.auto_label_heart_rate,
001's pretext task: bradycardia < 60, normal, tachycardia > 100 bpm, noise). The AF target is
PTB-XL's AFIB statement. Every head's loss is masked where its target is missing, so one batch can
mix windows labelled for different heads, and one encoder pass serves all three tracks at
annotation time.

What is annotation-specific lives here (the heads, the QRS-derived labels, the window data, the
sampling of batches); the model, its train step and its save format are ecgjax.downstream's, the
same as a probe's: `train_heads` returns a downstream TrainedModel, loaded back with
downstream.model.load_model.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import numpy as np

from ecgjax.annotate.heart_rate import auto_label_heart_rate
from ecgjax.annotate.operating_point import rates_at_threshold, threshold_at_sensitivity
from ecgjax.annotate.run import filter_signal
from ecgjax.data.preprocess import resample
from ecgjax.downstream.heads import Head
from ecgjax.downstream.model import TrainedModel, new_model
from ecgjax.downstream.step import Optimizer, train_step
from ecgjax.signal.heart_rate import HEART_RATE_CLASSES, NOISE

# Output tracks: AF probability, 4 heart-rate class probabilities, heart rate in bpm.
AF_KEY, HR_CLASS_KEY, HR_BPM_KEY = "af_prob", "hr_class_prob", "heart_rate"
# The bpm head predicts (bpm - 80) / 30, so its loss is on the scale of the others.
BPM_SCALE = (80.0, 30.0)
# Losses: BCE (AF), cross-entropy (HR class), Huber on the scaled bpm: quadratic within 6 bpm,
# linear beyond, so a crop whose detector label is off by a missed beat cannot dominate a batch.
HEADS = (Head("af", "binary", output_key=AF_KEY),
         Head("hr_class", "multiclass", HEART_RATE_CLASSES, output_key=HR_CLASS_KEY),
         Head("hr_bpm", "regression", output_key=HR_BPM_KEY, scale=BPM_SCALE, huber_delta=0.2))
AF_SENSITIVITY = 0.9  # the AF track's operating point is chosen on validation data for this sensitivity


def annotation_model(encoder_config: dict, *, fs: float, leads, window_s: float, band_hz=(0.5, 40.0),
                     encoder_variables=None, seed: int = 0) -> TrainedModel:
    """Encoder (random unless `encoder_variables`) with new AF and heart-rate heads; its input is
    windows [N, window_s * fs, len(leads)] mV band-passed by `band_hz` (None: not filtered)."""
    return new_model({**dict(encoder_config), "in_leads": len(leads)}, HEADS, fs=fs, leads=leads,
                     window_s=window_s, encoder_variables=encoder_variables, seed=seed, band_hz=band_hz)


# --------------------------------------------------------------------------------------------
# Training data: windows + targets (NaN / -1 where a head has no label)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class HeadData:
    """windows [N, T, leads] f32 at the model rate; af [N] f32 (NaN: unknown);
    hr_class [N] int (-1: unknown); hr_bpm [N] f32 (NaN: unknown)."""

    windows: np.ndarray
    af: np.ndarray
    hr_class: np.ndarray
    hr_bpm: np.ndarray

    def __len__(self):
        return self.windows.shape[0]

    def subset(self, index) -> "HeadData":
        return HeadData(self.windows[index], self.af[index], self.hr_class[index], self.hr_bpm[index])

    def targets(self) -> dict[str, np.ndarray]:
        """{head name: targets}, as the train step takes them."""
        return {"af": self.af, "hr_class": self.hr_class, "hr_bpm": self.hr_bpm}

    @staticmethod
    def concatenate(parts) -> "HeadData":
        return HeadData(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(HeadData)))


def label_windows(signals: np.ndarray, fs_in: float, fs: float, *, af=None, band_hz=(0.5, 40.0),
                  method: str = "xqrs") -> HeadData:
    """Resamples records to the model rate and labels their heart rate by QRS detection.

    Args:
      signals: [N, T, leads] mV at `fs_in`, one window per record (e.g. PTB-XL lead II, 10 s).
      af: [N] 0/1 AF labels, or None (unknown).
      method: QRS detector; detection runs on the resampled, unfiltered first lead (at 100 Hz XQRS
        double-counts; at 250 Hz it agrees with PTB-XL's SBRAD / STACH statements).
    Returns HeadData with windows filtered by `band_hz`.
    """
    windows, classes, bpms = [], [], []
    for record in np.asarray(signals, np.float32):
        x = resample(record, fs_in, fs)
        window_s = x.shape[0] / fs
        labels = auto_label_heart_rate(x, fs, window_s, window_s, lead=0, method=method)
        windows.append(filter_signal(x, fs, band_hz))
        classes.append(int(labels["hr_class"][0]))
        bpms.append(float(labels["bpm"][0]))
    af = np.full(len(windows), np.nan, np.float32) if af is None else np.asarray(af, np.float32)
    return HeadData(np.stack(windows), af, np.asarray(classes, np.int64), np.asarray(bpms, np.float32))


def noise_windows(num: int, length: int, leads: int, fs: float, rng: np.random.Generator, *,
                  band_hz=(0.5, 40.0)) -> HeadData:
    """Windows with no ECG in them (001's 'noise' class: no heart rate can be found): lead-off
    flat lines, white noise and baseline wander with spikes. Their class is noise by construction,
    their AF and bpm targets unknown."""
    t = np.arange(length) / fs
    windows = np.zeros((num, length, leads), np.float32)
    for i in range(num):
        kind = i % 3
        if kind == 0:
            windows[i] = rng.normal(0, 0.005, (length, leads)) + rng.uniform(-1, 1)
        elif kind == 1:
            windows[i] = rng.normal(0, rng.uniform(0.1, 1.0), (length, leads))
        else:
            wander = rng.uniform(0.5, 2) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t)[:, None]
            spikes = (rng.random((length, leads)) < 0.002) * rng.normal(0, 2, (length, leads))
            windows[i] = wander + spikes + rng.normal(0, 0.05, (length, leads))
    windows = np.stack([filter_signal(w, fs, band_hz) for w in windows]).astype(np.float32)
    return HeadData(windows, np.full(num, np.nan, np.float32), np.full(num, NOISE, np.int64),
                    np.full(num, np.nan, np.float32))


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------

def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Amplitude scaling, sign kept, a little noise and a random circular shift (windows are whole records)."""
    scale = rng.uniform(0.6, 1.6, (x.shape[0], 1, 1)).astype(np.float32)
    shift = int(rng.integers(x.shape[1]))
    return np.roll(x, shift, axis=1) * scale + rng.normal(0, 0.02, x.shape).astype(np.float32)


BatchSampler = Callable[[np.random.Generator, int], HeadData]


def fixed_window_sampler(data: HeadData, af_pos_fraction: float = 0.3) -> BatchSampler:
    """Batches of fixed, already labelled windows (whole short records), `af_pos_fraction` of them
    AF-positive, augmented by gain, noise and a circular shift (a crop sampler is
    annotate.sampling.CropSampler)."""
    positives, others = np.flatnonzero(data.af == 1), np.flatnonzero(data.af != 1)

    def sample(rng: np.random.Generator, batch_size: int) -> HeadData:
        num_pos = int(round(af_pos_fraction * batch_size)) if positives.size else 0
        batch = data.subset(np.concatenate([rng.choice(positives, num_pos), rng.choice(others, batch_size - num_pos)]))
        return dataclasses.replace(batch, windows=_augment(batch.windows, rng))
    return sample


def train_heads(train: HeadData | BatchSampler, val: HeadData | None, *, encoder_config: dict, fs: float,
                leads, window_s: float, band_hz=(0.5, 40.0), encoder_variables=None, steps: int = 600,
                batch_size: int = 64, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                af_pos_fraction: float = 0.3, seed: int = 0, log_every: int = 100, log=print,
                start: TrainedModel | None = None) -> TrainedModel:
    """Fine-tunes encoder + three heads (AdamW, cosine decay); returns the trained model.

    train: a sampler `(rng, batch_size) -> HeadData` drawing fresh windows [batch_size, window_s * fs,
      len(leads)] every step (sampling.CropSampler), or fixed windows (HeadData, sampled by
      fixed_window_sampler with `af_pos_fraction` AF-positive windows per batch).
    encoder_variables: optional pretrained {'params', 'batch_stats'} of the encoder (else random init).
    start: an annotation model to train further (its encoder and heads; its input, window and
      band-pass are kept, and the arguments naming them ignored), e.g. on data of another kind.
    The history records the losses every `log_every` steps and, with `val`, its scores at the end
    (evaluate_heads, including the AF threshold for AF_SENSITIVITY on `val`).
    """
    rng = np.random.default_rng(seed)
    if start is None:
        model = annotation_model(encoder_config, fs=fs, leads=leads, window_s=window_s, band_hz=band_hz,
                                 encoder_variables=encoder_variables, seed=seed)
    else:
        model = dataclasses.replace(start, history=list(start.history), thresholds=dict(start.thresholds))
    params, batch_stats = model.variables["params"], model.variables.get("batch_stats", {})
    optimizer = Optimizer(learning_rate, weight_decay, warmup_steps=max(steps // 20, 1), decay_steps=steps)
    tx, step = train_step(model.encoder_config, model.heads, optimizer, with_batch_stats=bool(batch_stats))
    opt_state = tx.init(params)
    key = jax.random.PRNGKey(seed)

    sample = fixed_window_sampler(train, af_pos_fraction) if isinstance(train, HeadData) else train
    began, running = time.perf_counter(), []
    for i in range(steps):
        batch = sample(rng, batch_size)
        key, sub = jax.random.split(key)
        params, batch_stats, opt_state, losses = step(params, batch_stats, opt_state, batch.windows,
                                                      batch.targets(), sub)
        running.append({k: float(v) for k, v in losses.items()})
        if (i + 1) % log_every == 0 or i + 1 == steps:
            mean = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
            model.history.append({"step": i + 1, "seconds": time.perf_counter() - began, **mean})
            log(f"step {i + 1}/{steps} {time.perf_counter() - began:.0f}s " +
                " ".join(f"{k}={v:.3f}" for k, v in mean.items()))
            running = []
    model.variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    if val is not None and len(val):
        model.history.append({"val": evaluate_heads(model, val)})
    return model


def evaluate_heads(model: TrainedModel, data: HeadData) -> dict[str, float]:
    """AF AUROC, heart-rate class accuracy and bpm MAE of `model` on labelled windows, and the AF
    threshold giving AF_SENSITIVITY on them ('af_threshold') with the specificity it gives."""
    from sklearn.metrics import roc_auc_score  # only needed here

    pred = model.predict(data.windows)
    result = {}
    known = np.isfinite(data.af)
    if known.any() and len(np.unique(data.af[known])) == 2:
        result["af_auroc"] = float(roc_auc_score(data.af[known], pred[AF_KEY][known]))
        result["af_threshold"] = threshold_at_sensitivity(data.af[known], pred[AF_KEY][known], AF_SENSITIVITY)
        rates = rates_at_threshold(data.af[known], pred[AF_KEY][known], result["af_threshold"])
        result.update(af_sensitivity=rates["sensitivity"], af_specificity=rates["specificity"])
    known = data.hr_class >= 0
    if known.any():
        result["hr_class_accuracy"] = float(np.mean(pred[HR_CLASS_KEY][known].argmax(1) == data.hr_class[known]))
    known = np.isfinite(data.hr_bpm)
    if known.any():
        result["hr_bpm_mae"] = float(np.mean(np.abs(pred[HR_BPM_KEY][known] - data.hr_bpm[known])))
    return result
