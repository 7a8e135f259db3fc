"""Heads on top of encoder features: SimCLR-style projection, linear probe, named linear heads on
one encoder (probe, fine-tune, annotation), attention pooling."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ecgjax.models.products import Dense

from ecgjax.models.transformer import TransformerStack

Dtype = Any


class ProjectionHead(nn.Module):
    """3-layer MLP used only during pretraining (000, after SimCLR): [batch, D] -> [batch, out_dim].

    (Dense -> norm -> ReLU) for each hidden size, then a linear output layer.
    norm: 'batch', 'layer' or None. With 'batch', training needs mutable=['batch_stats'].
    """

    hidden_dims: Sequence[int] = (512, 512)
    out_dim: int = 128
    norm: str | None = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        for i, hidden in enumerate(self.hidden_dims):
            x = Dense(hidden, use_bias=self.norm is None, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=f"dense{i}")(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=f"norm{i}")(x)
            elif self.norm == "layer":
                x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm{i}")(x)
            elif self.norm is not None:
                raise ValueError(f"norm must be 'batch', 'layer' or None, got {self.norm!r}")
            x = nn.relu(x)
        return Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f"dense{len(self.hidden_dims)}")(x)


class LinearHead(nn.Module):
    """Linear probe / classifier: [batch, D] -> [batch, num_outputs] logits (float32)."""

    num_outputs: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train  # same behaviour in training and evaluation
        return Dense(self.num_outputs, dtype=jnp.float32, param_dtype=self.param_dtype,
                     name="dense")(x.astype(jnp.float32))


class MultiHead(nn.Module):
    """Named linear heads on one feature vector: [batch, D] -> {name: [batch, k] logits (float32)}.

    outputs: (name, k) per head; each head's parameters live under its name.
    """

    outputs: tuple[tuple[str, int], ...]
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features, *, train: bool = False):
        return {name: LinearHead(k, param_dtype=self.param_dtype, name=name)(features, train=train)
                for name, k in self.outputs}


class EncoderWithHeads(nn.Module):
    """encoder (x [batch, time, leads] -> [batch, D]) then MultiHead -> {name: [batch, k] logits}.

    Parameters: {'encoder': ..., 'heads': {name: ...}}, so pretrained encoder weights graft in
    under 'encoder' and the heads can be trained alone on fixed features.
    """

    encoder: nn.Module
    outputs: tuple[tuple[str, int], ...]

    def setup(self):
        self.heads = MultiHead(self.outputs)

    def __call__(self, x, *, train: bool = False):
        return self.heads(self.encoder(x, train=train))


class AttentionPooling(nn.Module):
    """Transformer attention pooling (001, after Trinh et al.): [batch, N, D] -> [batch, d_model].

    A learnable context token is prepended to the (projected, if D != d_model) tokens; after
    `layers` post-LN encoder layers (Vaswani et al.; d_ff = 2 d_model) its output is the pooled
    vector. 001: 3 layers, d_model 512, 8 heads, no dropout.
    """

    d_model: int = 512
    heads: int = 8
    layers: int = 3
    mlp_dim: int | None = None
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, *, train: bool):
        if tokens.shape[-1] != self.d_model:
            tokens = Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="input_proj")(tokens)
        context = self.param("context_token", nn.initializers.truncated_normal(1.0),
                             (1, 1, self.d_model), self.param_dtype)
        context = jnp.broadcast_to(context.astype(tokens.dtype), (tokens.shape[0], 1, self.d_model))
        x = jnp.concatenate([context, tokens], axis=1)
        x = TransformerStack(self.layers, self.heads, self.mlp_dim or 2 * self.d_model, self.dropout,
                             pre_norm=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="transformer")(x, train=train)
        return x[:, 0]
