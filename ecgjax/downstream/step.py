"""The one train step of encoder + heads: the heads alone on fixed features, or all weights.

    tx, step = train_step(encoder_config, heads, Optimizer(1e-4, 1e-5), with_batch_stats=True)
    opt_state = tx.init(params)
    params, batch_stats, opt_state, losses = step(params, batch_stats, opt_state, x, targets, key)

The objective is the sum of the heads' masked losses (heads.head_losses); targets is
{head name: [B, ...]}. Steps are cached per (architecture, heads, optimizer), so every seed of a
probe compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Sequence

import jax
import optax

from ecgjax.downstream.heads import Head, head_losses, head_outputs
from ecgjax.downstream.network import build, config_key
from ecgjax.models.heads import MultiHead


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """AdamW at `lr` with `weight_decay`; with decay_steps, a linear warm-up from 0 over
    warmup_steps then cosine decay to 0 at decay_steps (optax.warmup_cosine_decay_schedule)."""

    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_steps: int = 0

    def build(self) -> optax.GradientTransformation:
        lr = self.lr
        if self.decay_steps:
            lr = optax.warmup_cosine_decay_schedule(0.0, self.lr, self.warmup_steps, self.decay_steps)
        return optax.adamw(lr, weight_decay=self.weight_decay)


@functools.lru_cache(maxsize=32)
def _train_step(config_json: str, heads: tuple[Head, ...], optimizer: Optimizer, frozen_encoder: bool,
                with_batch_stats: bool):
    tx = optimizer.build()
    if frozen_encoder:
        head_model = MultiHead(head_outputs(heads))

        def forward(params, batch_stats, features, key):
            del key  # linear heads: nothing random
            return head_model.apply({"params": params}, features), batch_stats
    else:
        model = build(json.loads(config_json), heads)

        def forward(params, batch_stats, x, key):
            if not with_batch_stats:
                return model.apply({"params": params}, x, train=True, rngs={"dropout": key}), batch_stats
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                          mutable=["batch_stats"], rngs={"dropout": key})
            return logits, updates["batch_stats"]

    @jax.jit
    def step(params, batch_stats, opt_state, x, targets, key):
        def loss_fn(p):
            logits, new_stats = forward(p, batch_stats, x, key)
            losses = head_losses(heads, logits, targets)
            return sum(losses.values()), (losses, new_stats)

        (_, (losses, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, losses

    return tx, step


def train_step(encoder_config, heads: Sequence[Head], optimizer: Optimizer, *, frozen_encoder: bool = False,
               with_batch_stats: bool = False):
    """(optax transformation, jitted step) for one architecture and set of heads.

    frozen_encoder: the step trains variables['params']['heads'] on features [B, D] (linear
      probing on precomputed embeddings); otherwise all of variables['params'] on windows
      [B, T, leads] in training mode, BatchNorm statistics updated when `with_batch_stats`.
    step(params, batch_stats, opt_state, x, targets, key) -> (params, batch_stats, opt_state,
      {head name: loss}); key feeds dropout.
    """
    return _train_step(config_key(encoder_config), tuple(heads), optimizer, bool(frozen_encoder),
                       bool(with_batch_stats))
