"""Masked-autoencoder pieces for GL (003 eq. 2): random patch masking and masked L1.

Patches are the ViT's time patches: `patchify(x [B, T, C], patch) -> [B, N, patch * C]`
(time-major within a patch, zero right-padding to whole patches) from ecgjax.models.vit1d,
so patch i of the target is token i of the encoder and of the MAE decoder output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ecgjax.models.vit1d import patchify


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per row, int(N * (1 - mask_ratio)) as in MAE; at least one."""
    n_keep = int(num_patches * (1.0 - mask_ratio))
    if not 1 <= n_keep <= num_patches:
        raise ValueError(f"mask_ratio={mask_ratio} leaves {n_keep} of {num_patches} patches visible")
    return n_keep


def random_masking(
    rng: jax.Array, batch: int, num_patches: int, mask_ratio: float
) -> tuple[jax.Array, jax.Array]:
    """Uniformly random patch masking, independent per row (MAE's shuffle-and-keep).

    Returns:
      keep_indices: [batch, n_keep] int32 visible patch indices, sorted ascending (temporal order);
        n_keep = num_kept(num_patches, mask_ratio). Feed to ViT1D(keep_indices=...) and MAEDecoder.
      mask: [batch, num_patches] bool, True = masked (to reconstruct), False = visible.
    Deterministic for a given rng.
    """
    n_keep = num_kept(num_patches, mask_ratio)
    noise = jax.random.uniform(rng, (batch, num_patches))
    keep = jnp.sort(jnp.argsort(noise, axis=1)[:, :n_keep], axis=1).astype(jnp.int32)
    rows = jnp.arange(batch)[:, None]
    mask = jnp.ones((batch, num_patches), bool).at[rows, keep].set(False)
    return keep, mask


def _normalize_patches(target, weights, eps):
    """Per-patch standardisation of the target over its valid elements (MAE norm_pix_loss)."""
    count = jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1.0)
    mean = jnp.sum(target * weights, axis=-1, keepdims=True) / count
    var = jnp.sum(jnp.square(target - mean) * weights, axis=-1, keepdims=True) / count
    return (target - mean) * jax.lax.rsqrt(var + eps)


def masked_l1(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    *,
    weights: jax.Array | None = None,
    normalize_target: bool = False,
    eps: float = 1e-6,
) -> jax.Array:
    """Mean absolute error over the elements of masked patches only.

    Args:
      pred, target: [batch, num_patches, patch_dim].
      mask: [batch, num_patches] bool, True = masked; visible patches do not contribute.
      weights: optional [batch, num_patches, patch_dim] 0/1 element validity (padding, absent
        leads); invalid elements are excluded from the mean and from target normalisation.
      normalize_target: standardise each target patch (MAE's norm_pix_loss); off by default,
        so the loss is in the signal's units (mV).
    Returns sum(|pred - target| over valid elements of masked patches) / their count (float32).
    """
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    w = jnp.ones_like(target) if weights is None else jnp.asarray(weights, jnp.float32)
    if normalize_target:
        target = _normalize_patches(target, w, eps)
    w = w * jnp.asarray(mask, jnp.float32)[..., None]
    return jnp.sum(jnp.abs(pred - target) * w) / jnp.maximum(jnp.sum(w), 1.0)


def reconstruction_loss(
    pred: jax.Array,
    signal: jax.Array,
    mask: jax.Array,
    patch: int,
    *,
    lead_mask: jax.Array | None = None,
    normalize_target: bool = False,
) -> jax.Array:
    """003 GL term: masked L1 between decoder patches and the patchified input signal.

    Args:
      pred: [batch, num_patches, patch * leads] decoder output.
      signal: [batch, time, leads] the un-masked input (target).
      mask: [batch, num_patches] bool, True = masked.
      lead_mask: optional [batch, leads] bool/0-1; absent (zero-filled) leads are not scored.
    Zero padding added by patchify to the last patch is not scored either.
    """
    target = patchify(signal.astype(jnp.float32), patch)
    present = jnp.ones(signal.shape, jnp.float32)
    if lead_mask is not None:
        present = present * jnp.asarray(lead_mask, jnp.float32)[:, None, :]
    weights = patchify(present, patch)
    return masked_l1(pred, target, mask, weights=weights, normalize_target=normalize_target)
