"""bf16 products on Intel AMX through oneDNN's C API (ctypes), as XLA:CPU custom calls.

XLA 0.10's CPU backend computes bf16 dots on the vector units (~200 GFLOP/s on 2 Sapphire Rapids
cores, no faster than float32); oneDNN puts them on the AMX tiles (~470 with a float32 result).
Two JAX functions, each rounding its operands to bf16 and accumulating in float32:
`matmul(a, b)`, [m, k] x [k, n] -> [m, n], each operand optionally stored transposed (no copy:
oneDNN reads the strides); `conv1d(kind, ...)`, a 1-D convolution in flax's layouts or one of its
two gradients. They exist only where `available()`: Linux x86-64, a CPU whose flags include
AMX-BF16 and for which oneDNN reports AMX, and libdnnl.so.3 from the `onednn-cpu-gomp` wheel (or
ECGJAX_ONEDNN_LIBRARY); ECGJAX_ONEDNN=0 turns them off. Callers keep XLA's products elsewhere
(ecgjax.models.products). Each problem shape builds its primitives once (a plan) and reuses them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
import threading

import jax
import jax.numpy as jnp

from ecgjax.kernels import ffi

_CPU_ENGINE, _STREAM_IN_ORDER = 1, 1                         # dnnl_cpu, dnnl_stream_in_order
_BF16, _F32 = 2, 3                                           # dnnl_data_type_t
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS = 1, 17, 33                 # DNNL_ARG_*
_Dims = ctypes.c_int64 * 12                                  # dnnl_dims_t
_AMX_FLAGS = {"amx_bf16", "amx_tile", "avx512_bf16"}
_ISA_AMX_BF16 = 0x3e7  # dnnl_cpu_isa_avx512_core_amx's bits (later versions add fp16's: 0xfef)
_FORMAT_ANY = 1                                              # dnnl_format_tag_any
_FORWARD_TRAINING = 64                                       # dnnl_prop_kind_t
_CONVOLUTION_DIRECT = 1                                      # dnnl_convolution_direct
_QUERY_WEIGHTS_MD, _QUERY_DIFF_WEIGHTS_MD = 131, 132         # dnnl_query_t
_ARG_DIFF_SRC, _ARG_DIFF_DST, _ARG_DIFF_WEIGHTS = 129, 145, 161
_ALLOCATE = ctypes.c_void_p(2 ** 64 - 1)                     # DNNL_MEMORY_ALLOCATE: the library owns it


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return _AMX_FLAGS <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def _library_path() -> str | None:
    explicit = os.environ.get("ECGJAX_ONEDNN_LIBRARY")
    if explicit:
        return explicit
    bundled = os.path.join(sys.prefix, "lib", "libdnnl.so.3")  # where the wheel installs it
    return bundled if os.path.exists(bundled) else ctypes.util.find_library("dnnl")


def _nwc(n, c, w):
    """dims and strides of a [n, w, c] (channels-last) array as oneDNN's (n, c, w)."""
    return (n, c, w), (w * c, 1, c)


def _wio(o, i, k):
    """dims and strides of a flax kernel [k, i, o] as oneDNN's (o, i, k)."""
    return (o, i, k), (1, o, i * o)


class _Plan:
    """Primitives run in order on user buffers: `slots` take the call's pointers, in order."""

    def __init__(self, steps, slots):
        self.steps, self.slots = steps, slots


