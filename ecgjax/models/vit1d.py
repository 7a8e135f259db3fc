"""1D Vision Transformer for ECG (003 §3.2.1) and its MAE decoder.

The signal [batch, time, leads] is cut into non-overlapping patches along time by a 1D convolution
(kernel = stride = patch); a signal whose length is not a whole number of patches is right-padded
with zeros. Patch tokens get learned position embeddings and go through pre-LN transformer blocks.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models.products import Conv, Dense
from ecgjax.models.transformer import TransformerStack

Dtype = Any


def num_patches(num_samples: int, patch: int) -> int:
    """Number of patches covering `num_samples` samples (the last one zero-padded if partial)."""
    return -(-num_samples // patch)


def pad_to_patches(x, patch: int):
    """Right-pads [batch, time, leads] with zeros along time to a whole number of patches."""
    extra = num_patches(x.shape[1], patch) * patch - x.shape[1]
    return jnp.pad(x, ((0, 0), (0, extra), (0, 0))) if extra else x


def patchify(x, patch: int):
    """[batch, time, leads] -> [batch, num_patches, patch * leads] (time-major within a patch).

    Uses the same zero-padding rule as the ViT's patch embedding, so patch i here is token i there.
    """
    x = pad_to_patches(x, patch)
    batch, time, leads = x.shape
    return x.reshape(batch, time // patch, patch * leads)


def unpatchify(patches, patch: int, num_samples: int | None = None):
    """[batch, num_patches, patch * leads] -> [batch, time, leads]; crops to `num_samples` if given."""
    batch, n, dim = patches.shape
    x = patches.reshape(batch, n * patch, dim // patch)
    return x if num_samples is None else x[:, :num_samples]


def gather_tokens(tokens, indices):
    """tokens [batch, n, width], indices [batch, k] int -> [batch, k, width] (order of indices kept)."""
    return jnp.take_along_axis(tokens, indices[..., None], axis=1)


def _position_init(key, shape, dtype=jnp.float32):
    return 0.02 * jax.random.normal(key, shape, dtype)


class ConvPatchEmbed(nn.Module):
    """One token per patch from a small CNN over that patch's own samples (stride-2 convolutions,
    LayerNorm, GELU; then a dense layer over the flattened maps, which keeps where in the patch a
    wave sits). No sample of another patch enters a token, so MAE's visible patches still carry
    nothing of the masked ones. The first convolution is named `input_conv` (lead adaptation).

    x [batch, n * patch, leads] -> [batch, n, width].
    """

    patch: int
    width: int
    features: tuple[int, ...] = (32, 64, 128)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, time, leads = x.shape
        n = time // self.patch
        h = x.reshape(batch * n, self.patch, leads)
        for i, features in enumerate(self.features):
            h = Conv(features, (7 if i == 0 else 5,), strides=(2,), padding="SAME", dtype=self.dtype,
                     param_dtype=self.param_dtype, name="input_conv" if i == 0 else f"conv{i}")(h)
            h = nn.gelu(nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm{i}")(h))
        return Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="proj")(h.reshape(batch, n, -1))


class ViT1D(nn.Module):
    """ViT encoder over time patches.

    Attributes:
      num_samples: longest input (in samples) the position table covers, e.g. 2500 = 250 Hz x 10 s.
      patch: samples per patch (003 grid: 60, 125, 250).
      stem: how a patch becomes a token: 'linear' (one convolution, kernel = stride = patch: 003's
        patch embedding) or 'conv' (ConvPatchEmbed, a small CNN per patch).
      drop_path: stochastic depth of the deepest block (fine-tuning; 0 in pretraining).
      width, depth, heads, mlp_ratio, dropout: transformer size (003 grid: width 256/512/1024,
        depth 2/4/8).
    """

    num_samples: int = 2500
    patch: int = 125
    width: int = 512
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.0
    stem: str = "linear"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.width

    @property
    def max_patches(self) -> int:
        return num_patches(self.num_samples, self.patch)

    @nn.compact
    def __call__(self, x, *, train: bool, keep_indices=None, return_tokens: bool = False):
        """Encodes ECG segments.

        Args:
          x: [batch, time, leads], time <= num_samples.
          train: enables dropout (then pass rngs={'dropout': key}).
          keep_indices: optional [batch, n_keep] int patch indices; only these tokens (in this
            order) enter the transformer (MAE encodes only the visible patches).
          return_tokens: return the final-LN tokens instead of their mean.
        Returns:
          [batch, width] mean-pooled features, or [batch, n_tokens, width] tokens.
        """
        n = num_patches(x.shape[1], self.patch)
        if n > self.max_patches:
            raise ValueError(f"input of {x.shape[1]} samples gives {n} patches; the position table "
                             f"holds {self.max_patches} (num_samples={self.num_samples})")
        x = pad_to_patches(x.astype(self.dtype), self.patch)
        position = self.param("position", _position_init, (1, self.max_patches, self.width),
                              self.param_dtype)[:, :n].astype(self.dtype)
        if keep_indices is not None:
            # MAE: embed only the visible patches (a quarter at mask ratio 0.75), each with its own
            # position. The conv (kernel = stride = patch) embeds each gathered patch as it would
            # in place; embedding all and gathering after cost ~15% of an HL step's FLOPs.
            batch, k = keep_indices.shape
            x = gather_tokens(patchify(x, self.patch), keep_indices).reshape(batch, k * self.patch, -1)
            position = gather_tokens(jnp.broadcast_to(position, (batch, n, self.width)), keep_indices)
        if self.stem == "conv":
            tokens = ConvPatchEmbed(self.patch, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                                    name="conv_stem")(x)
        elif self.stem == "linear":
            tokens = Conv(self.width, (self.patch,), strides=(self.patch,), padding="VALID",
                          dtype=self.dtype, param_dtype=self.param_dtype, name="input_conv")(x)
        else:
            raise ValueError(f"unknown ViT stem {self.stem!r}: 'linear' or 'conv'")
        tokens = tokens + position
        tokens = nn.Dropout(self.dropout, deterministic=not train)(tokens)
        tokens = TransformerStack(self.depth, self.heads, int(self.width * self.mlp_ratio),
                                  self.dropout, drop_path=self.drop_path, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name="transformer")(tokens, train=train)
        return tokens if return_tokens else tokens.mean(axis=1)


class MAEDecoder(nn.Module):
    """MAE decoder: visible-token encodings -> a prediction for every patch.

    003 uses a decoder half as wide as the encoder. Visible tokens are projected to the decoder
    width and scattered to their patch positions; masked positions hold a learned mask token.

    Attributes:
      num_patches: patches per full segment (N).
      patch_dim: values per patch to predict (patch * leads).
    """

    num_patches: int
    patch_dim: int
    width: int = 256
    depth: int = 2
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, keep_indices, *, train: bool):
        """tokens [batch, n_keep, encoder_width], keep_indices [batch, n_keep] -> [batch, N, patch_dim]."""
        batch = tokens.shape[0]
        visible = Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="embed")(tokens)
        mask_token = self.param("mask_token", _position_init, (1, 1, self.width), self.param_dtype)
        full = jnp.broadcast_to(mask_token.astype(visible.dtype), (batch, self.num_patches, self.width))
        rows = jnp.arange(batch)[:, None]
        full = full.at[rows, keep_indices].set(visible)
        position = self.param("position", _position_init, (1, self.num_patches, self.width),
                              self.param_dtype)
        full = full + position.astype(full.dtype)
        full = TransformerStack(self.depth, self.heads, int(self.width * self.mlp_ratio),
                                self.dropout, dtype=self.dtype, param_dtype=self.param_dtype,
                                name="transformer")(full, train=train)
        return Dense(self.patch_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="predict")(full)
