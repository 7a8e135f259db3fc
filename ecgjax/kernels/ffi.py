"""A Python function as an XLA:CPU typed-FFI custom call, through ctypes: no compiler needed.

XLA calls a typed-FFI handler with one `XLA_FFI_CallFrame*` (xla/ffi/api/c_api.h, the stable C ABI
that `jax.ffi` targets); the handler returns NULL on success or an `XLA_FFI_Error*`. This module
mirrors the few structs of that header a handler reads (buffers in, buffers out, the metadata query
XLA makes at registration) so that `register(name, fn)` can hand XLA a ctypes trampoline to `fn`.
`fn(inputs, outputs)` gets `Buffer`s (dtype code, data pointer, dims) that alias XLA's own memory:
nothing is copied, unlike `jax.pure_callback`. XLA runs it on one of its threads, under the GIL.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
from typing import Callable, Sequence

import jax

_API_MAJOR, _API_MINOR = 0, 3          # XLA_FFI_API_MAJOR / _MINOR of the headers this mirrors
_EXTENSION_METADATA = 1                # XLA_FFI_Extension_Metadata
_STAGE_EXECUTE = 3                     # XLA_FFI_ExecutionStage_EXECUTE
_ERROR_INTERNAL = 13                   # XLA_FFI_Error_Code_INTERNAL
F32, BF16 = 11, 16                     # XLA_FFI_DataType codes


class _ExtensionBase(ctypes.Structure):
    pass


_ExtensionBase._fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int),
                           ("next", ctypes.POINTER(_ExtensionBase))]


class _ApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major_version", ctypes.c_int), ("minor_version", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _ApiVersion),
                ("traits", ctypes.c_uint32), ("state_type_id", ctypes.c_int64)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("dtype", ctypes.c_int), ("data", ctypes.c_void_p), ("rank", ctypes.c_int64),
                ("dims", ctypes.POINTER(ctypes.c_int64))]


class _List(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets have the same layout
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.POINTER(ctypes.c_int)),
                ("items", ctypes.POINTER(ctypes.c_void_p))]


class _Attrs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.c_void_p), ("names", ctypes.c_void_p),
                ("attrs", ctypes.c_void_p)]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_ErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("api_version", _ApiVersion), ("internal_api", ctypes.c_void_p),
                ("error_create", _ErrorCreate)]


class _CallFrame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.POINTER(_ExtensionBase)),
                ("api", ctypes.POINTER(_Api)), ("ctx", ctypes.c_void_p), ("stage", ctypes.c_int),
                ("args", _List), ("rets", _List), ("attrs", _Attrs), ("future", ctypes.c_void_p)]


_Handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One operand or result as XLA holds it: `dtype` (F32, BF16, ...), `data` (address), `dims`."""

    dtype: int
    data: int
    dims: tuple[int, ...]


def _buffers(items: _List) -> list[Buffer]:
    out = []
    for i in range(items.size):
        b = ctypes.cast(items.items[i], ctypes.POINTER(_Buffer)).contents
        out.append(Buffer(b.dtype, b.data, tuple(b.dims[j] for j in range(b.rank))))
    return out


def _error(frame: _CallFrame, message: str) -> int:
    args = _ErrorCreateArgs(ctypes.sizeof(_ErrorCreateArgs), None, message.encode(), _ERROR_INTERNAL)
    return frame.api.contents.error_create(ctypes.byref(args))


_REGISTERED: dict[str, _Handler] = {}  # the trampolines must outlive every compiled program


def register(name: str, fn: Callable[[Sequence[Buffer], Sequence[Buffer]], None]) -> None:
    """Registers `fn(inputs, outputs)` as the CPU FFI target `name` (once per process; idempotent)."""
    if name in _REGISTERED:
        return

    def handler(frame_ptr):
        frame = frame_ptr.contents
        ext = frame.extension_start
        if ext and ext.contents.type == _EXTENSION_METADATA:  # XLA asks which FFI version we speak
            meta = ctypes.cast(ext, ctypes.POINTER(_MetadataExtension)).contents.metadata.contents
            meta.api_version = _ApiVersion(ctypes.sizeof(_ApiVersion), None, _API_MAJOR, _API_MINOR)
            meta.traits = 0
            return None
        if frame.stage != _STAGE_EXECUTE:
            return _error(frame, f"{name}: called at stage {frame.stage}, handles only execute")
        try:
            fn(_buffers(frame.args), _buffers(frame.rets))
        except Exception as e:  # an error in the program, not a crash of the process
            logging.exception("%s failed", name)
            return _error(frame, f"{name}: {type(e).__name__}: {e}")
        return None

    trampoline = _Handler(handler)
    _REGISTERED[name] = trampoline
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(trampoline), platform="cpu")