class _OneDnn:
    """The loaded library, one CPU engine and stream, and a plan per problem (shape, kind)."""

    def __init__(self, path: str):
        lib = self.lib = ctypes.CDLL(path)
        if lib.dnnl_get_effective_cpu_isa() & _ISA_AMX_BF16 != _ISA_AMX_BF16:  # e.g. the OS keeps AMX off
            raise RuntimeError(f"oneDNN will not use AMX here (ISA {lib.dnnl_get_effective_cpu_isa():#x})")
        lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
        self.engine, self.stream = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU_ENGINE, ctypes.c_size_t(0)),
                    "engine_create")
        self._check(lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine, _STREAM_IN_ORDER),
                    "stream_create")
        self._plans: dict[tuple, _Plan] = {}
        self._lock = threading.Lock()  # one problem at a time: each already uses every core

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"oneDNN {what} failed with status {status}")

    # -- building blocks
    def _desc(self, dims, dtype, strides=None):
        """A memory descriptor: plain with `strides`, or any layout the primitive prefers."""
        md = ctypes.c_void_p()
        if strides is None:
            status = self.lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), len(dims), _Dims(*dims),
                                                               dtype, _FORMAT_ANY)
        else:
            status = self.lib.dnnl_memory_desc_create_with_strides(ctypes.byref(md), len(dims), _Dims(*dims),
                                                                   dtype, _Dims(*strides))
        self._check(status, "memory_desc_create")
        return md

    def _memory(self, md, handle=None):
        mem = ctypes.c_void_p()
        self._check(self.lib.dnnl_memory_create(ctypes.byref(mem), md, self.engine, handle), "memory_create")
        return mem

    def _primitive(self, pd, args):
        prim = ctypes.c_void_p()
        self._check(self.lib.dnnl_primitive_create(ctypes.byref(prim), pd), "primitive_create")
        return prim, (_ExecArg * len(args))(*[_ExecArg(a, m.value) for a, m in args])

    def _reorder(self, src_md, src_mem, dst_md, dst_mem):
        pd = ctypes.c_void_p()
        self._check(self.lib.dnnl_reorder_primitive_desc_create(
            ctypes.byref(pd), src_md, self.engine, dst_md, self.engine, None), "reorder_primitive_desc_create")
        return self._primitive(pd, [(_ARG_SRC, src_mem), (_ARG_DST, dst_mem)])

    def _chosen(self, pd, query, user_md, user_mem, into_user: bool):
        """The primitive's own layout for an operand: its memory, plus a reorder from / into the user's."""
        md = ctypes.c_void_p(self.lib.dnnl_primitive_desc_query_md(pd, query, 0))
        if self.lib.dnnl_memory_desc_equal(md, user_md):
            return user_mem, []
        mem = self._memory(md, _ALLOCATE)
        return mem, [self._reorder(md, mem, user_md, user_mem) if into_user else
                     self._reorder(user_md, user_mem, md, mem)]

    # -- plans
    def _matmul_plan(self, m, k, n, ta, tb):
        """[m, k] x [k, n] bf16 -> f32; a stored-transposed operand's strides swap."""
        src = self._desc((m, k), _BF16, (1, m) if ta else (k, 1))
        wei = self._desc((k, n), _BF16, (1, k) if tb else (n, 1))
        dst = self._desc((m, n), _F32, (n, 1))
        pd = ctypes.c_void_p()
        self._check(self.lib.dnnl_matmul_primitive_desc_create(
            ctypes.byref(pd), self.engine, src, wei, None, dst, None), "matmul_primitive_desc_create")
        mems = [self._memory(md) for md in (src, wei, dst)]
        step = self._primitive(pd, list(zip((_ARG_SRC, _ARG_WEIGHTS, _ARG_DST), mems)))
        return _Plan([step], mems)

    def _conv_plan(self, kind, n, w_in, c_in, w_out, c_out, k, stride, pad, dilation):
        """1-D convolution of [n, w_in, c_in] with a [k, c_in, c_out] kernel (flax's layouts).

        kind "forward": x bf16, kernel bf16 -> y f32; "data": dy bf16, kernel bf16 -> dx f32;
        "weights": x bf16, dy bf16 -> dkernel f32.
        """
        geometry = (_Dims(stride), _Dims(dilation - 1), _Dims(pad[0]), _Dims(pad[1]))
        x_dims, x_strides = _nwc(n, c_in, w_in)
        y_dims, y_strides = _nwc(n, c_out, w_out)
        k_dims, k_strides = _wio(c_out, c_in, k)
        x16, y16 = self._desc(x_dims, _BF16, x_strides), self._desc(y_dims, _BF16, y_strides)

        def forward(y_md):  # the forward primitive's descriptor; the gradients take one as a hint
            pd = ctypes.c_void_p()
            self._check(self.lib.dnnl_convolution_forward_primitive_desc_create(
                ctypes.byref(pd), self.engine, _FORWARD_TRAINING, _CONVOLUTION_DIRECT, x16,
                self._desc(k_dims, _BF16), None, y_md, *geometry, None), "convolution_forward_primitive_desc_create")
            return pd

        if kind == "forward":
            y32, kernel16 = self._desc(y_dims, _F32, y_strides), self._desc(k_dims, _BF16, k_strides)
            pd = forward(y32)
            slots = [self._memory(x16), self._memory(kernel16), self._memory(y32)]
            kernel, reorders = self._chosen(pd, _QUERY_WEIGHTS_MD, kernel16, slots[1], into_user=False)
            conv = self._primitive(pd, [(_ARG_SRC, slots[0]), (_ARG_WEIGHTS, kernel), (_ARG_DST, slots[2])])
            return _Plan(reorders + [conv], slots)
        hint, pd = forward(y16), ctypes.c_void_p()
        if kind == "data":
            x32, kernel16 = self._desc(x_dims, _F32, x_strides), self._desc(k_dims, _BF16, k_strides)
            self._check(self.lib.dnnl_convolution_backward_data_primitive_desc_create(
                ctypes.byref(pd), self.engine, _CONVOLUTION_DIRECT, x32, self._desc(k_dims, _BF16), y16,
                *geometry, hint, None), "convolution_backward_data_primitive_desc_create")
            slots = [self._memory(y16), self._memory(kernel16), self._memory(x32)]
            kernel, reorders = self._chosen(pd, _QUERY_WEIGHTS_MD, kernel16, slots[1], into_user=False)
            conv = self._primitive(pd, [(_ARG_DIFF_DST, slots[0]), (_ARG_WEIGHTS, kernel),
                                        (_ARG_DIFF_SRC, slots[2])])
            return _Plan(reorders + [conv], slots)
        kernel32 = self._desc(k_dims, _F32, k_strides)
        self._check(self.lib.dnnl_convolution_backward_weights_primitive_desc_create(
            ctypes.byref(pd), self.engine, _CONVOLUTION_DIRECT, x16, self._desc(k_dims, _F32), None, y16,
            *geometry, hint, None), "convolution_backward_weights_primitive_desc_create")
        slots = [self._memory(x16), self._memory(y16), self._memory(kernel32)]
        kernel, reorders = self._chosen(pd, _QUERY_DIFF_WEIGHTS_MD, kernel32, slots[2], into_user=True)
        conv = self._primitive(pd, [(_ARG_SRC, slots[0]), (_ARG_DIFF_DST, slots[1]),
                                    (_ARG_DIFF_WEIGHTS, kernel)])
        return _Plan([conv] + reorders, slots)

    def run(self, key: tuple, pointers) -> None:
        """Runs the plan for `key` ("matmul" or "conv", then its _*_plan arguments) on `pointers`."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                build = self._matmul_plan if key[0] == "matmul" else self._conv_plan
                plan = self._plans[key] = build(*key[1:])
            for mem, ptr in zip(plan.slots, pointers):
                self._check(self.lib.dnnl_memory_set_data_handle(mem, ctypes.c_void_p(ptr)),
                            "memory_set_data_handle")
            for prim, args in plan.steps:
                self._check(self.lib.dnnl_primitive_execute(prim, self.stream, len(args), args),
                            "primitive_execute")
            self._check(self.lib.dnnl_stream_wait(self.stream), "stream_wait")


@functools.lru_cache(maxsize=None)
def _onednn() -> _OneDnn | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if os.environ.get("ECGJAX_ONEDNN", "1") == "0" or not _cpu_has_amx():
        return None
    path = _library_path()
    if not path:
        return None
    try:
        return _OneDnn(path)
    except (OSError, AttributeError, RuntimeError):  # no library, an older one, or no AMX for it
        return None


def available() -> bool:
    """True where bf16 products can run on AMX through oneDNN (ECGJAX_ONEDNN=0 turns it off)."""
    return _onednn() is not None


def _bf16_bf16_f32(buffers) -> None:
    """Every target here reads two bf16 operands and writes float32."""
    dtypes = tuple(b.dtype for b in buffers)
    if dtypes != (ffi.BF16, ffi.BF16, ffi.F32):
        raise TypeError(f"expects bf16, bf16 -> f32 (FFI dtypes {ffi.BF16}, {ffi.BF16}, {ffi.F32}), got {dtypes}")


def _target(ta: bool, tb: bool) -> str:
    name = f"ecgjax_onednn_matmul_{'t' if ta else 'n'}{'t' if tb else 'n'}"

    def execute(inputs, outputs):
        _bf16_bf16_f32((*inputs, *outputs))
        (a, b), (out,) = inputs, outputs
        m, n = out.dims
        k = a.dims[0] if ta else a.dims[1]
        _onednn().run(("matmul", m, k, n, ta, tb), (a.data, b.data, out.data))

    ffi.register(name, execute)
    return name


def matmul(a: jax.Array, b: jax.Array, transpose_a: bool = False, transpose_b: bool = False) -> jax.Array:
    """a [m, k] (stored [k, m] if transpose_a) x b [k, n] (stored [n, k] if transpose_b) -> [m, n] f32.

    Operands are rounded to bf16; products accumulate in float32. CPU only, and only where available().
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul takes 2-D operands, got {a.shape} and {b.shape}")
    m, k = a.shape[::-1] if transpose_a else a.shape
    k_b, n = b.shape[::-1] if transpose_b else b.shape
    if k != k_b:
        raise ValueError(f"contracting sizes differ: {a.shape} (transposed={transpose_a}) and "
                         f"{b.shape} (transposed={transpose_b})")
    call = jax.ffi.ffi_call(_target(transpose_a, transpose_b), jax.ShapeDtypeStruct((m, n), jnp.float32),
                            vmap_method="sequential")  # under jax.vmap: one product per example
    return call(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))


