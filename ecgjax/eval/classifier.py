"""Linear probing and fine-tuning on one task: an encoder plus one new head (ecgjax.downstream).

    model, history = train_classifier(encoder_config, encoder_vars, train, val, task, mode="finetune")
    model.save("models/af")                 # the one save format: downstream.model.load_model
    scores = model.record_scores(x, lengths)[task.name]   # whole records, windows aggregated

The windowed protocol (ecgjax.downstream.windows): training sees random crops of `window_s`
seconds drawn afresh every epoch from anywhere in each record; a record is scored by the mean (or
max) of its heads' scores over sliding windows that cover it. Records come whole (or cut / padded
to a length) with their lengths, so a 60 s single-lead record is judged on all of it.

Stages (000 §4.2, 003 §4.2): 'linear' trains a new linear head on frozen encoder features of the
training records' sliding windows (computed once, each window labelled with its record's target);
'finetune' then trains all weights, 'supervised' trains all weights from random init. All-weights
training uses AdamW with a linear warm-up and cosine decay over the planned steps, optional
on-device augmentation of the crops, stochastic depth (ViT `drop_path`) and layer-wise learning-
rate decay of pretrained encoders (`layer_decay` for ViTs, `layer_decay_resnet` for ResNets),
class-balanced losses for multiclass tasks, and early stopping: after every epoch the validation records are scored, the best epoch's weights are
kept, and training stops after `patience` epochs without improvement. The selection score is
AUROC / macro AUROC / macro F1 / -MAE by task type (-loss where undefined).
With `distill_epochs` and a pool of unlabelled records, a 'distill' stage follows (SimCLRv2's
self-distillation): the trained model labels the pool and a student trains on both (see
default_optim).

Regression targets are standardised with the training mean and std for the loss (the head's
scale); predictions are in the original units.
"""
from __future__ import annotations

import logging
import math
import warnings

import jax
import ml_collections
import numpy as np

from ecgjax.data.augment import DEFAULT_AUGMENTATION
from ecgjax.downstream import network, windows as windows_lib
from ecgjax.downstream.heads import Head, balanced_weights, head_outputs, head_scores
from ecgjax.downstream.model import TrainedModel, new_model
from ecgjax.downstream.step import Optimizer, encoder_layers, is_vit, train_step
from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval.tasks import Task

logger = logging.getLogger("ecgjax")
MODES = ("linear", "finetune", "supervised")
# Fine-tuning augmentation: the pretraining chain without the transforms that need all 12 leads
# in canonical order (VCG rotation), that hide what a label may hinge on (lead drop, time mask) or
# that alias at 100 Hz (50/60 Hz powerline).
FINETUNE_AUGMENTATION = {name: dict(params) for name, params in DEFAULT_AUGMENTATION.items()
                         if name in ("amplitude_scale", "baseline_wander", "gaussian_noise")}


def default_optim() -> ml_collections.ConfigDict:
    """The fine-tuning recipe (README "On real data"; configs/probe.py uses it as is; the evidence for
    each default: benchmarks/ptbxl.md, "What the probe's defaults rest on")."""
    return ml_collections.ConfigDict(dict(
        batch_size=64, eval_batch_size=256,
        # Linear head stage. A convex problem on fixed features: train it to convergence and let
        # early stopping end it (at 30 epochs PTB-XL's validation AUROC was still rising).
        linear_epochs=100, linear_lr=1e-3, linear_weight_decay=0.0,
        epochs=30, lr=1e-3, weight_decay=1e-4,                        # all weights
        warmup_epochs=1.0,        # linear warm-up, then cosine decay to 0 over `epochs`
        min_steps_per_epoch=20,   # an epoch repeats the records until it has this many batches
        patience=8,               # early stopping: epochs without a better validation score (0 = off)
        clip_norm=0.0,            # global gradient-norm clip (0 = off)
        layer_decay=0.75,         # layer-wise lr decay of a pretrained ViT's blocks
        # ... of a pretrained ResNet's stages: 1.0 = none. On PTB-XL the CL ResNet18's validation
        # macro AUROC was 0.941 without and 0.935 with 0.75 at 100% labels (0.810 / 0.809 at 1%).
        layer_decay_resnet=1.0,
        # ... used instead when the task's leads differ from the checkpoint's: the first layer lost
        # (or gained) input channels and must move as fast as the head (PTB-XL lead-I AF, validation
        # AUROC 0.970 with 0.75, 0.980 with 1.0; benchmarks/ptbxl.md).
        layer_decay_new_leads=1.0,
        drop_path=0.1,            # ViT stochastic depth while training all weights
        class_weighting="balanced",  # multiclass loss: none | balanced
        # Self-distillation on the unlabelled training records (SimCLRv2's third step, Chen et al.
        # 2020): after fine-tuning, the model (teacher) labels the records the labelled subset left
        # out, and a student started like the teacher (pretrained encoder + linear head, or random
        # weights for 'supervised') trains all weights on labelled + teacher-labelled crops. The
        # student replaces the teacher only if its validation score is better. 0 = off; an epoch
        # is one pass over labelled + unlabelled records. Each further round makes the kept model
        # the next teacher (Noisy Student, Xie et al. 2020).
        distill_epochs=0, distill_rounds=1,
        # The first round's teacher: the mean scores of this many models fine-tuned by the same
        # recipe from other seeds (this one included); a student distils an ensemble into one model.
        teacher_ensemble=1,
        # Weight-space ensembling of a fine-tuned pretrained model (WiSE-FT, Wortsman et al. 2022):
        # after each all-weights stage, the interpolations (1 - a) * linear-probed + a * fine-tuned
        # weights for a = 1/n ... (n-1)/n are scored on validation and the best of them and the
        # fine-tuned model is kept. 0 = off; 'supervised' and random-init runs have nothing to
        # interpolate towards and skip it.
        wise_ft=0,
    ))


