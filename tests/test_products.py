"""Dense and convolution products on oneDNN's AMX tiles (ecgjax.kernels, ecgjax.models.products).

The oneDNN tests run where `onednn.available()` (Linux, an AMX-BF16 CPU, libdnnl from the
`onednn-cpu-gomp` wheel) and skip elsewhere; the FFI plumbing and the routing rules are tested on
any CPU. Bounds, and why they hold on any machine: the operands are first rounded to bf16, whose
8-bit significands multiply exactly in float32 (16 bits < 24), so the oneDNN result and XLA's
float32 reference on the same rounded operands differ only in the order of the float32 sums:
|error| <= k * 2^-24 * sum(|a| |b|) per output, k the number of summed terms (Higham's bound,
independent of the CPU, its vector width or the summation order either library picks).
"""
from __future__ import annotations

import ctypes

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ecgjax.kernels import ffi, onednn
from ecgjax.models import products

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="no AMX CPU or no oneDNN library here")
EPS = 2.0 ** -24


def _bf16(key, shape):
    return jax.random.normal(jax.random.key(key), shape).astype(jnp.bfloat16).astype(jnp.float32)


def _within_sum_bound(out, ref, magnitude, terms):
    bound = terms * EPS * np.asarray(magnitude) + 1e-30
    assert np.all(np.abs(np.asarray(out) - np.asarray(ref)) <= bound), float(np.max(np.abs(out - ref) / bound))


# ------------------------------------------------------------------ the FFI plumbing (any CPU)

def _as_array(buffer, ctype):
    return np.ctypeslib.as_array(ctypes.cast(buffer.data, ctypes.POINTER(ctype)), buffer.dims)


def test_a_python_function_runs_as_an_ffi_target_on_xla_buffers():
    def twice_plus_one(inputs, outputs):
        (x,), (y,) = inputs, outputs
        assert x.dtype == ffi.F32 and x.dims == (3, 4)
        _as_array(y, ctypes.c_float)[:] = 2 * _as_array(x, ctypes.c_float) + 1

    ffi.register("ecgjax_test_twice_plus_one", twice_plus_one)
    call = jax.ffi.ffi_call("ecgjax_test_twice_plus_one", jax.ShapeDtypeStruct((3, 4), jnp.float32))
    x = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    np.testing.assert_array_equal(jax.jit(call)(x), 2 * np.asarray(x) + 1)


