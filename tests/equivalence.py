"""Comparing two training runs that should agree: one device vs four, one process vs two.

Tolerance argument. Compared as they are (float32, Adam with eps 1e-8) the updates are not
portable: a gradient that is zero in exact arithmetic (a ViT's key bias; a BatchNorm channel that
sees near-constant activations at runlocal scale) is pure rounding noise, which depends on how a
CPU's kernels (and a cross-process all-reduce) reassociate sums, and Adam's first update
lr * g / (|g| + eps) turns that noise into +-lr: a 2 * lr difference on one CPU (AMD) and none on
another (Intel). So both runs (a) compute in float64, with every floating-point leaf of the state
in float64 (parameters, optimizer moments, BatchNorm statistics, MoCo queue), and (b) set Adam's
eps to 1, which makes the update ~lr * g, linear in the gradient, so rounding noise stays
noise-sized instead of being normalised up to lr. What remains is float64 reassociation (~1e-16)
and the float32 parts of the objectives (~1e-7 relative), carried through a few steps: per state
leaf the difference stays far below UPDATE_BOUND (1e-4) of the leaf's largest update. A wrong reduction (per-device or per-process BatchNorm statistics, a loss or
gradient averaged over one shard, a per-device MoCo queue) changes the gradients themselves, i.e.
the updates by O(1) of their size: each test shows it by training on one shard's examples repeated,
which must break the bound a hundredfold (WRONG_REDUCTION_FACTOR).

Used in subprocesses (x64 must be on before any array exists):

    import equivalence
    equivalence.use_float64()            # jax_enable_x64, float64 compute and state
    equivalence.configure(config)        # encoder params float64, Adam eps 1
"""
from __future__ import annotations

import numpy as np

UPDATE_BOUND = 1e-4
LOSS_RTOL = 1e-6
WRONG_REDUCTION_FACTOR = 100


def use_float64() -> None:
    """x64 on; every PretrainModel built by ecgjax.train.state computes in float64, and every new
    state holds float64 leaves (the heads' float32 parameters would otherwise turn float64 after the
    first update, changing the step's signature and compiling it twice)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from ecgjax.train import state as state_lib

    build_model, init_state = state_lib.build_model, state_lib.init_state

    def float64_state(*args, **kwargs):
        return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                            init_state(*args, **kwargs))

    state_lib.build_model = lambda c: build_model(c).clone(dtype=jnp.float64)
    state_lib.init_state = float64_state


def configure(config) -> None:
    """Encoder parameters in float64 and Adam's eps 1 (the update linear in the gradient)."""
    with config.unlocked():
        config.model.encoder.param_dtype = "float64"
        config.optim.eps = 1.0


def float_leaves(tree) -> list[np.ndarray]:
    """Host copies of the floating-point leaves of a pytree (a state: params, optimizer, BN, queue)."""
    import jax

    return [np.array(x) for x in jax.tree.leaves(tree) if np.asarray(x).dtype.kind == "f"]


def updates(final: list[np.ndarray], start: list[np.ndarray]) -> list[np.ndarray]:
    return [x - x0 for x, x0 in zip(final, start, strict=True)]


def max_relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Per leaf, the largest |a - b| over the largest |a|; the maximum over leaves."""
    return max(float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-8))
               for x, y in zip(a, b, strict=True) if x.size)


def losses_agree(a: float, b: float) -> bool:
    return abs(a - b) < LOSS_RTOL * max(1.0, abs(a))
