"""Pretraining methods by name: one `Method` object per self-supervised method (big_vision style).

A method says in one place what the rest of the code would otherwise branch on:
  views   `loader_views` (host crops, ecgjax.data.pipeline.VIEWS), `device_views` (what the step
          augments), `example_batch` (zeros shaped like a step's batch, for init), `label_classes`
          (the classes of the integer labels the loader adds, e.g. heart-rate classes);
  heads   `heads` (Flax modules it puts on the encoder), `inputs` (per-step extra inputs such as
          MAE masks), `forward` (run inside `PretrainModel.__call__`);
  losses  `terms` and `losses`; a term runs iff its weight in config.objective.weights is
          non-zero (a term the config does not name weighs 1), and the total is their weighted sum;
  state   `init_extra` / `update_extra`: what the step carries and checkpoints beyond the
          parameters (MoCo's queue and momentum encoder), held in `TrainState.moco`.

    @register("mine")
    class Mine(Method):
        terms = ("mine",)
        def forward(self, net, batch, inputs, *, train): ...
        def losses(self, config, out, batch, inputs, *, model, extra, rng): ...

`get(config.objective.method)` finds it; the train state, step and loader ask it.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ecgjax.errors import UserError

_REGISTRY: dict[str, "Method"] = {}


def weight(objective: ml_collections.ConfigDict, term: str) -> float:
    """config.objective.weights[term]; 1 for a term the config does not name (003 eq. 3)."""
    return float(objective.weights.get(term, 1.0))


def active(objective: ml_collections.ConfigDict, term: str) -> bool:
    return weight(objective, term) != 0.0


def segment_batch(config: ml_collections.ConfigDict, batch_size: int, views) -> dict:
    """Zeros [batch, time, leads] for each view plus 'patient' [batch] int32."""
    enc = config.model.encoder
    segment = jnp.zeros((batch_size, enc.num_samples, enc.in_leads))
    return {**{v: segment for v in views}, "patient": jnp.zeros((batch_size,), jnp.int32)}


class Method:
    """Defaults for a method that embeds the 'segment' crop; subclasses override what differs.

    Hooks that depend on the views take `objective` (config.objective), the rest the whole config.
    """

    name: str = ""  # set by `register`
    terms: tuple[str, ...] = ()  # the loss parts `losses` may return

    def loader_views(self, objective: ml_collections.ConfigDict) -> tuple[str, ...]:
        return ("segment",)

    def device_views(self, objective: ml_collections.ConfigDict) -> tuple[tuple[str, str], ...]:
        """(view, host crop it is an augmentation of), see ecgjax.train.step.augment_views."""
        return (("segment", "segment"),)

    def example_batch(self, config: ml_collections.ConfigDict, batch_size: int) -> dict:
        """Zeros shaped like the batch the step's forward pass sees (after `device_views`)."""
        return segment_batch(config, batch_size, ("segment", "segment_aug", "patient_segment"))

    def label_classes(self) -> dict[str, int]:
        """{batch key: number of classes} of the integer labels its loader views add to a batch
        (values in 0..n-1); none by default."""
        return {}

    def checks(self, config: ml_collections.ConfigDict) -> list[tuple[bool, str]]:
        """(ok, message naming the field) pairs: settings this method cannot train with."""
        return []

    def heads(self, net: nn.Module) -> dict[str, nn.Module]:
        """Submodules of `net` (a PretrainModel, inside its setup) beside `net.encoder`, by
        attribute name: the names are the checkpoint's parameter keys."""
        return {}

    def inputs(self, config: ml_collections.ConfigDict, rng: jax.Array, batch_size: int) -> dict:
        """Arrays drawn each step that the forward pass and the losses share (e.g. MAE masks)."""
        return {}

    def forward(self, net: nn.Module, batch: dict, inputs: dict, *, train: bool) -> dict:
        """What the losses need from the networks, computed with `net`'s submodules."""
        raise NotImplementedError(f"method {self.name!r} defines no forward pass")

    def losses(self, config: ml_collections.ConfigDict, out: dict, batch: dict, inputs: dict, *,
               model: nn.Module, extra: dict, rng: jax.Array) -> tuple[dict, dict, Any]:
        """(parts {term: scalar}, metrics {name: scalar}, aux for `update_extra`).

        model: the PretrainModel (to apply it to other variables, e.g. a momentum encoder);
        extra: this method's state (`init_extra`) before the step; rng: a key of its own.
        """
        raise NotImplementedError(f"method {self.name!r} defines no losses")

    def init_extra(self, config: ml_collections.ConfigDict, params, batch_stats) -> dict:
        return {}

    def update_extra(self, config: ml_collections.ConfigDict, extra: dict, params, batch_stats,
                     batch: dict, aux) -> dict:
        """`extra` after a step; params / batch_stats are the online networks' new values."""
        return extra


def register(name: str):
    """Class (or instance) decorator: makes the method `get(name)` and sets its `name`."""

    def add(method):
        instance = method() if isinstance(method, type) else method
        if name in _REGISTRY:
            raise ValueError(f"pretraining method {name!r} is already registered "
                             f"({type(_REGISTRY[name]).__qualname__})")
        instance.name = name
        _REGISTRY[name] = instance
        return method

    return add


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise UserError(f"unknown pretraining method {name!r} (config.objective.method); "
                        f"registered: {', '.join(names())}")
    return _REGISTRY[name]
