"""Transformer encoder layers shared by the ViT, the MAE decoder and attention pooling.

Self-attention uses one fused qkv projection and `jax.nn.dot_product_attention`, which lets XLA
(or cuDNN on GPU) pick a fused kernel. Attention weights have no dropout (that kernel has none);
dropout acts on the residual branches and the MLP hidden layer instead. Stochastic depth
(`drop_path`, Huang et al. 2016) drops a whole residual branch per example, the regulariser ViT
fine-tuning recipes use; the rate grows linearly from 0 at the first block to `drop_path` at the last.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models.products import Dense, DenseGeneral

Dtype = Any


class SelfAttention(nn.Module):
    """Multi-head self-attention: [batch, tokens, width] -> [batch, tokens, width]."""

    heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        if width % self.heads:
            raise ValueError(f"width {width} is not divisible by heads {self.heads}")
        head_dim = width // self.heads
        qkv = DenseGeneral(
            (3, self.heads, head_dim), dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(), name="qkv")(x)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        y = jax.nn.dot_product_attention(q, k, v)  # [batch, tokens, heads, head_dim]
        return DenseGeneral(
            width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(), name="out")(y)


class MlpBlock(nn.Module):
    """Dense -> GELU -> dropout -> Dense, back to the input width."""

    hidden: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        dense = lambda n, name: Dense(  # noqa: E731
            n, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(), name=name)
        y = nn.gelu(dense(self.hidden, "fc1")(x))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return dense(x.shape[-1], "fc2")(y)


class TransformerBlock(nn.Module):
    """One encoder layer, [batch, tokens, width] -> same.

    pre_norm=True: x + attn(LN(x)), x + mlp(LN(x)) (ViT; needs a final LN after the stack).
    pre_norm=False: LN(x + attn(x)), LN(x + mlp(x)) (Vaswani et al.; used by 001's attention pooling).
    """

    heads: int
    mlp_dim: int
    dropout: float = 0.0
    pre_norm: bool = True
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _branch_dropper(self, train: bool):
        """Residual branch [batch, tokens, width] -> zeroed for a drop_path share of the examples
        (the rest scaled by 1 / keep, so the expectation is unchanged); identity in evaluation."""
        dropout = nn.Dropout(self.dropout, deterministic=not train)
        if not train or self.drop_path <= 0.0:
            return dropout
        keep = 1.0 - self.drop_path

        def drop(y):
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1))
            return jnp.where(mask, dropout(y) / keep, 0.0).astype(y.dtype)
        return drop

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        drop = self._branch_dropper(train)
        attn = SelfAttention(self.heads, dtype=self.dtype, param_dtype=self.param_dtype, name="attn")
        mlp = MlpBlock(self.mlp_dim, self.dropout, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="mlp")
        if self.pre_norm:
            x = x + drop(attn(norm("norm1")(x)))
            return x + drop(mlp(norm("norm2")(x), train=train))
        x = norm("norm1")(x + drop(attn(x)))
        return norm("norm2")(x + drop(mlp(x, train=train)))


class TransformerStack(nn.Module):
    """`depth` TransformerBlocks; with pre_norm a final LayerNorm closes the stack."""

    depth: int
    heads: int
    mlp_dim: int
    dropout: float = 0.0
    pre_norm: bool = True
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        for i in range(self.depth):
            rate = self.drop_path * i / max(self.depth - 1, 1)
            x = TransformerBlock(self.heads, self.mlp_dim, self.dropout, self.pre_norm, rate,
                                 dtype=self.dtype, param_dtype=self.param_dtype,
                                 name=f"block{i}")(x, train=train)
        if self.pre_norm:
            x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="final_norm")(x)
        return x
