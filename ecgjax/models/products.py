"""The products behind every Dense and Conv layer: XLA's, or oneDNN's on the AMX tiles of a CPU.

The models build `Dense`, `DenseGeneral` and `Conv` from here: flax's layers with `dot_general` and
`conv_general_dilated`, drop-ins for jax.lax's. On a CPU with AMX (`ecgjax.kernels.onednn.available()`)
a float product at JAX's DEFAULT precision runs as one bf16 pass with float32 accumulation, the
contract DEFAULT has on TPUs (~3x XLA:CPU's float32 throughput on Sapphire Rapids, benchmarks/
RESULTS.md): a Dense product, [..., k] x [k, ...], as one oneDNN matmul; a 1-D convolution [n, w, c]
as oneDNN's convolution; a patch embedding (kernel = stride, no padding) as a matmul over patches.
Custom VJPs give XLA the gradients as oneDNN products too, reading stored operands in place.
Activations, parameters and optimiser stay float32. Anything else, other platforms
(`lax.platform_dependent`), CPUs without AMX, or `jax.default_matmul_precision("float32")` (or
JAX_DEFAULT_MATMUL_PRECISION=float32; "highest" etc. too) keep `jax.lax`'s own product.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.kernels import onednn


# jax_default_matmul_precision values that let a product run as one bf16 pass (JAX's DEFAULT
# contract, what TPUs do); "float32", "highest", "tensorfloat32", ... ask for more and keep XLA's dot.
_ONE_BF16_PASS = (None, "default", "fastest", "bfloat16", "BF16_BF16_F32")


def _routed(lhs, rhs, precision) -> bool:
    """Whether this product goes to oneDNN: a DEFAULT-precision float32 / bf16 product on an AMX CPU
    (a float64 product asks for float64 and keeps it)."""
    return (precision in (None, lax.Precision.DEFAULT)
            and jax.config.jax_default_matmul_precision in _ONE_BF16_PASS
            and all(x.dtype in (jnp.float32, jnp.bfloat16) and x.size for x in (lhs, rhs))
            and onednn.available())


def _on_cpu(fn_cpu, fn_default, *args):
    """fn_cpu where the program is lowered for a CPU, fn_default elsewhere: a GPU or TPU program
    keeps XLA's products in the operands' dtype, whatever CPU its host has."""
    return lax.platform_dependent(*args, cpu=fn_cpu, default=fn_default)


def _matmul(a, b, ta=False, tb=False):
    """[m, k] x [k, n] -> [m, n] float32, operands possibly stored transposed."""
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    return _on_cpu(lambda a, b: onednn.matmul(a, b, ta, tb),
                   lambda a, b: lax.dot_general(a, b, dims, preferred_element_type=jnp.float32), a, b)


@jax.custom_vjp
def _matmul2d(x, w):
    """x [m, k] x w [k, n] -> [m, n] float32."""
    return _matmul(x, w)


def _matmul2d_fwd(x, w):
    return _matmul(x, w), (x, w)


def _matmul2d_bwd(res, g):
    x, w = res
    dx = _matmul(g, w, tb=True)   # [m, n] x [n, k]
    dw = _matmul(x, g, ta=True)   # [k, m] x [m, n]
    return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul2d.defvjp(_matmul2d_fwd, _matmul2d_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """`lax.dot_general`, with [..., k] x [k, ...] bf16 products on oneDNN where available."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    n_contract = len(lhs_contract)
    plain = (not lhs_batch and not rhs_batch and not kwargs
             and tuple(lhs_contract) == tuple(range(lhs.ndim - n_contract, lhs.ndim))
             and tuple(rhs_contract) == tuple(range(n_contract)))
    if not (plain and _routed(lhs, rhs, precision)):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    batch_shape, k = lhs.shape[:lhs.ndim - n_contract], math.prod(lhs.shape[lhs.ndim - n_contract:])
    out_features = rhs.shape[n_contract:]
    y = _matmul2d(lhs.reshape(-1, k), rhs.reshape(k, -1))
    return y.reshape(*batch_shape, *out_features).astype(out_dtype)


_NWC = ((0, 2, 1), (2, 1, 0), (0, 2, 1))  # lax.conv_dimension_numbers of ("NWC", "WIO", "NWC")


def _xla_conv(x, kernel, stride, pad, dilation):
    return lax.conv_general_dilated(x, kernel, (stride,), (pad,), rhs_dilation=(dilation,),
                                    dimension_numbers=("NWC", "WIO", "NWC"), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv1d(x, kernel, stride, pad, dilation):
    """x [n, w, c_in] * kernel [k, c_in, c_out] -> [n, w_out, c_out] float32."""
    return _conv1d_fwd(x, kernel, stride, pad, dilation)[0]


def _conv_out_width(w, k, stride, pad, dilation):
    return (w + pad[0] + pad[1] - dilation * (k - 1) - 1) // stride + 1


def _conv1d_fwd(x, kernel, stride, pad, dilation):
    out_shape = (x.shape[0], _conv_out_width(x.shape[1], kernel.shape[0], stride, pad, dilation), kernel.shape[2])
    y = _on_cpu(lambda a, b: onednn.conv1d("forward", a, b, out_shape, stride, pad, dilation),
                lambda a, b: _xla_conv(a, b, stride, pad, dilation), x, kernel)
    return y, (x, kernel)


def _conv1d_bwd(stride, pad, dilation, res, g):
    x, kernel = res

    def cpu(x, kernel, g):
        return (onednn.conv1d("data", g, kernel, x.shape, stride, pad, dilation),
                onednn.conv1d("weights", x, g, kernel.shape, stride, pad, dilation))

    def xla(x, kernel, g):
        _, vjp = jax.vjp(lambda a, b: _xla_conv(a, b, stride, pad, dilation), x, kernel)
        return vjp(g)
    dx, dk = _on_cpu(cpu, xla, x, kernel, g)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, with 1-D [n, w, c] convolutions on oneDNN where available."""
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (lhs.ndim == 3 and tuple(map(tuple, numbers)) == _NWC and feature_group_count == 1
             and batch_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1,))))
    if not (plain and _routed(lhs, rhs, precision)):
        return lax.conv_general_dilated(*args)
    dilation = (rhs_dilation or (1,))[0]
    pad = padding
    if isinstance(padding, str):
        pad = lax.padtype_to_pads(lhs.shape[1:2], ((rhs.shape[0] - 1) * dilation + 1,), window_strides, padding)
    stride, pad = int(window_strides[0]), tuple(int(p) for p in pad[0])
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    width, (taps, c_in, c_out) = lhs.shape[1], rhs.shape
    if taps == stride and pad == (0, 0) and dilation == 1:  # a patch embedding: one product per patch
        patches = lhs[:, :width // taps * taps].reshape(lhs.shape[0], width // taps, taps * c_in)
        return dot_general(patches, rhs.reshape(taps * c_in, c_out), (((2,), (0,)), ((), ()))).astype(out_dtype)
    return _conv1d(lhs, rhs, stride, pad, int(dilation)).astype(out_dtype)


# flax's layers with these products, what the models build (same parameters and names as flax's).
Dense = functools.partial(nn.Dense, dot_general=dot_general)
DenseGeneral = functools.partial(nn.DenseGeneral, dot_general=dot_general)
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
