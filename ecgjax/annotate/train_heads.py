"""Annotation heads: one small encoder fine-tuned with an AF, a heart-rate-class and a bpm head.

The heart-rate targets need no human: they come from QRS detection (heart_rate.auto_label_heart_rate,
001's pretext task: bradycardia < 60, normal, tachycardia > 100 bpm, noise). The AF target is
PTB-XL's AFIB statement. Every head's loss is masked where its target is missing, so one batch can
mix windows labelled for different heads, and one encoder pass serves all three tracks at
annotation time.

`AnnotationModel` follows the classifier interface ecgjax.annotate.run expects of any model:
`.predict(windows [N, T, leads]) -> dict of arrays`, `.fs`, `.leads`, `.window_s`,
`.output_names`, `.output_classes` (names of the class-probability columns);
`.save(dir)` / `load_annotation_model(dir)` (config.json + msgpack variables).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from ecgjax.annotate.heart_rate import HEART_RATE_CLASSES, NOISE, auto_label_heart_rate
from ecgjax.annotate.run import filter_signal
from ecgjax.data.preprocess import resample
from ecgjax.models.heads import LinearHead
from ecgjax.models.registry import build_encoder

# Output tracks, in the order the heads are laid out: AF probability, 4 heart-rate class
# probabilities, heart rate in bpm.
AF_KEY, HR_CLASS_KEY, HR_BPM_KEY = "af_prob", "hr_class_prob", "heart_rate"
BPM_SCALE = 100.0  # the bpm head predicts bpm / 100, so its loss is on the scale of the others
CONFIG_FILE, VARIABLES_FILE = "annotation_model.json", "variables.msgpack"


class MultiHeadModel(nn.Module):
    """encoder -> {af logit [B], hr class logits [B, 4], bpm / 100 [B]}."""

    encoder: nn.Module

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = self.encoder(x, train=train)
        return {"af": LinearHead(1, name="af_head")(features)[:, 0],
                "hr_class": LinearHead(len(HEART_RATE_CLASSES), name="hr_class_head")(features),
                "hr_bpm": LinearHead(1, name="hr_bpm_head")(features)[:, 0]}


def _to_numpy(outputs: dict) -> dict[str, np.ndarray]:
    return {AF_KEY: np.asarray(jax.nn.sigmoid(outputs["af"])),
            HR_CLASS_KEY: np.asarray(jax.nn.softmax(outputs["hr_class"])),
            HR_BPM_KEY: np.asarray(outputs["hr_bpm"]) * BPM_SCALE}


@dataclasses.dataclass
class AnnotationModel:
    """A trained multi-head model and everything needed to feed it.

    encoder_config: registry config of the encoder; fs, leads, window_s: its input;
    band_hz: (low, high) band-pass applied to the model-rate signal before windowing (or None).
    """

    encoder_config: dict
    variables: Any
    fs: float
    leads: tuple[str, ...]
    window_s: float
    band_hz: tuple[float, float] | None = (0.5, 40.0)
    history: list = dataclasses.field(default_factory=list)

    output_names = (AF_KEY, HR_CLASS_KEY, HR_BPM_KEY)
    output_classes = {HR_CLASS_KEY: HEART_RATE_CLASSES}  # names of the columns of vector outputs

    def __post_init__(self):
        self.module = MultiHeadModel(build_encoder(self.encoder_config))
        self._apply = jax.jit(lambda variables, x: self.module.apply(variables, x, train=False))

    def predict(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """windows [N, window_s * fs, len(leads)] mV -> {'af_prob' [N], 'hr_class_prob' [N, 4], 'heart_rate' [N]}."""
        return _to_numpy(self._apply(self.variables, jnp.asarray(windows, jnp.float32)))

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        meta = {"kind": "ecgjax.annotate.train_heads", "encoder_config": dict(self.encoder_config), "fs": self.fs,
                "leads": list(self.leads), "window_s": self.window_s,
                "band_hz": list(self.band_hz) if self.band_hz else None, "history": self.history}
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=1)
        with open(os.path.join(directory, VARIABLES_FILE), "wb") as f:
            f.write(serialization.to_bytes(jax.device_get(self.variables)))
        return directory


def is_annotation_model_dir(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, CONFIG_FILE))


def load_annotation_model(directory: str) -> AnnotationModel:
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        meta = json.load(f)
    model = AnnotationModel(meta["encoder_config"], None, float(meta["fs"]), tuple(meta["leads"]),
                            float(meta["window_s"]), tuple(meta["band_hz"]) if meta.get("band_hz") else None,
                            meta.get("history", []))
    template = _init_variables(model.module, model.encoder_config, model.fs, model.window_s, len(model.leads), 0)
    with open(os.path.join(directory, VARIABLES_FILE), "rb") as f:
        model.variables = serialization.from_bytes(template, f.read())
    return model


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

def _init_variables(module, encoder_config, fs, window_s, num_leads, seed):
    x = jnp.zeros((2, int(round(window_s * fs)), num_leads), jnp.float32)
    return module.init(jax.random.PRNGKey(seed), x, train=False)


def head_losses(outputs: dict, af, hr_class, hr_bpm) -> dict:
    """Masked per-head losses of a batch: BCE (AF), cross-entropy (HR class), Huber on bpm / 100."""
    def masked_mean(values, mask):
        return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)

    af_known = jnp.isfinite(af)
    af_loss = optax.sigmoid_binary_cross_entropy(outputs["af"], jnp.where(af_known, af, 0.0))
    class_known = hr_class >= 0
    class_loss = optax.softmax_cross_entropy_with_integer_labels(outputs["hr_class"], jnp.maximum(hr_class, 0))
    bpm_known = jnp.isfinite(hr_bpm)
    bpm_loss = optax.huber_loss(outputs["hr_bpm"], jnp.where(bpm_known, hr_bpm / BPM_SCALE, 0.0), delta=0.2)
    return {"af": masked_mean(af_loss, af_known), "hr_class": masked_mean(class_loss, class_known),
            "hr_bpm": masked_mean(bpm_loss, bpm_known)}


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Amplitude scaling, sign kept, a little noise and a random circular shift (windows are whole records)."""
    scale = rng.uniform(0.6, 1.6, (x.shape[0], 1, 1)).astype(np.float32)
    shift = int(rng.integers(x.shape[1]))
    return np.roll(x, shift, axis=1) * scale + rng.normal(0, 0.02, x.shape).astype(np.float32)