def default_protocol() -> ml_collections.ConfigDict:
    """The windowed protocol (configs/probe.py uses it as is)."""
    return ml_collections.ConfigDict(dict(
        # crop / scoring window, s (0 = the encoder's input, num_samples / fs). 2.5 s crops of 10 s
        # PTB-XL records beat whole 10 s windows for the supervised ResNet
        # (benchmarks/ptbxl_log.md, "Ablation").
        window_s=2.5,
        stride_s=0.0,          # scoring stride, s; 0 = half a window
        aggregation="mean",    # mean | max (of window scores per record)
        record_s=0.0,          # 0 = whole records; > 0 = pad / crop every record to this length (001: 60)
        crops_per_record=1,    # random crops of each training record per epoch
        augment=True,          # on-device augmentation of the crops (all-weights training)
        augmentation=ml_collections.ConfigDict(FINETUNE_AUGMENTATION),
        # ... less these (comma-separated) when a pretrained encoder's weights train: its pretraining
        # taught it amplitude invariance already, and voltage is what the hypertrophy criteria
        # measure. Without the scaling the CL ResNet18 scored higher on PTB-XL validation in 5 seeds
        # of 5 at 1% (+0.004), level at 10%, +0.002 at 100%; the CNN from scratch needs it (-0.005
        # at 1% without; benchmarks/ptbxl.md). '' = the same augmentation for every arm.
        skip_for_pretrained="amplitude_scale",
    ))


def skipped_for_pretrained(protocol) -> list[str]:
    """The augmentation names of protocol.skip_for_pretrained (comma-separated)."""
    return [name for name in (part.strip() for part in str(protocol.skip_for_pretrained).split(",")) if name]


def task_head(task: Task, scale: tuple[float, float] = (0.0, 1.0), class_weights=()) -> Head:
    """The head of a task: its type, its outputs (labels or classes), its target scale."""
    classes = task.output_names if task.type in ("multilabel", "multiclass") else ()
    return Head(task.name, task.type, classes, scale=scale, class_weights=tuple(class_weights))


def task_model(encoder_config, task: Task, fs: float, *, window_s: float | None = None,
               scale: tuple[float, float] = (0.0, 1.0), encoder_variables: dict | None = None, seed: int = 0,
               class_weights=(), **fields) -> TrainedModel:
    """An untrained model for `task` (windows of `window_s`, default task.window_s): the encoder
    (random unless given) and a new head; `fields`: other TrainedModel fields."""
    return new_model(encoder_config, (task_head(task, scale, class_weights),), fs=fs, leads=task.leads,
                     window_s=window_s or task.window_s, encoder_variables=encoder_variables, seed=seed, **fields)


