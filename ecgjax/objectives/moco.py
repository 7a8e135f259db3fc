"""MoCo / PCLR pieces (000): queue InfoNCE and the FIFO key queue (the momentum encoder's EMA
update is optax.incremental_update, see ecgjax.methods.momentum).

The queue is a plain pytree triple `(queue [K, D] f32, queue_patient [K] int32, ptr [] int32)`
so it can live in the train state and be checkpointed. Slots not yet written have patient id -1
and are never used as negatives. Defaults follow 000 Table 2: K=38912, tau=0.1, m=0.999.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ecgjax.objectives.contrastive import l2_normalize, masked_infonce, reduce_infonce

EMPTY_SLOT = -1


def moco_infonce(
    q: jax.Array,
    k: jax.Array,
    queue: jax.Array,
    temperature: float = 0.1,
    q_patient: jax.Array | None = None,
    queue_patient: jax.Array | None = None,
    queue_valid: jax.Array | None = None,
    *,
    with_metrics: bool = False,
):
    """InfoNCE of each query against its key (positive) and the queue (negatives), 000 eq. 1.

    Args:
      q: [batch, dim] query-encoder embeddings (gradients flow).
      k: [batch, dim] momentum-encoder embeddings; k[i] is q[i]'s positive (same patient in PCLR).
      queue: [K, dim] past keys. k and queue are wrapped in stop_gradient.
      q_patient, queue_patient: optional [batch] / [K] int patient ids. Queue slots with
        queue_patient < 0 are empty and ignored; when both are given, queue entries of the query's
        own patient are masked out (never negatives).
      queue_valid: optional [K] bool, an explicit filled-slot mask (combined with the above).
    Embeddings are L2-normalised (cosine similarity). In-batch keys of other samples are not
    negatives (000: "negative pairs are only present in the queue").
    """
    q = l2_normalize(q)
    k = l2_normalize(jax.lax.stop_gradient(k))
    queue = l2_normalize(jax.lax.stop_gradient(queue))
    l_pos = jnp.sum(q * k, axis=-1, keepdims=True)  # [B, 1]
    l_neg = q @ queue.T  # [B, K]
    logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature

    negative = jnp.ones(l_neg.shape, bool)
    if queue_valid is not None:
        negative &= jnp.asarray(queue_valid, bool)[None, :]
    if queue_patient is not None:
        queue_patient = jnp.asarray(queue_patient)
        negative &= (queue_patient >= 0)[None, :]
        if q_patient is not None:
            negative &= jnp.asarray(q_patient)[:, None] != queue_patient[None, :]
    batch = q.shape[0]
    positive = jnp.zeros(logits.shape, bool).at[:, 0].set(True)
    negative = jnp.concatenate([jnp.zeros((batch, 1), bool), negative], axis=1)
    return reduce_infonce(*masked_infonce(logits, positive, negative), with_metrics)


def queue_init(size: int, dim: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Empty queue: (queue [size, dim] zeros, queue_patient [size] = -1, ptr = 0)."""
    return (
        jnp.zeros((size, dim), dtype),
        jnp.full((size,), EMPTY_SLOT, jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def queue_enqueue(
    queue: jax.Array,
    queue_patient: jax.Array,
    ptr: jax.Array,
    keys: jax.Array,
    patients: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Write a batch of keys into the FIFO ring buffer, overwriting the oldest entries.

    Args:
      queue: [K, D]; queue_patient: [K] int32; ptr: [] int32 next slot to write.
      keys: [B, D] (stop_gradient applied); patients: [B] int ids >= 0 (use zeros when patient
        ids are not tracked: any id >= 0 marks the slot as filled).
    K need not be a multiple of B: slots are (ptr + arange(B)) mod K. Requires B <= K.
    Returns the updated (queue, queue_patient, ptr).
    """
    size, batch = queue.shape[0], keys.shape[0]
    if batch > size:
        raise ValueError(f"batch of {batch} keys does not fit a queue of size {size}")
    slots = (ptr + jnp.arange(batch, dtype=jnp.int32)) % size
    keys = jax.lax.stop_gradient(keys).astype(queue.dtype)
    queue = queue.at[slots].set(keys, unique_indices=True)
    queue_patient = queue_patient.at[slots].set(jnp.asarray(patients, queue_patient.dtype), unique_indices=True)
    return queue, queue_patient, ((ptr + batch) % size).astype(jnp.int32)