def test_an_error_in_the_target_is_an_error_of_the_program_naming_it():
    def fails(inputs, outputs):
        raise ValueError("operand 0 is not what it should be")

    ffi.register("ecgjax_test_fails", fails)
    call = jax.ffi.ffi_call("ecgjax_test_fails", jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(Exception, match="ecgjax_test_fails: ValueError: operand 0 is not what it should be"):
        jax.block_until_ready(jax.jit(call)(jnp.zeros(2)))


# ------------------------------------------------------------------ the kernels (AMX CPUs)

@needs_onednn
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_equals_float32_on_bf16_operands(ta, tb):
    a, b = _bf16(0, (67, 130)), _bf16(1, (130, 45))
    stored_a, stored_b = (a.T if ta else a), (b.T if tb else b)
    out = jax.jit(lambda x, y: onednn.matmul(x, y, ta, tb))(stored_a, stored_b)
    ref = jnp.dot(a, b, precision="highest")
    _within_sum_bound(out, ref, jnp.dot(jnp.abs(a), jnp.abs(b), precision="highest"), a.shape[1])


CONVS = [  # n, width, c_in, c_out, kernel, stride, padding, dilation: the ResNet's and the ViT stems'
    (3, 50, 12, 16, 15, 2, "SAME", 1), (2, 41, 16, 32, 3, 2, "SAME", 1), (2, 33, 16, 16, 7, 1, "SAME", 1),
    (2, 40, 12, 24, 5, 5, "VALID", 1), (2, 30, 8, 8, 3, 1, "SAME", 2)]


@needs_onednn
@pytest.mark.parametrize("n,w,c_in,c_out,k,stride,padding,dilation", CONVS)
def test_convolution_and_both_gradients_equal_float32_on_bf16_operands(n, w, c_in, c_out, k, stride, padding, dilation):
    x, kernel = _bf16(0, (n, w, c_in)), _bf16(1, (k, c_in, c_out))

    def conv(fn, a, b):
        return fn(a, b, (stride,), padding, rhs_dilation=(dilation,), dimension_numbers=("NWC", "WIO", "NWC"),
                  **({"precision": "highest"} if fn is lax.conv_general_dilated else {}))

    y_ref, vjp_ref = jax.vjp(lambda a, b: conv(lax.conv_general_dilated, a, b), x, kernel)
    g = _bf16(2, y_ref.shape)
    y, vjp = jax.vjp(lambda a, b: conv(products.conv_general_dilated, a, b), x, kernel)
    (dx, dk), (dx_ref, dk_ref) = jax.jit(vjp)(g), vjp_ref(g)
    _, vjp_abs = jax.vjp(lambda a, b: conv(lax.conv_general_dilated, a, b), jnp.abs(x), jnp.abs(kernel))
    dx_abs, dk_abs = vjp_abs(jnp.abs(g))
    _within_sum_bound(y, y_ref, conv(lax.conv_general_dilated, jnp.abs(x), jnp.abs(kernel)), k * c_in)
    _within_sum_bound(dx, dx_ref, dx_abs, k * c_out)
    _within_sum_bound(dk, dk_ref, dk_abs, n * y_ref.shape[1])


# ------------------------------------------------------------------ routing

class _Net(nn.Module):
    """A convolution and two DenseGenerals, linear: no ReLU whose kinks bf16 rounding could flip."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (7,), strides=(2,), padding="SAME", conv_general_dilated=products.conv_general_dilated)(x)
        x = nn.DenseGeneral((2, 8), dot_general=products.dot_general)(x)
        return jnp.mean(nn.DenseGeneral(4, axis=(-2, -1), dot_general=products.dot_general)(x) ** 2)


def _net_and_input():
    x = _bf16(0, (4, 64, 12))
    params = _Net().init(jax.random.key(1), x)
    return params, x


def _program(params, x):
    return jax.jit(jax.grad(_Net().apply, argnums=(0, 1))).lower(params, x).as_text()


def test_asking_jax_for_float32_products_keeps_xla_s_own():
    params, x = _net_and_input()
    with jax.default_matmul_precision("float32"):
        assert "ecgjax_onednn" not in _program(params, x)


@needs_onednn
def test_default_precision_products_and_their_gradients_run_on_onednn():
    params, x = _net_and_input()
    text = _program(params, x)
    for target in ("conv_forward", "conv_data", "conv_weights", "matmul_nn", "matmul_nt", "matmul_tn"):
        assert f"ecgjax_onednn_{target}" in text, target
    grad = jax.grad(_Net().apply, argnums=(0, 1))
    grads = jax.jit(grad)(params, x)
    with jax.default_matmul_precision("float32"):
        ref = jax.jit(grad)(params, x)
    # Each product rounds its operands (activations, weights, incoming gradients) to bf16, 2^-9
    # relative each and independent across elements: through three linear layers each gradient is
    # within a few 2^-9 of float32's in norm (measured 0.1-1.2% on 12 seeds, 0.9% at most on this
    # seed; the roundings are the same on any CPU, only float32 summation orders differ, ~1e-7),
    # where a wrong operand, transpose or layout is off by O(1).
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
        assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) < 0.03


def test_products_outside_the_routed_forms_are_xla_s():
    a, b = _bf16(0, (3, 5, 7)), _bf16(1, (3, 7, 2))
    batched = products.dot_general(a, b, (((2,), (1,)), ((0,), (0,))))
    np.testing.assert_allclose(batched, lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))), rtol=1e-6)
    ints = products.dot_general(jnp.ones((2, 3), jnp.int32), jnp.ones((3, 4), jnp.int32), (((1,), (0,)), ((), ())))
    assert ints.dtype == jnp.int32 and int(ints[0, 0]) == 3


def test_a_gpu_program_keeps_xla_s_products_in_float32():
    """Lowered for a GPU (from this host, whatever its CPU), the same function has no oneDNN call and
    no bf16 rounding: the products are XLA's in the operands' dtype."""
    params, x = _net_and_input()
    grad = jax.jit(jax.grad(_Net().apply, argnums=(0, 1)))
    text = jax.export.export(grad, platforms=["cuda"])(params, x).mlir_module()
    assert "ecgjax_onednn" not in text and "bf16" not in text


@needs_onednn
def test_vmapped_products_equal_the_batched_ones():
    layer = nn.Dense(8, dot_general=products.dot_general)
    x = _bf16(0, (3, 5, 16))
    params = layer.init(jax.random.key(1), x)
    per_example = jax.jit(jax.vmap(lambda row: layer.apply(params, row)))(x)
    # The same bf16 operands and float32 products; only the order of the 16 summed terms may differ
    # (and the bias add, exact either way): twice Higham's bound covers both results' rounding.
    kernel = params["params"]["kernel"].astype(jnp.bfloat16).astype(jnp.float32)
    magnitude = jnp.abs(x) @ jnp.abs(kernel) + jnp.abs(params["params"]["bias"])
    _within_sum_bound(per_example, jax.jit(layer.apply)(params, x), 2 * magnitude, 17)