def selection_score(task: Task, y_true, scores) -> float:
    """The validation score that picks the best epoch (higher is better; NaN if undefined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics_lib.DegenerateMetricWarning)
        if task.type == "binary":
            return metrics_lib.auroc(y_true, scores)
        if task.type == "multilabel":
            return metrics_lib.macro_auroc(y_true, scores)
        if task.type == "multiclass":
            return metrics_lib.macro_f1(y_true, scores, labels=list(range(task.num_outputs)))
        return -metrics_lib.mae(y_true, scores)


def _better(score: float, best: float) -> bool:
    if not math.isfinite(score):
        return best == -math.inf  # keep at least one epoch when the score is undefined
    return score > best


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator, min_steps: int = 1) -> list[np.ndarray]:
    """Index batches of exactly batch_size from shuffled passes over n rows: one pass (the short
    tail dropped unless it is all), or as many passes as `min_steps` batches need, so an epoch of a
    small labelled set (1% of the patients) is still several optimiser steps."""
    batch_size = min(batch_size, n)
    steps = max(n // batch_size, int(min_steps))
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch_size // n))])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


class _Records:
    """Records x [N, T, leads] with lengths [N] and targets y (TaskArrays, or an (x, y) pair)."""

    def __init__(self, data):
        x, y = (data.x, data.y) if hasattr(data, "x") else data
        self.x, self.y = np.asarray(x, np.float32), np.asarray(y)
        lengths = getattr(data, "lengths", None)
        self.lengths = np.full(len(self.y), self.x.shape[1], np.int64) if lengths is None else np.asarray(lengths)

    def __len__(self) -> int:
        return len(self.y)

    def plus_unlabelled(self, other: "_Records") -> "_Records":
        """Both sets of records, rows zero-padded to the longer of the two; the other's targets are
        zeros of this one's shape and type (a caller writes them)."""
        width = max(self.x.shape[1], other.x.shape[1])
        x = [np.pad(r.x, ((0, 0), (0, width - r.x.shape[1]), (0, 0))) for r in (self, other)]
        joined = _Records((np.concatenate(x), np.concatenate([self.y, np.zeros((len(other),) + self.y.shape[1:],
                                                                                self.y.dtype)])))
        joined.lengths = np.concatenate([self.lengths, other.lengths])
        return joined


def _fit(model: TrainedModel, stage: str, epochs: int, optimizer: Optimizer, batches, val_score, patience: int,
         seed: int, history: list, augmentation: dict | None = None, to_beat: tuple | None = None) -> None:
    """Epochs of the shared train step on one head, from model.variables; keeps the variables of the
    best validation epoch and stops after `patience` epochs without a better one (0: never).

    stage 'linear': the head alone on fixed features; else all weights on windows.
    batches(epoch) -> iterable of (inputs [B, ...], targets [B, ...]); val_score(variables) -> score.
    to_beat: (score, variables) kept unless an epoch scores better (None: keep the best epoch).
    """
    (head,) = model.heads
    frozen = stage == "linear"
    variables = model.variables
    with_stats = bool(variables.get("batch_stats"))
    tx, step = train_step(model.encoder_config, model.heads, optimizer, frozen_encoder=frozen,
                          with_batch_stats=with_stats, augmentation=augmentation, fs=model.fs)
    params = variables["params"]["heads"] if frozen else variables["params"]
    batch_stats = variables.get("batch_stats")
    opt_state = tx.init(params)
    key = jax.random.PRNGKey(seed)
    best, best_epoch = to_beat or (-math.inf, variables), -1
    for epoch in range(epochs):
        losses = []
        for inputs, targets in batches(epoch):
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, inputs,
                                                        {head.name: targets}, sub)
            losses.append(loss[head.name])
        if frozen:
            current = {**variables, "params": {**variables["params"], "heads": params}}
        else:
            current = {"params": params, **({"batch_stats": batch_stats} if with_stats else {})}
        score = val_score(current)
        history.append({"stage": stage, "epoch": epoch, "train_loss": float(np.mean(jax.device_get(losses))),
                        "val_score": score})
        logger.info("%s epoch %d: train loss %.4f, validation %.4f", stage, epoch, history[-1]["train_loss"], score)
        if _better(score, best[0]):
            best, best_epoch = (score, jax.device_get(current)), epoch
        elif patience and epoch - best_epoch >= patience:
            break
    model.variables = best[1]


def _window_features(model: TrainedModel, records: _Records, window: int, stride: int, batch_size: int):
    """Frozen-encoder features of every sliding window: ([M, D], owner [M])."""
    encode = network.compiled_encoder(model.encoder_config)
    encoder = network.encoder_part(model.variables)
    return windows_lib.apply_sliding(lambda chunk: encode(encoder, chunk), records.x, records.lengths, window,
                                     stride, batch_size)


def pretrained_layer_decay(settings, encoder_config) -> float:
    """The recipe's layer-wise lr decay for this encoder: layer_decay for a ViT, layer_decay_resnet
    for the ResNets."""
    return float(settings.layer_decay if is_vit(encoder_config) else settings.layer_decay_resnet)


def teacher_targets(task: Task, scores: np.ndarray) -> np.ndarray:
    """What a student learns from its teacher's record scores: the probabilities themselves
    (binary [N], multilabel [N, C]: sigmoid cross-entropy takes soft targets), the most probable
    class (multiclass [N]) or the predicted value (regression [N])."""
    if task.type == "multiclass":
        return np.argmax(scores, axis=-1).astype(np.int32)
    return np.asarray(scores, np.float32)


