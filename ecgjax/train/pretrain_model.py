"""The networks one pretraining method trains, as one Flax module.

`PretrainModel` holds the encoder and whatever the method adds on top of it:
  projection head (contrastive terms), MAE decoder (reconstruction), attention pooling +
  predictor (CPC). Each method's forward pass returns the arrays its losses need; the losses
  themselves are the pure functions of `ecgjax.objectives`, applied in `ecgjax.train.step`.

Views are encoded in one batched call (their batches concatenated) so the encoder runs once
per step however many views a method uses.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ecgjax.data.leads import LIMB_LEADS
from ecgjax.models import heads
from ecgjax.models.registry import build_encoder, build_mae_decoder
from ecgjax.models.vit1d import num_patches
from ecgjax.objectives import mae

# CL, GL, HL of 003 and CPC of 001. PCLR (000) is CL with a MoCo queue and only the patient term
# (configs/pclr_resnet.py); weights in config.objective.weights switch terms on and off.
METHODS = ("cl", "gl", "hl", "cpc")
RECONSTRUCTS = ("gl", "hl")
CONTRASTS = ("cl", "hl")


def query_views(objective: ml_collections.ConfigDict) -> list[str]:
    """Views the online encoder embeds, in the order of the model's 'z' output.

    In-batch contrast embeds the anchor, its second augmentation and the patient's other segment.
    With a MoCo queue the positives are keys of the momentum encoder, so only the anchor goes
    through the online encoder. The interlead term (002) adds the anchor seen through its limb
    leads only and through its precordial leads only.
    """
    views = ["segment"] if objective.moco.enabled else ["segment", "segment_aug", "patient_segment"]
    if objective.weights.get("interlead", 0.0):
        views += ["limb_only", "precordial_only"]
    return views


def lead_group_view(x, group: str):
    """x [batch, time, 12] with one lead group zeroed: 'limb_only' keeps I..aVF, 'precordial_only' V1..V6."""
    n_limb = len(LIMB_LEADS)
    keep_limb = group == "limb_only"
    mask = jnp.arange(x.shape[-1]) < n_limb
    return x * (mask if keep_limb else ~mask).astype(x.dtype)


def masking_indices(rng, config: ml_collections.ConfigDict, batch_size: int):
    """MAE masks for one step: one independent mask per embedded view and sample.

    Returns (keep_indices [views * batch, n_keep], mask [views * batch, N] True = masked); the
    first `batch_size` rows belong to the anchor view, the one that is reconstructed.
    """
    enc = config.model.encoder
    views = 1 if config.objective.method == "gl" else len(query_views(config.objective))
    return mae.random_masking(rng, views * batch_size, num_patches(enc.num_samples, enc.patch),
                              config.objective.mask_ratio)


class PretrainModel(nn.Module):
    """Encoder + method heads.

    Attributes:
      model: config.model (encoder, projection, decoder, cpc sub-configs).
      objective: config.objective (method, weights, moco, ...).
      leads: input leads (12 for the canonical layout).
    """

    model: ml_collections.ConfigDict
    objective: ml_collections.ConfigDict
    leads: int = 12
    dtype: Any = jnp.float32

    @property
    def method(self) -> str:
        return self.objective.method

    def setup(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pretraining method {self.method!r}; one of {METHODS}")
        enc = self.model.encoder
        if self.method in RECONSTRUCTS and enc.name != "vit1d":
            raise ValueError(f"method {self.method!r} reconstructs masked patches and needs "
                             f"encoder 'vit1d', not {enc.name!r}")
        dtype = jnp.dtype(self.dtype).name
        self.encoder = build_encoder({**enc.to_dict(), "dtype": dtype})
        if self.method in CONTRASTS:
            proj = self.model.projection
            self.projection = heads.ProjectionHead(
                hidden_dims=(proj.hidden, proj.hidden), out_dim=proj.out, dtype=self.dtype)
        if self.method in RECONSTRUCTS:
            dec = self.model.decoder
            self.decoder = build_mae_decoder({
                **enc.to_dict(), "in_leads": self.leads, "dtype": dtype, "decoder_width": dec.width,
                "decoder_depth": dec.depth, "decoder_heads": dec.heads})
        if self.method == "cpc":
            cpc = self.model.cpc
            self.context_pool = heads.AttentionPooling(
                d_model=cpc.d_model, layers=cpc.depth, heads=cpc.heads, dtype=self.dtype)
            self.predictor = nn.Dense(self.encoder.feature_dim, dtype=self.dtype)

    def embed(self, x, *, train: bool):
        """x [batch, time, leads] -> projected embedding [batch, projection.out] (MoCo keys)."""
        return self.projection(self.encoder(x, train=train), train=train)

    def __call__(self, batch: dict, *, train: bool, keep_indices=None):
        """Forward pass of the method.

        Args:
          batch: views from the loader ('segment', 'segment_aug', 'patient_segment' [batch, time,
            leads]; CPC: 'context' [batch, n_context, frame, leads], 'future' [batch, frame, leads]).
          keep_indices: MAE visible patches, [views * batch, n_keep] for 'hl' (one mask per
            embedded view, see `query_views`), [batch, n_keep] for 'gl'.
        Returns a dict of what the losses need:
          'z' [views, batch, proj] projected embeddings (contrastive methods);
          'reconstruction' [batch, N, patch * leads] of the anchor (generative methods);
          'cpc_prediction', 'cpc_future' [batch, features] (CPC).
        """
        if self.method == "cpc":
            context, future = batch["context"], batch["future"]
            b, n_ctx = context.shape[:2]
            frames = jnp.concatenate([context.reshape((b * n_ctx,) + context.shape[2:]), future])
            h = self.encoder(frames, train=train)
            h_context, h_future = h[: b * n_ctx].reshape(b, n_ctx, -1), h[b * n_ctx:]
            return {"cpc_prediction": self.predictor(self.context_pool(h_context, train=train)),
                    "cpc_future": h_future}

        if self.method == "gl":
            tokens = self.encoder(batch["segment"], train=train, keep_indices=keep_indices,
                                  return_tokens=True)
            return {"reconstruction": self.decoder(tokens, keep_indices, train=train)}

        views = query_views(self.objective)
        anchor = batch["segment"]
        x = jnp.concatenate([batch[v] if v in batch else lead_group_view(anchor, v) for v in views])
        b = anchor.shape[0]
        out = {}
        if self.method == "hl":
            # 003 HL: the encoder sees only unmasked patches; the same encodings feed the
            # decoder (reconstruction) and, mean-pooled, the contrastive terms.
            tokens = self.encoder(x, train=train, keep_indices=keep_indices, return_tokens=True)
            out["reconstruction"] = self.decoder(tokens[:b], keep_indices[:b], train=train)
            features = tokens.mean(axis=1)
        else:
            features = self.encoder(x, train=train)
        z = self.projection(features, train=train)
        out["z"] = z.reshape((len(views), b) + z.shape[1:])
        return out
