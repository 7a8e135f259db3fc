"""The networks one pretraining method trains, as one Flax module: the encoder + the method's heads.

`PretrainModel` builds the encoder and asks the method (ecgjax.methods.registry) for its heads
and its forward pass, so the parameter tree is {'encoder': ..., <head name>: ...} for every method.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ecgjax.methods import registry
from ecgjax.models.registry import build_encoder


class PretrainModel(nn.Module):
    """Encoder + method heads.

    Attributes:
      model: config.model (encoder and the heads' sub-configs).
      objective: config.objective (method, weights, moco, ...).
      leads: input leads (12 for the canonical layout).
    """

    model: ml_collections.ConfigDict
    objective: ml_collections.ConfigDict
    leads: int = 12
    dtype: Any = jnp.float32

    @property
    def method(self) -> registry.Method:
        return registry.get(self.objective.method)

    def setup(self):
        self.encoder = build_encoder({**self.model.encoder.to_dict(), "dtype": jnp.dtype(self.dtype).name})
        for name, head in self.method.heads(self).items():
            setattr(self, name, head)

    def __call__(self, batch: dict, *, train: bool, inputs: dict | None = None) -> dict:
        """The method's forward pass on a step's batch; inputs: its `Method.inputs` (MAE masks)."""
        return self.method.forward(self, batch, inputs or {}, train=train)


def apply_model(model: nn.Module, params, batch_stats, *args, rng, train: bool, method=None, **kwargs):
    """model.apply with BatchNorm statistics updated when the model has any.

    Returns (output, new batch_stats); batch_stats {} means none (no BatchNorm in the model).
    """
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    mutable = ["batch_stats"] if batch_stats else False
    result = model.apply(variables, *args, train=train, rngs={"dropout": rng}, mutable=mutable,
                         method=method, **kwargs)
    out, updates = result if mutable else (result, {})
    return out, updates.get("batch_stats", batch_stats)
