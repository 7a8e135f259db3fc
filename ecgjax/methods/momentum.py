"""MoCo's state beyond the parameters (000): a momentum (EMA) copy of the networks and a FIFO
queue of its past keys, kept in `TrainState.moco` as

    ema_params, ema_batch_stats: the key encoder (same trees as params / batch_stats),
    queue [K, D] f32, queue_patient [K] int32 (-1 = empty slot), queue_ptr [] int32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ecgjax.methods.network import apply_model
from ecgjax.objectives import moco


def init(mc: ml_collections.ConfigDict, dim: int, params, batch_stats) -> dict:
    """The key encoder as a copy of the online one, and an empty queue of `mc.queue_size` x dim."""
    queue, queue_patient, ptr = moco.queue_init(mc.queue_size, dim)
    # Separate buffers: the jitted step donates the state, and a buffer can't be donated twice.
    ema_params, ema_batch_stats = jax.tree.map(jnp.copy, (params, batch_stats))
    return dict(ema_params=ema_params, ema_batch_stats=ema_batch_stats, queue=queue,
                queue_patient=queue_patient, queue_ptr=ptr)


def _embed(net, x, *, train: bool):
    """x [batch, time, leads] -> projected embedding [batch, projection.out]."""
    return net.projection(net.encoder(x, train=train), train=train)


def keys(model, state: dict, batch: dict, views: list[str], rng) -> dict:
    """{view: [batch, D]} momentum-encoder embeddings of `views` (no gradient).

    Run in train mode, as in MoCo: the key encoder's BatchNorm uses batch statistics (its own
    running averages are the EMA's, not updated here).
    """
    x = jnp.concatenate([batch[v] for v in views])
    k, _ = apply_model(model, state["ema_params"], state["ema_batch_stats"], x, rng=rng, train=True,
                       method=_embed)
    k = jax.lax.stop_gradient(k).reshape((len(views), batch["patient"].shape[0], -1))
    return dict(zip(views, k))


def update(momentum: float, state: dict, params, batch_stats, new_keys, patients) -> dict:
    """After a step: key encoder <- momentum * key + (1 - momentum) * online; the patient keys
    new_keys [batch, D] (their patients [batch]) replace the oldest queue entries."""
    queue, queue_patient, ptr = moco.queue_enqueue(
        state["queue"], state["queue_patient"], state["queue_ptr"], new_keys, patients)
    ema = lambda old, new: optax.incremental_update(new, old, 1.0 - momentum)  # noqa: E731
    return dict(ema_params=ema(state["ema_params"], params),
                ema_batch_stats=ema(state["ema_batch_stats"], batch_stats),
                queue=queue, queue_patient=queue_patient, queue_ptr=ptr)
