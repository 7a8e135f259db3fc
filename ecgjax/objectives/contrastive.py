"""In-batch contrastive losses (InfoNCE family) as pure jax.numpy functions.

Shared conventions (also used by moco.py and cpc.py):
- Embeddings are upcast to float32 and L2-normalised (cosine similarity) before the softmax,
  so bfloat16 activations are safe.
- Every loss is built on `masked_infonce`: for anchor i with positive set P(i) and negative set
  N(i) (disjoint, never containing i itself),

      loss_i = mean_{p in P(i)} -log( exp(s_ip) / (exp(s_ip) + sum_{n in N(i)} exp(s_in)) ),

  i.e. each positive competes only against the negatives, and other positives of the same anchor
  are never treated as negatives. With exactly one positive per anchor this is plain InfoNCE
  (003 eq. 1, 000 eq. 1-2). The batch loss is the mean over anchors that have at least one
  positive; anchors without positives (e.g. a missing lead) are ignored.
- Functions return a float32 scalar; with `with_metrics=True` they return `(loss, metrics)` where
  metrics['top1'] is the fraction of anchors whose highest-scoring candidate is a positive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Finite stand-in for -inf: keeps logsumexp and its gradient NaN-free when a row has no entries.
_MASKED_LOGIT = -1e9
_NORM_EPS = 1e-6


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = _NORM_EPS) -> jax.Array:
    """x / max(||x||, eps) along `axis`, computed in float32."""
    x = x.astype(jnp.float32)
    sum_sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sum_sq, eps * eps))


def masked_infonce(
    logits: jax.Array, positive: jax.Array, negative: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Multi-positive InfoNCE from a logit matrix and positive/negative masks.

    Args:
      logits: [anchors, candidates] similarities already divided by the temperature.
      positive: [anchors, candidates] bool, True where the candidate is a positive of the anchor.
      negative: [anchors, candidates] bool, True where the candidate is a negative (disjoint from
        `positive`; entries in neither mask are ignored).

    Returns:
      (per_anchor_loss [anchors], has_positive [anchors] bool, top1_correct [anchors] bool).
    """
    logits = logits.astype(jnp.float32)
    neg_lse = jax.nn.logsumexp(jnp.where(negative, logits, _MASKED_LOGIT), axis=-1, keepdims=True)
    per_pair = jnp.logaddexp(logits, neg_lse) - logits  # -log softmax of each positive vs negatives
    num_pos = jnp.sum(positive, axis=-1)
    per_anchor = jnp.sum(jnp.where(positive, per_pair, 0.0), axis=-1) / jnp.maximum(num_pos, 1)
    best_pos = jnp.max(jnp.where(positive, logits, _MASKED_LOGIT), axis=-1)
    best_neg = jnp.max(jnp.where(negative, logits, _MASKED_LOGIT), axis=-1)
    return per_anchor, num_pos > 0, best_pos > best_neg


def reduce_infonce(per_anchor, has_positive, top1, with_metrics: bool):
    """Mean of `masked_infonce` outputs over anchors with a positive; optionally with {'top1'}."""
    weight = has_positive.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(weight), 1.0)
    loss = jnp.sum(per_anchor * weight) / denom
    if not with_metrics:
        return loss
    return loss, {"top1": jnp.sum(top1 * weight) / denom}


def _two_view_infonce(z1, z2, group_ids, temperature, with_metrics):
    """NT-Xent over the 2B embeddings [z1; z2]: same-group pairs are positives, others negatives."""
    z = l2_normalize(jnp.concatenate([z1, z2], axis=0))  # [2B, D]
    logits = (z @ z.T) / temperature
    groups = jnp.concatenate([group_ids, group_ids], axis=0)
    not_self = ~jnp.eye(z.shape[0], dtype=bool)
    same = groups[:, None] == groups[None, :]
    return reduce_infonce(*masked_infonce(logits, same & not_self, ~same), with_metrics)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = 0.1, *, with_metrics: bool = False):
    """SimCLR NT-Xent: z1[i] and z2[i] are the only positives of each other.

    Args:
      z1, z2: [batch, dim] embeddings of two views.
    Each of the 2B embeddings is an anchor with 2B-2 in-batch negatives; the loss is symmetric
    (mean over all 2B anchors). Equals log(2B-1) when all similarities are equal.
    """
    return _two_view_infonce(z1, z2, jnp.arange(z1.shape[0]), temperature, with_metrics)


