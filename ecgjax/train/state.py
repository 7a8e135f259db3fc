"""The pretraining state: everything a checkpoint must hold to resume exactly."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ecgjax.methods import registry
from ecgjax.methods.network import PretrainModel


@flax.struct.dataclass
class TrainState:
    """Pytree of arrays, replicated over the mesh.

    step: [] int32. params / batch_stats: online networks ({} batch_stats when there is no
    BatchNorm). opt_state: optax state. moco: the method's state beyond the parameters
    (`Method.init_extra`; {} for most, the MoCo queue and momentum encoder for PCLR, see
    ecgjax.methods.momentum), named for that first user so existing checkpoints restore.
    rng: raw uint32 PRNG key [2].
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    moco: dict
    rng: jax.Array


def example_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict:
    """Zeros with the shapes of a step's batch for this config's method (for `init`)."""
    return registry.get(config.objective.method).example_batch(config, batch_size)


def build_model(config: ml_collections.ConfigDict) -> PretrainModel:
    dtype = jnp.bfloat16 if config.train.bf16 else jnp.float32
    return PretrainModel(model=config.model, objective=config.objective, dtype=dtype)


def init_state(config: ml_collections.ConfigDict, model: PretrainModel,
               optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh parameters, optimizer state and the method's extra state (e.g. a MoCo queue)."""
    method = registry.get(config.objective.method)
    init_rng, state_rng = jax.random.split(rng)
    batch = example_batch(config)
    inputs = method.inputs(config, init_rng, batch["patient"].shape[0])
    variables = model.init({"params": init_rng, "dropout": init_rng}, batch, train=False, inputs=inputs)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=optimizer.init(params), moco=method.init_extra(config, params, batch_stats),
        rng=jax.random.key_data(state_rng) if jnp.issubdtype(state_rng.dtype, jax.dtypes.prng_key)
        else state_rng,
    )


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