def _conv_target(kind: str, stride: int, pad: tuple[int, int], dilation: int) -> str:
    name = f"ecgjax_onednn_conv_{kind}_s{stride}_p{pad[0]}_{pad[1]}_d{dilation}"

    def execute(inputs, outputs):
        buffers = (*inputs, *outputs)
        _bf16_bf16_f32(buffers)
        if kind == "forward":
            (n, w_in, c_in), (k, _, c_out), (_, w_out, _) = (b.dims for b in buffers)
        elif kind == "data":
            (n, w_out, c_out), (k, c_in, _), (_, w_in, _) = (b.dims for b in buffers)
        else:
            (n, w_in, c_in), (_, w_out, c_out), (k, _, _) = (b.dims for b in buffers)
        _onednn().run(("conv", kind, n, w_in, c_in, w_out, c_out, k, stride, pad, dilation),
                      tuple(b.data for b in buffers))

    ffi.register(name, execute)
    return name


def conv1d(kind: str, a: jax.Array, b: jax.Array, out_shape: tuple[int, ...], stride: int,
           pad: tuple[int, int], dilation: int = 1) -> jax.Array:
    """A 1-D convolution or one of its gradients, in flax's layouts, bf16 operands -> float32.

    kind "forward": a = x [n, w_in, c_in], b = kernel [k, c_in, c_out] -> y [n, w_out, c_out];
    "data": a = dy [n, w_out, c_out], b = kernel -> dx [n, w_in, c_in];
    "weights": a = x, b = dy -> dkernel [k, c_in, c_out]. `out_shape` is the result's shape;
    `pad` the (left, right) zero padding of x, `stride` and `dilation` the kernel's.
    """
    call = jax.ffi.ffi_call(_conv_target(kind, stride, tuple(pad), dilation),
                            jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32), vmap_method="sequential")
    return call(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
