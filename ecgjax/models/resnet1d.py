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
import jax
import jax.numpy as jnp

from ecgjax.models.batchnorm import BatchNorm

Dtype = Any

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
               152: (3, 8, 36, 3)}
# 000 Table 1: chan_start of the x1 models (the x2 models double it).
TABLE1_CHAN_START = {18: 16, 34: 32, 50: 32, 101: 32, 152: 64}


def _is_bottleneck(depth: int) -> bool:
    return depth >= 50


def conv_stride2(x, kernel):
    """x [batch, time, in_ch], kernel [k, in_ch, out_ch] -> [batch, ceil(time / 2), out_ch]: what
    lax.conv_general_dilated with stride 2 and padding SAME (XLA's split: the odd tap on the right)
    computes, written as a stride-1 convolution over pairs of samples ([batch, time / 2, 2 in_ch],
    the kernel's taps paired to [k // 2, 2 in_ch, out_ch]) plus, for odd k, the last tap as a
    1-tap convolution over the even samples. Same taps, same FLOPs, but its input gradient is a
    plain stride-1 convolution instead of one over the stride-dilated cotangent (zeros included)."""
    batch, time, channels = x.shape
    k = kernel.shape[0]
    out = -(-time // 2)
    left = max(2 * (out - 1) + k - time, 0) // 2
    pairs = out + (k - 1) // 2  # the pairs the last output reads
    p = jnp.pad(x, ((0, 0), (left, 2 * pairs - time - left), (0, 0))).reshape(batch, pairs, 2 * channels)
    conv1 = lambda lhs, rhs: jax.lax.conv_general_dilated(  # noqa: E731
        lhs, rhs, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
    half = k // 2
    y = 0.0
    if half:
        y = conv1(p[:, :out + half - 1], kernel[:2 * half].reshape(half, 2 * channels, kernel.shape[-1]))
    if k % 2:
        y = y + conv1(p[:, half:half + out, :channels], kernel[-1:])
    return y


class StridedConv(nn.Module):
    """nn.Conv(features, (kernel,), strides=(2,), padding="SAME", use_bias=False): its variable
    ('kernel' [kernel, in_ch, features]) and output, through `conv_stride2`.
    [batch, time, in_ch] -> [batch, ceil(time / 2), features]."""

    features: int
    kernel: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.kaiming_normal(),
                            (self.kernel, x.shape[-1], self.features), self.param_dtype)
        return conv_stride2(x.astype(self.dtype), kernel.astype(self.dtype))


def conv(features: int, kernel: int, stride: int, name: str, dtype: Dtype, param_dtype: Dtype):
    """A bias-free SAME convolution [batch, time, in_ch] -> [batch, ceil(time / stride), features]."""
    return nn.Conv(features, (kernel,), strides=(stride,), padding="SAME", use_bias=False, dtype=dtype,
                   param_dtype=param_dtype, kernel_init=nn.initializers.kaiming_normal(), name=name)


_flax_conv = conv  # what `conv` is, also where a benchmark or test swaps `conv` for a candidate


def norm(train: bool, momentum: float, relu: bool, name: str, dtype: Dtype, param_dtype: Dtype):
    """BatchNorm (batch statistics when `train`), then ReLU if `relu`: [..., ch] -> [..., ch]."""
    bn = nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name)
    return (lambda x: nn.relu(bn(x))) if relu else bn


def fused_norm(train: bool, momentum: float, relu: bool, name: str, dtype: Dtype, param_dtype: Dtype):
    """`norm` through ecgjax.models.batchnorm.BatchNorm (custom VJP, ReLU fused): an A/B candidate."""
    return BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, relu=relu,
                     dtype=dtype, param_dtype=param_dtype, name=name)


def strided_conv(features: int, kernel: int, stride: int, name: str, dtype: Dtype, param_dtype: Dtype):
    """`conv` with stride 2 (kernel > 1) through `StridedConv`: an A/B candidate."""
    if stride == 2 and kernel > 1:  # a strided 1-tap convolution reads every other sample
        return StridedConv(features, kernel, dtype=dtype, param_dtype=param_dtype, name=name)
    return _flax_conv(features, kernel, stride, name, dtype, param_dtype)


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
        types = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv_ = lambda f, k, s, name: conv(f, k, s, name, **types)  # noqa: E731
        norm_ = lambda name, relu: norm(train, self.bn_momentum, relu, name, **types)  # noqa: E731
        if self.bottleneck:
            mid = self.features // self.expansion
            convs = [(mid, 1, 1), (mid, self.kernel, self.stride), (self.features, 1, 1)]
        else:
            convs = [(self.features, self.kernel, self.stride), (self.features, self.kernel, 1)]
        needs_projection = x.shape[-1] != self.features or self.stride > 1

        if self.preact:
            pre = norm_("preact_norm", True)(x)
            shortcut = conv_(self.features, 1, self.stride, "proj_conv")(pre) if needs_projection else x
            y = pre
            for i, (f, k, s) in enumerate(convs):
                if i:
                    y = norm_(f"norm{i}", True)(y)
                y = conv_(f, k, s, f"conv{i}")(y)
            return y + shortcut

        shortcut = x
        if needs_projection:
            shortcut = norm_("proj_norm", False)(conv_(self.features, 1, self.stride, "proj_conv")(x))
        y = x
        for i, (f, k, s) in enumerate(convs):
            y = norm_(f"norm{i}", i < len(convs) - 1)(conv_(f, k, s, f"conv{i}")(y))
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
        types = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(self.stem_features, self.stem_kernel, 2, "input_conv", **types)(x.astype(self.dtype))
        if not self.preact:  # pre-activation nets normalise at the start of the first block
            x = norm(train, self.bn_momentum, True, "stem_norm", **types)(x)
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
            x = norm(train, self.bn_momentum, True, "final_norm", **types)(x)
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