def sample_contrastive(z1: jax.Array, z2: jax.Array, temperature: float = 0.1, *, with_metrics: bool = False):
    """003 sample-level term: z1, z2 [batch, dim] are two augmentations of the same segment (NT-Xent)."""
    return nt_xent(z1, z2, temperature, with_metrics=with_metrics)


def patient_contrastive(
    z1: jax.Array,
    z2: jax.Array,
    patient_ids: jax.Array,
    temperature: float = 0.1,
    *,
    with_metrics: bool = False,
):
    """003 patient-level term: every pair of embeddings from the same patient is a positive.

    Args:
      z1: [batch, dim] anchor segments; z2: [batch, dim] other segments of the same patients
        (z1[i] and z2[i] share patient_ids[i]).
      patient_ids: [batch] int.
    Over the 2B embeddings, positives of an anchor are all other embeddings with its patient id
    (averaged, see module doc) and negatives are all embeddings of other patients; same-patient
    entries are never negatives. With all patient ids distinct this equals `nt_xent`.
    """
    return _two_view_infonce(z1, z2, jnp.asarray(patient_ids), temperature, with_metrics)


def intersegment_contrastive(
    z_seg_a: jax.Array,
    z_seg_b: jax.Array,
    patient_ids: jax.Array | None = None,
    temperature: float = 0.1,
    *,
    with_metrics: bool = False,
):
    """CMSC (CLOCS / 002 intersegment): two segments of one recording are positives.

    Args:
      z_seg_a, z_seg_b: [batch, dim] embeddings of two (e.g. adjacent) segments of each recording.
      patient_ids: optional [batch] int; when given, all cross-segment pairs of the same patient are
        positives (patient-aware CMSC) and are never negatives.
    As in CLOCS, only cross-segment similarities a_i.b_j are used, symmetrically (rows anchor a,
    columns anchor b): each anchor has B-1 negatives (fewer with patient ids).
    """
    batch = z_seg_a.shape[0]
    ids = jnp.arange(batch) if patient_ids is None else jnp.asarray(patient_ids)
    a, b = l2_normalize(z_seg_a), l2_normalize(z_seg_b)
    logits_ab = (a @ b.T) / temperature  # [B, B]
    same = ids[:, None] == ids[None, :]
    logits = jnp.concatenate([logits_ab, logits_ab.T], axis=0)  # rows: anchors a then anchors b
    positive = jnp.concatenate([same, same.T], axis=0)
    return reduce_infonce(*masked_infonce(logits, positive, ~positive), with_metrics)


def interlead_contrastive(
    z_leads: jax.Array,
    temperature: float = 0.1,
    *,
    lead_mask: jax.Array | None = None,
    patient_ids: jax.Array | None = None,
    with_metrics: bool = False,
):
    """CMLC (CLOCS / 002 interlead): embeddings of different leads of one segment are positives.

    Args:
      z_leads: [batch, leads, dim] one embedding per lead (or lead group) of each segment.
      lead_mask: optional [batch, leads] bool/0-1; absent leads are neither anchors, positives
        nor negatives.
      patient_ids: optional [batch] int; same-patient entries are positives, never negatives.
    For every ordered lead pair (l, m), l != m, embedding (i, l) is contrasted against the lead-m
    embeddings of the batch (positive: the same segment's lead m; negatives: other segments' lead m),
    as CLOCS does over lead pairs; the loss is the mean over all valid (pair, anchor) rows.
    """
    batch, leads, _ = z_leads.shape
    z = l2_normalize(z_leads)
    logits = jnp.einsum("ild,jmd->lmij", z, z) / temperature  # [L, L, B, B]
    ids = jnp.arange(batch) if patient_ids is None else jnp.asarray(patient_ids)
    same = ids[:, None] == ids[None, :]  # [B, B]
    present = jnp.ones((batch, leads), bool) if lead_mask is None else jnp.asarray(lead_mask).astype(bool)
    present_lb = present.T  # [L, B]
    valid = (
        ~jnp.eye(leads, dtype=bool)[:, :, None, None]
        & present_lb[:, None, :, None]  # anchor lead l present in segment i
        & present_lb[None, :, None, :]  # candidate lead m present in segment j
    )  # [L, L, B, B]
    positive = valid & same
    negative = valid & ~same
    flat = lambda x: x.reshape(leads * leads * batch, batch)
    return reduce_infonce(*masked_infonce(flat(logits), flat(positive), flat(negative)), with_metrics)
