"""The fit loop under every downstream stage: epochs of the one train step, the best epoch kept.

    model, rows = fit(model, "finetune", epochs, Optimizer(1e-3), batches, score, patience=8, seed=0)

After every epoch `score(variables)` judges the weights (higher is better, e.g. validation AUROC);
the model returned has the weights of the best epoch (or `to_beat`'s, unless an epoch beat them),
and training stops after `patience` epochs without a better one. The model passed in is not
changed; `rows` are the epochs' history ({stage, epoch, train_loss, val_score}).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Iterable

import jax
import numpy as np

from ecgjax.downstream.model import TrainedModel
from ecgjax.downstream.step import Optimizer, train_step

logger = logging.getLogger("ecgjax")


def better(score: float, best: float) -> bool:
    """score > best; an undefined (NaN) score only beats nothing, so one epoch is always kept."""
    if not math.isfinite(score):
        return best == -math.inf
    return score > best


def fit(model: TrainedModel, label: str, epochs: int, optimizer: Optimizer,
        batches: Callable[[int], Iterable], score: Callable[[dict], float], *, patience: int, seed: int,
        frozen_encoder: bool = False, augmentation: dict | None = None,
        to_beat: tuple[float, dict] | None = None) -> tuple[TrainedModel, list[dict]]:
    """Trains the model's one head (and, unless frozen_encoder, its encoder) from its variables.

    label: the history's name of these epochs. batches(epoch) -> iterable of (inputs, targets):
      windows [B, T, leads] (features [B, D] when frozen_encoder) and the head's targets [B, ...].
    score(variables) -> the epoch's score. to_beat: (score, variables) kept unless an epoch scores
      better (None: keep the best epoch). patience: 0 = every epoch runs.
    """
    (head,) = model.heads
    variables = model.variables
    with_stats = bool(variables.get("batch_stats"))
    tx, step = train_step(model.encoder_config, model.heads, optimizer, frozen_encoder=frozen_encoder,
                          with_batch_stats=with_stats, augmentation=augmentation, fs=model.fs)
    params = variables["params"]["heads"] if frozen_encoder else variables["params"]
    batch_stats = variables.get("batch_stats")
    opt_state = tx.init(params)
    key = jax.random.PRNGKey(seed)
    best, best_epoch, rows = to_beat or (-math.inf, variables), -1, []
    for epoch in range(epochs):
        losses = []
        for inputs, targets in batches(epoch):
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, inputs,
                                                        {head.name: targets}, sub)
            losses.append(loss[head.name])
        if frozen_encoder:
            current = {**variables, "params": {**variables["params"], "heads": params}}
        else:
            current = {"params": params, **({"batch_stats": batch_stats} if with_stats else {})}
        value = score(current)
        rows.append({"stage": label, "epoch": epoch, "train_loss": float(np.mean(jax.device_get(losses))),
                     "val_score": value})
        logger.info("%s epoch %d: train loss %.4f, validation %.4f", label, epoch, rows[-1]["train_loss"], value)
        if better(value, best[0]):
            best, best_epoch = (value, jax.device_get(current)), epoch
        elif patience and epoch - best_epoch >= patience:
            break
    return dataclasses.replace(model, variables=best[1]), rows