def train_classifier(encoder_config, encoder_variables: dict | None, train, val, task: Task,
                     mode: str = "finetune", optim=None, seed: int = 0, *, fs: float = 250.0, protocol=None,
                     unlabelled=None, member_encoders=()):
    """Trains a new head (and, by mode, the encoder) on one task.

    Args:
      encoder_config: registry.build_encoder config (dict / ConfigDict); its leads must match
        task.leads (see downstream.network.adapt_encoder for lead surgery).
      encoder_variables: {'params', ['batch_stats']} of the encoder alone, or None (random init).
      train, val: TaskArrays (records x [N, T, len(task.leads)] f32 mV with lengths [N]) or (x, y)
        pairs of whole rows (y as in Task.targets: binary [N] 0/1, multilabel [N, C], multiclass [N]
        int, regression [N]).
      mode: 'linear' (frozen encoder, window features computed once), 'finetune' (head first, then
        all weights), 'supervised' (all weights from the start).
      unlabelled: records whose labels are withheld (TaskArrays or (x, y); y is never read), for
        self-distillation (optim.distill_epochs > 0) after 'finetune' / 'supervised'.
      member_encoders: (encoder_config, encoder_variables) pairs that the other members of an
        ensemble teacher (optim.teacher_ensemble > 1) start from in turn, e.g. other pretraining
        runs, whose fine-tunes disagree more than seeds of one; () = this encoder for every member.
      optim, protocol: ConfigDicts/dicts overriding `default_optim()` / `default_protocol()` fields;
        protocol.window_s 0 = the encoder's input length (num_samples / fs); the window is capped at
        that length and at the longest record.
    Returns:
      (TrainedModel of window_s windows with the weights of the best validation epoch, history:
      per-epoch dicts {stage, epoch, train_loss, val_score}, also the model's history).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings, windowing = default_optim(), default_protocol()
    settings.update(dict(optim or {}))
    windowing.update(dict(protocol or {}))
    train, val = _Records(train), _Records(val)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"task {task.name!r}: empty training ({len(train)}) or validation ({len(val)}) set")
    # The window: as configured, but never past the encoder's input length or the longest record.
    longest = int(max(train.lengths.max(), val.lengths.max()))
    encoder_input = int(dict(encoder_config).get("num_samples") or longest)
    window = min(int(round(float(windowing.window_s) * fs)) or encoder_input, encoder_input, longest)
    window_s = window / fs
    stride = max(int(round((float(windowing.stride_s) or window_s / 2) * fs)), 1)
    scale = (0.0, 1.0)
    if task.type == "regression":
        scale = (float(np.mean(train.y)), float(np.std(train.y)) or 1.0)
    class_weights = ()
    if task.type == "multiclass" and settings.class_weighting == "balanced":
        class_weights = balanced_weights(train.y, task.num_outputs)
    if mode != "linear" and str(dict(encoder_config).get("name")) == "vit1d" and settings.drop_path:
        encoder_config = {**network.config_dict(encoder_config), "drop_path": float(settings.drop_path)}
    model = task_model(encoder_config, task, fs, window_s=window_s, scale=scale, class_weights=class_weights,
                       encoder_variables=encoder_variables, seed=seed, batch_size=settings.eval_batch_size)
    (head,) = model.heads
    rng = np.random.default_rng(seed)
    history: list[dict] = []
    batch_size = min(int(settings.batch_size), len(train))

    def record_score(window_scores, owner):
        scores = windows_lib.aggregate(window_scores, owner, len(val), windowing.aggregation)
        return selection_score(task, val.y, scores)

    if mode in ("linear", "finetune"):
        f_train, train_owner = _window_features(model, train, window, stride, settings.eval_batch_size)
        f_val, val_owner = _window_features(model, val, window, stride, settings.eval_batch_size)
        y_windows = train.y[train_owner]
        heads_logits = network.compiled_heads(head_outputs(model.heads))

        def linear_batches(epoch):
            del epoch
            return ((f_train[idx], y_windows[idx])
                    for idx in _epoch_batches(len(f_train), batch_size, rng, settings.min_steps_per_epoch))

        def linear_score(variables):  # the head on the fixed validation window features
            return record_score(head_scores(head, heads_logits(variables["params"]["heads"], f_val)[head.name]),
                                val_owner)

        _fit(model, "linear", int(settings.linear_epochs),
             Optimizer(float(settings.linear_lr), float(settings.linear_weight_decay)), linear_batches,
             linear_score, int(settings.patience), seed, history)
    if mode in ("finetune", "supervised"):
        pretrained = mode == "finetune" and encoder_variables is not None
        start = jax.device_get(model.variables)   # the student of self-distillation starts here too
        augmentation = network.config_dict(windowing.augmentation) if windowing.augment else None
        if augmentation and pretrained:
            skipped = skipped_for_pretrained(windowing)
            augmentation = {name: params for name, params in augmentation.items() if name not in skipped}

        def finetune_score(variables):
            model.variables = variables
            logits, owner = model.window_logits(val.x, val.lengths, stride / fs)
            return record_score(head_scores(head, logits[head.name]), owner)

        def train_all_weights(stage: str, records: _Records, epochs: int, to_beat=None):
            crops = max(int(windowing.crops_per_record), 1)
            steps_per_epoch = max((len(records) * crops) // batch_size, int(settings.min_steps_per_epoch), 1)
            total = steps_per_epoch * epochs
            optimizer = Optimizer(float(settings.lr), float(settings.weight_decay),
                                  warmup_steps=min(int(float(settings.warmup_epochs) * steps_per_epoch), total - 1),
                                  decay_steps=total, clip_norm=float(settings.clip_norm),
                                  layer_decay=(pretrained_layer_decay(settings, model.encoder_config)
                                               if pretrained else 1.0),
                                  num_layers=encoder_layers(model.encoder_config))

            def crop_batches(epoch):
                del epoch
                for idx in _epoch_batches(len(records) * crops, batch_size, rng, steps_per_epoch):
                    idx = idx % len(records)
                    yield windows_lib.random_crops(records.x[idx], records.lengths[idx], window, rng), records.y[idx]

            _fit(model, stage, epochs, optimizer, crop_batches, finetune_score, int(settings.patience), seed,
                 history, augmentation, to_beat)

        def interpolate_with_start(stage: str):
            if not (pretrained and int(settings.wise_ft) > 1):
                return
            kept = (finetune_score(model.variables), model.variables)
            for k in range(1, int(settings.wise_ft)):
                alpha = k / int(settings.wise_ft)
                mixed = jax.tree_util.tree_map(lambda a, b: (1 - alpha) * a + alpha * b, start, kept[1])
                score = finetune_score(mixed)
                history.append({"stage": "wise_ft", "epoch": k, "train_loss": float("nan"), "val_score": score})
                logger.info("%s: %.2f x linear-probed + %.2f x fine-tuned weights, validation %.4f (kept so far "
                            "%.4f)", stage, 1 - alpha, alpha, score, kept[0])
                if _better(score, kept[0]):
                    kept = (score, mixed)
            model.variables = kept[1]

        train_all_weights("finetune", train, int(settings.epochs))
        interpolate_with_start("finetune")
        pool = _Records(unlabelled) if unlabelled is not None else None
        distilling = bool(int(settings.distill_epochs)) and pool is not None and len(pool) > 0
        # Labelled rows first, then the pool's, whose targets each round's teacher writes.
        students = train.plus_unlabelled(pool) if distilling else None
        for round_ in range(int(settings.distill_rounds) if distilling else 0):
            teachers = [model]
            if round_ == 0:   # the other members of an ensemble teacher: same recipe, other seeds (and starts)
                member_optim = {**settings.to_dict(), "distill_epochs": 0, "teacher_ensemble": 1}
                starts = list(member_encoders) or [(encoder_config, encoder_variables)]
                teachers += [train_classifier(*starts[(k - 1) % len(starts)], train, val, task, mode, member_optim,
                                              seed + 1000 * k, fs=fs, protocol=windowing)[0]
                             for k in range(1, int(settings.teacher_ensemble))]
            scores, val_scores = ([t.record_scores(r.x, r.lengths, stride_s=stride / fs,
                                                   aggregation=windowing.aggregation)[task.name] for t in teachers]
                                  for r in (pool, val))
            teacher = (selection_score(task, val.y, val_scores[0]), model.variables)   # the kept model
            students.y[len(train):] = teacher_targets(task, np.mean(scores, axis=0)).astype(train.y.dtype)
            logger.info("self-distillation round %d: %d labelled + %d teacher-labelled records (teacher of %d "
                        "model(s), validation %.4f; the kept model %.4f)", round_ + 1, len(train), len(pool),
                        len(teachers), selection_score(task, val.y, np.mean(val_scores, axis=0)), teacher[0])
            model.variables = start
            train_all_weights("distill", students, int(settings.distill_epochs), to_beat=teacher)
            interpolate_with_start("distill")
    model.history = history
    return model, history
