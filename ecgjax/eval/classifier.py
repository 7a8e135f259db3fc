"""Linear probing and fine-tuning on one task: an encoder plus one new head (ecgjax.downstream).

    model, history = train_classifier(encoder_config, encoder_vars, train, val, task, mode="finetune")
    model.save("models/af")                 # the one save format: downstream.model.load_model
    probs = model.predict(windows)          # windows [N, T, len(task.leads)] mV at fs
                                            # -> {output name: [N] probabilities / values}

Training (000 §4.2, 003 §4.2): the pretraining projection head is dropped and a new linear head
is trained on frozen encoder features (the embeddings are computed once); mode 'finetune' then
updates all weights at a slow rate (003: AdamW lr 1e-4, weight decay 1e-5) with BatchNorm
statistics updated in training mode; 'supervised' trains all weights from the start. After every
epoch the validation score (AUROC / macro AUROC / macro F1 / -MAE by task type; -loss where
undefined) picks the best epoch, whose weights are kept.

Regression targets are standardised with the training mean and std for the loss (the head's
scale); predictions are in the original units.
"""
from __future__ import annotations

import math
import warnings

import jax
import ml_collections
import numpy as np

from ecgjax.downstream import network
from ecgjax.downstream.batches import batched_apply
from ecgjax.downstream.heads import Head, head_outputs, head_scores
from ecgjax.downstream.model import TrainedModel, new_model
from ecgjax.downstream.step import Optimizer, train_step
from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval.tasks import Task

MODES = ("linear", "finetune", "supervised")


def default_optim() -> ml_collections.ConfigDict:
    """Optimisation settings of `train_classifier` (003: lr 1e-4, wd 1e-5 for fine-tuning)."""
    return ml_collections.ConfigDict(dict(
        batch_size=64, linear_epochs=30, linear_lr=1e-3, linear_weight_decay=0.0,
        epochs=20, lr=1e-4, weight_decay=1e-5, eval_batch_size=256))


def task_head(task: Task, scale: tuple[float, float] = (0.0, 1.0)) -> Head:
    """The head of a task: its type, its outputs (labels or classes), its target scale."""
    classes = task.output_names if task.type in ("multilabel", "multiclass") else ()
    return Head(task.name, task.type, classes, scale=scale)