def train_heads(train: HeadData, val: HeadData | None, *, encoder_config: dict, fs: float, leads,
                window_s: float, band_hz=(0.5, 40.0), encoder_variables=None, steps: int = 600,
                batch_size: int = 64, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                af_pos_fraction: float = 0.3, seed: int = 0, log_every: int = 100, log=print) -> AnnotationModel:
    """Fine-tunes encoder + three heads on `train` (AdamW, cosine decay); returns the trained model.

    encoder_variables: optional pretrained {'params', 'batch_stats'} of the encoder (else random init).
    af_pos_fraction: batches hold this share of AF-positive windows (AF is ~7 % of PTB-XL).
    The history records the losses every `log_every` steps and, with `val`, its losses at the end.
    """
    rng = np.random.default_rng(seed)
    model = AnnotationModel(dict(encoder_config), None, float(fs), tuple(leads), float(window_s),
                            tuple(band_hz) if band_hz else None)
    variables = _init_variables(model.module, encoder_config, fs, window_s, len(leads), seed)
    if encoder_variables is not None:
        variables = jax.tree_util.tree_map(lambda x: x, dict(variables))
        for collection, tree in encoder_variables.items():
            variables[collection] = {**variables[collection], "encoder": tree}
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps)
    optimizer = optax.adamw(schedule, weight_decay=weight_decay)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, af, hr_class, hr_bpm):
        def loss_fn(p):
            outputs, updates = model.module.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                                  mutable=["batch_stats"])
            losses = head_losses(outputs, af, hr_class, hr_bpm)
            return sum(losses.values()), (losses, updates["batch_stats"])
        (_, (losses, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, losses

    positives = np.flatnonzero(train.af == 1)
    others = np.flatnonzero(train.af != 1)
    num_pos = int(round(af_pos_fraction * batch_size)) if positives.size else 0
    began, running = time.perf_counter(), []
    for i in range(steps):
        index = np.concatenate([rng.choice(positives, num_pos), rng.choice(others, batch_size - num_pos)])
        batch = train.subset(index)
        params, batch_stats, opt_state, losses = step(params, batch_stats, opt_state,
                                                      _augment(batch.windows, rng), batch.af, batch.hr_class,
                                                      batch.hr_bpm)
        running.append({k: float(v) for k, v in losses.items()})
        if (i + 1) % log_every == 0 or i + 1 == steps:
            mean = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
            model.history.append({"step": i + 1, "seconds": time.perf_counter() - began, **mean})
            log(f"step {i + 1}/{steps} {time.perf_counter() - began:.0f}s " +
                " ".join(f"{k}={v:.3f}" for k, v in mean.items()))
            running = []
    model.variables = {"params": params, "batch_stats": batch_stats}
    if val is not None and len(val):
        model.history.append({"val": evaluate_heads(model, val)})
    return model


def evaluate_heads(model: AnnotationModel, data: HeadData, batch_size: int = 256) -> dict[str, float]:
    """AF AUROC, heart-rate class accuracy and bpm MAE of `model` on labelled windows."""
    from sklearn.metrics import roc_auc_score  # only needed here

    parts = [model.predict(data.windows[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    pred = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    result = {}
    known = np.isfinite(data.af)
    if known.any() and len(np.unique(data.af[known])) == 2:
        result["af_auroc"] = float(roc_auc_score(data.af[known], pred[AF_KEY][known]))
    known = data.hr_class >= 0
    if known.any():
        result["hr_class_accuracy"] = float(np.mean(pred[HR_CLASS_KEY][known].argmax(1) == data.hr_class[known]))
    known = np.isfinite(data.hr_bpm)
    if known.any():
        result["hr_bpm_mae"] = float(np.mean(np.abs(pred[HR_BPM_KEY][known] - data.hr_bpm[known])))
    return result
