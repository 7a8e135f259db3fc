"""XLA settings for tests: `unoptimized()`, for code whose results are checked for flow, files,
shapes, bounds or agreement with themselves (tests/conftest.py's `unoptimized_xla` fixture for one
test; a module- or session-scoped fixture uses the context manager itself)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def unoptimized():
    """XLA's optimisation passes off (jax_disable_most_optimizations): a tiny pretraining or ResNet
    step compiles in about half the time. The programs compute the same functions, but not the same
    floats bit for bit (fusion and reassociation differ), so never for a check against a tolerance
    argued for optimised programs. The flag is not part of JAX's in-memory cache key: the
    executables compiled meanwhile are dropped afterwards, so no later test runs one of them (the
    persistent cache keys on it and keeps both kinds apart)."""
    import jax

    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
        jax.clear_caches()