def task_model(encoder_config, task: Task, fs: float, *, window_s: float | None = None,
               scale: tuple[float, float] = (0.0, 1.0), encoder_variables: dict | None = None, seed: int = 0,
               **fields) -> TrainedModel:
    """An untrained model for `task` (windows of `window_s`, default task.window_s): the encoder
    (random unless given) and a new head; `fields`: other TrainedModel fields."""
    return new_model(encoder_config, (task_head(task, scale),), fs=fs, leads=task.leads,
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


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches of exactly batch_size (the short tail dropped unless it is all)."""
    order = rng.permutation(n)
    batch_size = min(batch_size, n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _fit(model: TrainedModel, stage: str, epochs: int, optimizer: Optimizer, x_train, y_train, val_score,
         batch_size: int, rng, seed: int, history: list) -> None:
    """Epochs of the shared train step on one head; keeps the variables of the best validation epoch.

    stage 'linear': the head alone on x_train = fixed features [N, D]; 'finetune': all weights on
    windows. val_score(variables) -> the epoch's selection score.
    """
    (head,) = model.heads
    frozen = stage == "linear"
    variables = model.variables
    with_stats = bool(variables.get("batch_stats"))
    tx, step = train_step(model.encoder_config, model.heads, optimizer, frozen_encoder=frozen,
                          with_batch_stats=with_stats)
    params = variables["params"]["heads"] if frozen else variables["params"]
    batch_stats = variables.get("batch_stats")
    opt_state = tx.init(params)
    key = jax.random.PRNGKey(seed)
    best = (-math.inf, variables)
    for epoch in range(epochs):
        losses = []
        for idx in _epoch_batches(len(y_train), batch_size, rng):
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, x_train[idx],
                                                        {head.name: y_train[idx]}, sub)
            losses.append(float(loss[head.name]))
        if frozen:
            current = {**variables, "params": {**variables["params"], "heads": params}}
        else:
            current = {"params": params, **({"batch_stats": batch_stats} if with_stats else {})}
        score = val_score(current)
        history.append({"stage": stage, "epoch": epoch, "train_loss": float(np.mean(losses)), "val_score": score})
        if _better(score, best[0]):
            best = (score, jax.device_get(current))
    model.variables = best[1]


def train_classifier(encoder_config, encoder_variables: dict | None, train, val, task: Task,
                     mode: str = "finetune", optim=None, seed: int = 0, *, fs: float = 250.0):
    """Trains a new head (and, by mode, the encoder) on one task.

    Args:
      encoder_config: registry.build_encoder config (dict / ConfigDict); its leads must match
        task.leads (see downstream.network.adapt_encoder for lead surgery).
      encoder_variables: {'params', ['batch_stats']} of the encoder alone, or None (random init).
      train, val: (x [N, T, len(task.leads)] f32 mV, y) pairs or objects with .x and .y
        (y as in Task.targets: binary [N] 0/1, multilabel [N, C], multiclass [N] int, regression [N]).
      mode: 'linear' (frozen encoder, embeddings computed once), 'finetune' (head first, then all
        weights), 'supervised' (all weights from the start).
      optim: ConfigDict/dict overriding `default_optim()` fields.
    Returns:
      (TrainedModel with the weights of the best validation epoch, history: list of per-epoch
      dicts {stage, epoch, train_loss, val_score}, also the model's history).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings = default_optim()
    settings.update(dict(optim or {}))
    x_train, y_train = (train.x, train.y) if hasattr(train, "x") else train
    x_val, y_val = (val.x, val.y) if hasattr(val, "x") else val
    if len(y_train) == 0 or len(y_val) == 0:
        raise ValueError(f"task {task.name!r}: empty training ({len(y_train)}) or validation ({len(y_val)}) set")
    x_train, x_val = np.asarray(x_train, np.float32), np.asarray(x_val, np.float32)
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    scale = (0.0, 1.0)
    if task.type == "regression":
        scale = (float(np.mean(y_train)), float(np.std(y_train)) or 1.0)
    model = task_model(encoder_config, task, fs, window_s=x_train.shape[1] / fs, scale=scale,
                       encoder_variables=encoder_variables, seed=seed, batch_size=settings.eval_batch_size)
    (head,) = model.heads
    rng = np.random.default_rng(seed)
    history: list[dict] = []

    def fit(stage, epochs, optimizer, x, val_score):
        _fit(model, stage, epochs, optimizer, x, y_train, val_score, settings.batch_size, rng, seed, history)

    if mode in ("linear", "finetune"):
        encoder = network.encoder_part(model.variables)
        f_train, f_val = (network.encoder_features(encoder_config, encoder, x, batch_size=settings.eval_batch_size)
                          for x in (x_train, x_val))
        heads_logits = network.compiled_heads(head_outputs(model.heads))

        def linear_score(variables):  # the head on the fixed validation features
            logits = heads_logits(variables["params"]["heads"], f_val)[head.name]
            return selection_score(task, y_val, head_scores(head, logits))

        fit("linear", settings.linear_epochs,
            Optimizer(float(settings.linear_lr), float(settings.linear_weight_decay)), f_train, linear_score)
    if mode in ("finetune", "supervised"):
        model_logits = network.compiled_logits(encoder_config, model.heads)

        def finetune_score(variables):
            logits = batched_apply(lambda x: model_logits(variables, x)[head.name], x_val,
                                   min(settings.eval_batch_size, len(x_val)))
            return selection_score(task, y_val, head_scores(head, logits))

        fit("finetune", settings.epochs, Optimizer(float(settings.lr), float(settings.weight_decay)), x_train,
            finetune_score)
    model.history = history
    return model, history
