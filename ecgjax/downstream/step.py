"""The one train step of encoder + heads: the heads alone on fixed features, or all weights.

    tx, step = train_step(encoder_config, heads, Optimizer(1e-4, 1e-5), with_batch_stats=True)
    opt_state = tx.init(params)
    params, batch_stats, opt_state, losses = step(params, batch_stats, opt_state, x, targets, key)

The objective is the sum of the heads' masked losses (heads.head_losses); targets is
{head name: [B, ...]}. When all weights train, the windows can be augmented on the device first
(ecgjax.data.augment, a fresh draw per example from the step's key). Steps are cached per
(architecture, heads, optimizer, augmentation), so every seed of a probe compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Sequence

import jax
import optax

from ecgjax.data.augment import build_augmentation
from ecgjax.downstream.heads import Head, head_losses, head_outputs
from ecgjax.downstream.network import build, config_dict, config_key
from ecgjax.models.heads import MultiHead


_LAYER = re.compile(r"'(?:block|stage)(\d+)")  # ViT blocks block{i}, ResNet stages stage{s}_block{b}


def layer_of(path: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise decay: 0 for the input (patch embedding, position table,
    stem), i + 1 for transformer block / ResNet stage i, num_layers + 1 for the final norm and heads."""
    if "'heads'" in path or "final_norm" in path:
        return num_layers + 1
    match = _LAYER.search(path)
    return int(match[1]) + 1 if match else 0


def scale_by_layer(decay: float, num_layers: int) -> optax.GradientTransformation:
    """Multiplies each update by decay ** (num_layers + 1 - layer_of(its path)): after AdamW, a
    learning rate that shrinks geometrically towards the input (layer-wise lr decay, BEiT / MAE
    fine-tuning), so pretrained early layers move least."""
    def scale(updates, params=None):
        del params
        return jax.tree_util.tree_map_with_path(
            lambda path, u: u * decay ** (num_layers + 1 - layer_of(jax.tree_util.keystr(path), num_layers)),
            updates)
    return optax.stateless(scale)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """AdamW at `lr` with `weight_decay`; with decay_steps, a linear warm-up from 0 over
    warmup_steps then cosine decay to 0 at decay_steps (optax.warmup_cosine_decay_schedule).
    layer_decay < 1 with num_layers (blocks or stages of the encoder): layer-wise lr decay
    (scale_by_layer); clip_norm > 0: gradients clipped to that global norm first."""

    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_steps: int = 0
    layer_decay: float = 1.0
    num_layers: int = 0
    clip_norm: float = 0.0

    def build(self) -> optax.GradientTransformation:
        lr = self.lr
        if self.decay_steps:
            lr = optax.warmup_cosine_decay_schedule(0.0, self.lr, self.warmup_steps, self.decay_steps)
        parts = [optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm > 0 else []
        parts.append(optax.adamw(lr, weight_decay=self.weight_decay))
        if self.layer_decay != 1.0 and self.num_layers:
            parts.append(scale_by_layer(self.layer_decay, self.num_layers))
        return optax.chain(*parts) if len(parts) > 1 else parts[0]


def is_vit(encoder_config) -> bool:
    return str(dict(encoder_config).get("name", "")) == "vit1d"


def encoder_layers(encoder_config) -> int:
    """Blocks of a ViT (its depth) or stages of a ResNet (4): the layers of layer-wise lr decay."""
    return int(dict(encoder_config).get("depth") or 4) if is_vit(encoder_config) else 4


@functools.lru_cache(maxsize=32)
def _train_step(config_json: str, heads: tuple[Head, ...], optimizer: Optimizer, frozen_encoder: bool,
                with_batch_stats: bool, augmentation_json: str, fs: float):
    tx = optimizer.build()
    augment = build_augmentation(json.loads(augmentation_json), fs) if augmentation_json else None
    if frozen_encoder:
        head_model = MultiHead(head_outputs(heads))

        def forward(params, batch_stats, features, key):
            del key  # linear heads: nothing random
            return head_model.apply({"params": params}, features), batch_stats
    else:
        model = build(json.loads(config_json), heads)

        def forward(params, batch_stats, x, key):
            if augment is not None:
                augment_key, key = jax.random.split(key)
                x = augment(augment_key, x)
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
               with_batch_stats: bool = False, augmentation: dict | None = None, fs: float = 250.0):
    """(optax transformation, jitted step) for one architecture and set of heads.

    frozen_encoder: the step trains variables['params']['heads'] on features [B, D] (linear
      probing on precomputed embeddings); otherwise all of variables['params'] on windows
      [B, T, leads] in training mode, BatchNorm statistics updated when `with_batch_stats`.
    augmentation: ecgjax.data.augment config (name -> params) applied to the windows, at `fs`,
      when all weights train; None or {} for none.
    step(params, batch_stats, opt_state, x, targets, key) -> (params, batch_stats, opt_state,
      {head name: loss}); key feeds dropout, stochastic depth and augmentation.
    """
    augmentation_json = json.dumps(config_dict(augmentation), sort_keys=True) if augmentation else ""
    return _train_step(config_key(encoder_config), tuple(heads), optimizer, bool(frozen_encoder),
                       bool(with_batch_stats), augmentation_json if not frozen_encoder else "", float(fs))
