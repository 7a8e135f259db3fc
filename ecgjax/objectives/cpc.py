"""Future-prediction (CPC) loss as in 001: pick the true future frame among negatives.

The model side (encoder over frames + attention pooling with a learnable c0 token) produces a
context vector c per sample and an encoding h of the future frame; 001 scores them with a plain
dot product and a softmax (cross-entropy on the positive). Context size (frames in the context)
and offset (frames between the context and the future) are data-side parameters: the loader
builds batch['context'] [B, n_context, T_frame, 12] and batch['future'] [B, T_frame, 12] at the
chosen offset. Only the number of negatives is a loss parameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ecgjax.objectives.contrastive import l2_normalize, masked_infonce, reduce_infonce


def _sampled_negative_mask(rng: jax.Array, steps: int, batch: int, num_negatives: int) -> jax.Array:
    """[steps, batch, batch] bool: for each anchor, `num_negatives` distinct other batch rows."""
    scores = jax.random.uniform(rng, (steps, batch, batch))
    scores = jnp.where(jnp.eye(batch, dtype=bool), -1.0, scores)  # never pick the anchor itself
    _, chosen = jax.lax.top_k(scores, num_negatives)  # [S, B, ns]
    return jnp.any(jax.nn.one_hot(chosen, batch, dtype=jnp.bool_), axis=-2)


def cpc_infonce(
    predictions: jax.Array,
    futures: jax.Array,
    num_negatives: int | None = None,
    rng: jax.Array | None = None,
    temperature: float = 1.0,
    *,
    normalize: bool = False,
    with_metrics: bool = False,
):
    """Cross-entropy of the true future against other samples' futures.

    Args:
      predictions: [batch, dim] context vectors c, or [batch, steps, dim] one prediction per
        future offset (step-wise variant; negatives come from the same step).
      futures: same shape as predictions, encodings h of the true future frames.
      num_negatives: None uses all B-1 other samples' futures; otherwise a random subset of that
        size per anchor (and step), sampled without replacement with `rng` (001's `ns`).
      temperature: logits are (c . h) / temperature; 001 uses the raw dot product (1.0).
      normalize: use cosine instead of dot-product similarity.
    Returns the mean over anchors (and steps) of -log softmax(positive).
    """
    if predictions.shape != futures.shape:
        raise ValueError(f"predictions {predictions.shape} and futures {futures.shape} differ")
    if predictions.ndim == 2:
        predictions, futures = predictions[:, None], futures[:, None]
    batch, steps, _ = predictions.shape
    pred = predictions.astype(jnp.float32)
    fut = futures.astype(jnp.float32)
    if normalize:
        pred, fut = l2_normalize(pred), l2_normalize(fut)
    logits = jnp.einsum("isd,jsd->sij", pred, fut) / temperature  # [S, B, B]

    positive = jnp.broadcast_to(jnp.eye(batch, dtype=bool), logits.shape)
    if num_negatives is None:
        negative = ~positive
    else:
        if not 1 <= num_negatives <= batch - 1:
            raise ValueError(f"num_negatives={num_negatives} must be in [1, batch-1={batch - 1}]")
        if rng is None:
            raise ValueError("num_negatives needs an rng to sample the negatives")
        negative = _sampled_negative_mask(rng, steps, batch, num_negatives)
    flat = (steps * batch, batch)
    masks = (positive.reshape(flat), negative.reshape(flat))
    return reduce_infonce(*masked_infonce(logits.reshape(flat), *masks), with_metrics)
