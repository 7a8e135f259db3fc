"""The pretraining state: everything a checkpoint must hold to resume exactly."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ecgjax.objectives import moco
from ecgjax.train.pretrain_model import PretrainModel, masking_indices


@flax.struct.dataclass
class TrainState:
    """Pytree of arrays, replicated over the mesh.

    step: [] int32. params / batch_stats: online networks ({} batch_stats when there is no
    BatchNorm). opt_state: optax state. moco: {} unless the MoCo queue is on, else
      ema_params, ema_batch_stats: the momentum (key) encoder,
      queue [K, D], queue_patient [K] int32 (-1 = empty slot), queue_ptr [] int32.
    rng: raw uint32 PRNG key [2].
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    moco: dict
    rng: jax.Array


def example_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict:
    """Zeros with the shapes the loader yields for this config's method (for `init`)."""
    leads = config.model.encoder.in_leads
    if config.objective.method == "cpc":
        frame = int(round(config.objective.cpc.frame_s * config.data.fs))
        n_ctx = config.objective.cpc.n_context
        return {"context": jnp.zeros((batch_size, n_ctx, frame, leads)),
                "future": jnp.zeros((batch_size, frame, leads)),
                "patient": jnp.zeros((batch_size,), jnp.int32)}
    t = config.model.encoder.num_samples
    segment = jnp.zeros((batch_size, t, leads))
    return {"segment": segment, "segment_aug": segment, "patient_segment": segment,
            "patient": jnp.zeros((batch_size,), jnp.int32)}


def build_model(config: ml_collections.ConfigDict) -> PretrainModel:
    dtype = jnp.bfloat16 if config.train.bf16 else jnp.float32
    return PretrainModel(model=config.model, objective=config.objective, dtype=dtype)


def init_state(config: ml_collections.ConfigDict, model: PretrainModel,
               optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh parameters, optimizer state and (when MoCo is on) a copy as key encoder + empty queue."""
    init_rng, state_rng = jax.random.split(rng)
    batch = example_batch(config)
    keep = None
    if config.objective.method in ("gl", "hl"):
        keep, _ = masking_indices(init_rng, config, batch_size=2)
    variables = model.init({"params": init_rng, "dropout": init_rng}, batch, train=False,
                           keep_indices=keep)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    mc = config.objective.moco
    moco_state = {}
    if mc.enabled:
        queue, queue_patient, ptr = moco.queue_init(mc.queue_size, config.model.projection.out)
        # Separate buffers: the jitted step donates the state, and a buffer can't be donated twice.
        ema_params, ema_batch_stats = jax.tree.map(jnp.copy, (params, batch_stats))
        moco_state = dict(ema_params=ema_params, ema_batch_stats=ema_batch_stats, queue=queue,
                          queue_patient=queue_patient, queue_ptr=ptr)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=optimizer.init(params), moco=moco_state,
        rng=jax.random.key_data(state_rng) if jnp.issubdtype(state_rng.dtype, jax.dtypes.prng_key)
        else state_rng,
    )


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
