"""Dual-stream encoder over grouped leads (002): limb and precordial leads encoded separately.

Fusion choice: each stream has its own full encoder (stem and trunk, no shared weights, since limb
and precordial leads see the heart from different planes); their features are concatenated and a
Dense layer maps them back to `features` (the base encoder's width by default), so downstream
heads see the same feature size as with a single-stream encoder.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ecgjax.models.products import Dense

Dtype = Any

# Columns of the canonical 12-lead order (ecgjax.data.leads.CANONICAL_LEADS).
LIMB_COLUMNS = slice(0, 6)        # I, II, III, aVR, aVL, aVF
PRECORDIAL_COLUMNS = slice(6, 12)  # V1..V6


class DualStreamEncoder(nn.Module):
    """[batch, time, 12] -> [batch, features].

    Attributes:
      limb_encoder, precordial_encoder: any encoders `(x [batch, time, 6], *, train) -> [batch, D]`
        (two separate instances, e.g. two builds of the same config).
      features: fused feature size.
    """

    limb_encoder: nn.Module
    precordial_encoder: nn.Module
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.features

    @nn.compact
    def __call__(self, x, *, train: bool):
        if x.shape[-1] != 12:
            raise ValueError(f"dual-stream encoder needs the 12 canonical leads, got {x.shape[-1]}")
        limb = self.limb_encoder(x[..., LIMB_COLUMNS], train=train)
        precordial = self.precordial_encoder(x[..., PRECORDIAL_COLUMNS], train=train)
        both = jnp.concatenate([limb, precordial], axis=-1)
        return Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="fuse")(both)
