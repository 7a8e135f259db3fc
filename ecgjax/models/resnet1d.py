"""1D ResNets: the family of 000 (Appendix B, Table 1) and the pre-activation v2 nets of 001.

000: stem conv kernel 15 stride 2 -> BN -> ReLU -> average pool (3, stride 2); four stages of
  post-activation blocks with kernel 3 whose output channels are chan_start x (1, 2, 4, 8); the
  bottleneck nets (50/101/152) keep those output channels and squeeze to a quarter inside each
  block (mid = out / 4). This rule reproduces every parameter count of Table 1 within 2%.
001: ResNet-18v2/34v2/50v2 (He et al., identity mappings): stem conv 7 stride 2 -> max pool
  (3, stride 2); pre-activation blocks with kernels 7, 5, 5, 3 per stage; channels 64 x (1, 2, 4, 8),
  bottleneck blocks expanding 4x (ResNet-50v2 ends with 2048 channels); final BN -> ReLU.
Both end in a global average pool: features [batch, channels].

BatchNorm running statistics live in the 'batch_stats' collection: call
`apply(variables, x, train=True, mutable=['batch_stats'])` while training.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ecgjax.models.products import Conv

Dtype = Any

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
               152: (3, 8, 36, 3)}
# 000 Table 1: chan_start of the x1 models (the x2 models double it).
TABLE1_CHAN_START = {18: 16, 34: 32, 50: 32, 101: 32, 152: 64}


def _is_bottleneck(depth: int) -> bool:
    return depth >= 50


class ResidualBlock(nn.Module):
    """Basic (two k-convs) or bottleneck (1, k, 1) block, post- or pre-activation.

    [batch, time, in_ch] -> [batch, time / stride, features].
    """

    features: int
    kernel: int
    stride: int
    bottleneck: bool
    preact: bool
    expansion: int = 4
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = lambda f, k, s, name: Conv(  # noqa: E731
            f, (k,), strides=(s,), padding="SAME", use_bias=False, dtype=self.dtype,
            param_dtype=self.param_dtype, kernel_init=nn.initializers.kaiming_normal(), name=name)
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        if self.bottleneck:
            mid = self.features // self.expansion
            convs = [(mid, 1, 1), (mid, self.kernel, self.stride), (self.features, 1, 1)]
        else:
            convs = [(self.features, self.kernel, self.stride), (self.features, self.kernel, 1)]
        needs_projection = x.shape[-1] != self.features or self.stride > 1

        if self.preact:
            pre = nn.relu(norm("preact_norm")(x))
            shortcut = conv(self.features, 1, self.stride, "proj_conv")(pre) if needs_projection else x
            y = pre
            for i, (f, k, s) in enumerate(convs):
                if i:
                    y = nn.relu(norm(f"norm{i}")(y))
                y = conv(f, k, s, f"conv{i}")(y)
            return y + shortcut

        shortcut = x
        if needs_projection:
            shortcut = norm("proj_norm")(conv(self.features, 1, self.stride, "proj_conv")(x))
        y = x
        for i, (f, k, s) in enumerate(convs):
            y = norm(f"norm{i}")(conv(f, k, s, f"conv{i}")(y))
            if i < len(convs) - 1:
                y = nn.relu(y)
        return nn.relu(y + shortcut)


class ResNet1D(nn.Module):
    """1D ResNet encoder: [batch, time, leads] -> features [batch, stage_features[-1]]."""

    stage_sizes: Sequence[int]
    stage_features: Sequence[int]
    kernel_sizes: Sequence[int]
    bottleneck: bool
    preact: bool
    stem_features: int
    stem_kernel: int
    stem_pool: str = "avg"  # 000 replaces the max pool by an average pool
    expansion: int = 4
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.stage_features[-1]

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x [batch, time, leads] -> [batch, feature_dim]; train uses batch statistics in BN."""
        x = Conv(self.stem_features, (self.stem_kernel,), strides=(2,), padding="SAME",
                 use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=nn.initializers.kaiming_normal(), name="input_conv")(x.astype(self.dtype))
        if not self.preact:  # pre-activation nets normalise at the start of the first block
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=self.param_dtype, name="stem_norm")(x)
            x = nn.relu(x)
        pool = {"avg": nn.avg_pool, "max": nn.max_pool}[self.stem_pool]
        x = pool(x, (3,), strides=(2,), padding="SAME")
        for stage, (blocks, features, kernel) in enumerate(
                zip(self.stage_sizes, self.stage_features, self.kernel_sizes)):
            for block in range(blocks):
                x = ResidualBlock(features, kernel, 2 if stage and not block else 1,
                                  self.bottleneck, self.preact, self.expansion, self.bn_momentum,
                                  dtype=self.dtype, param_dtype=self.param_dtype,
                                  name=f"stage{stage}_block{block}")(x, train=train)
        if self.preact:
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=self.param_dtype, name="final_norm")(x)
            x = nn.relu(x)
        return x.mean(axis=1)


def kite_resnet(depth: int, chan_start: int | None = None, **kwargs) -> ResNet1D:
    """ResNet{depth} of 000 (Appendix B); chan_start defaults to Table 1 (x2 models: double it)."""
    chan_start = chan_start or TABLE1_CHAN_START[depth]
    return ResNet1D(
        stage_sizes=STAGE_SIZES[depth], stage_features=tuple(chan_start * 2**s for s in range(4)),
        kernel_sizes=(3, 3, 3, 3), bottleneck=_is_bottleneck(depth), preact=False,
        stem_features=chan_start, stem_kernel=15, stem_pool="avg", **kwargs)


def resnet_v2(depth: int, chan_start: int | None = None,
              kernel_sizes: Sequence[int] = (7, 5, 5, 3), **kwargs) -> ResNet1D:
    """ResNet-{depth}v2 of 001: pre-activation, kernels 7/5/5/3, bottlenecks expand 4x."""
    chan_start = chan_start or 64
    expansion = 4 if _is_bottleneck(depth) else 1
    return ResNet1D(
        stage_sizes=STAGE_SIZES[depth],
        stage_features=tuple(expansion * chan_start * 2**s for s in range(4)),
        kernel_sizes=tuple(kernel_sizes), bottleneck=_is_bottleneck(depth), preact=True,
        stem_features=chan_start, stem_kernel=7, stem_pool="max", **kwargs)

