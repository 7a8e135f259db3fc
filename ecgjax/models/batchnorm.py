"""BatchNorm (+ ReLU) over every axis but the last, with a one-pass backward in training.

A drop-in for `flax.linen.BatchNorm` (axis=-1, fast variance, float32 statistics) followed by an
optional ReLU: the same variables ('params': scale, bias; 'batch_stats': mean, var, each
[features]), the same running-statistics update (momentum, the biased batch variance, none while
initialising) and the same eval-mode output. In training its `jax.custom_vjp` keeps only the input,
the batch mean and the inverse standard deviation, recomputes the normalised value and gives the
closed-form gradient in one reduction and one element-wise pass, where autodiff of flax's module
keeps several intermediates. Statistics are means over the whole (global) batch: under jit with the
batch sharded over the mesh, XLA inserts the cross-device reductions, as it does for flax's module.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _train_norm(x, scale, bias, epsilon: float, relu: bool):
    """x [..., C], scale/bias [C] (one float dtype) -> (y [..., C], batch mean [C], biased batch var [C])."""
    return _train_norm_fwd(x, scale, bias, epsilon, relu)[0]


def _stats(x):
    """Mean and biased variance over all axes but the last, as flax computes them (E[x^2] - E[x]^2,
    clipped at 0)."""
    axes = tuple(range(x.ndim - 1))
    mean, mean2 = x.mean(axes), jnp.square(x).mean(axes)
    return mean, jnp.maximum(0.0, mean2 - jnp.square(mean))


def _train_norm_fwd(x, scale, bias, epsilon, relu):
    mean, var = _stats(x)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x - mean) * (inv * scale) + bias
    if relu:
        y = jnp.maximum(y, 0.0)
    return (y, mean, var), (x, mean, inv, scale, bias)


def _train_norm_bwd(epsilon, relu, saved, cotangents):
    """The batch mean and variance outputs only feed the running statistics: no gradient."""
    del epsilon
    x, mean, inv, scale, bias = saved
    dy = cotangents[0]
    axes = tuple(range(x.ndim - 1))
    xhat = (x - mean) * inv
    if relu:
        dy = jnp.where((x - mean) * (inv * scale) + bias > 0, dy, 0.0)  # the forward's y, bit for bit
    dbias = dy.sum(axes)
    dscale = (dy * xhat).sum(axes)
    n = x.size // x.shape[-1]
    dx = (scale * inv) * (dy - (dbias + xhat * dscale) / n)
    return dx, dscale, dbias


_train_norm.defvjp(_train_norm_fwd, _train_norm_bwd)


class BatchNorm(nn.Module):
    """[..., features] -> [..., features]: flax.linen.BatchNorm(axis=-1), then ReLU if `relu`."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    relu: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        # As flax: statistics and normalisation in at least float32 (float64 stays float64).
        compute = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        x, scale, bias = x.astype(compute), scale.astype(compute), bias.astype(compute)
        if self.use_running_average:
            y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
            return (jnp.maximum(y, 0.0) if self.relu else y).astype(dtype)
        y, mean, var = _train_norm(x, scale, bias, self.epsilon, self.relu)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(dtype)
