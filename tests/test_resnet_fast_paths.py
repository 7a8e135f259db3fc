"""The ResNet's fast-path candidates (benchmarks/resnet_ab.py) against what they would replace, on
tiny shapes: the fused BatchNorm (+ ReLU) of ecgjax.models.batchnorm against flax.linen.BatchNorm
(+ nn.relu), alone and in the ResNet, and the stride-2 convolution over pairs of samples against
nn.Conv(strides=2, padding="SAME"): outputs, gradients, BatchNorm statistics and variables.

Tolerances are worst-case float32 bounds, not fitted to one CPU: a sum of n float32 terms
computed in any order is within about n * u * sum|terms| of the exact sum (u = 2^-24), and XLA may
order (and vectorise) every reduction differently on another CPU. Each check below states its n.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models import resnet1d
from ecgjax.models.batchnorm import BatchNorm

U = 2.0 ** -24  # float32 unit roundoff


class FlaxNorm(nn.Module):
    """The reference: flax.linen.BatchNorm, then nn.relu if `relu`."""

    use_running_average: bool
    momentum: float
    relu: bool

    @nn.compact
    def __call__(self, x):
        y = nn.BatchNorm(use_running_average=self.use_running_average, momentum=self.momentum,
                         epsilon=1e-5, name="bn")(x)
        return nn.relu(y) if self.relu else y


def _bn_variables(channels, rng):
    return {"params": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, channels), jnp.float32),
                       "bias": jnp.asarray(rng.normal(0, 0.5, channels), jnp.float32)},
            "batch_stats": {"mean": jnp.asarray(rng.normal(0, 0.1, channels), jnp.float32),
                            "var": jnp.asarray(rng.uniform(0.5, 2, channels), jnp.float32)}}


@pytest.mark.parametrize("relu", [False, True])
def test_fused_batchnorm_matches_flax(relu):
    rng = np.random.default_rng(0)
    batch, time, channels = 4, 33, 5
    x = jnp.asarray(rng.normal(0.5, 1.0, (batch, time, channels)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(batch, time, channels)), jnp.float32)
    variables = _bn_variables(channels, rng)
    fast, ref = BatchNorm(False, momentum=0.9, relu=relu), FlaxNorm(False, momentum=0.9, relu=relu)
    wrap = lambda v: {"params": {"bn": v["params"]}, "batch_stats": {"bn": v["batch_stats"]}}  # noqa: E731
    unwrap = lambda t: {collection: v["bn"] for collection, v in t.items()}  # noqa: E731

    # Same variables, same initial values.
    assert jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(0), x)) == \
        unwrap(jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(0), x)))

    def run(module, variables):
        def loss(params, x):
            y, updated = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.vdot(y, dy), (y, updated["batch_stats"])
        (_, (y, stats)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            variables["params"], x)
        return y, stats, grads

    y, stats, (dparams, dx) = run(fast, variables)
    y_ref, stats_ref, (dparams_ref, dx_ref) = run(ref, wrap(variables))
    stats_ref, dparams_ref = stats_ref["bn"], dparams_ref["bn"]

    # The batch mean and E[x^2] are sums of n = batch * time terms (here |x| <= ~4, E[x^2]/var ~ 1.3,
    # so the variance keeps about the same relative error); y, dx and the running statistics follow
    # from them and from sums over n with a few more roundings each: 16 n u relative to their size
    # (~1e-4) covers those terms with margin, and a wrong formula (a missing mean term, the
    # unbiased variance, another momentum) is off by 1e-2 or more.
    n = batch * time
    tol = 16 * n * U
    for name, a, b in [("y", y, y_ref), ("dx", dx, dx_ref), ("mean", stats["mean"], stats_ref["mean"]),
                       ("var", stats["var"], stats_ref["var"])]:
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * (1 + float(jnp.abs(b).max())), err_msg=name)
    # The scale and bias gradients are sums over n terms of size |dy| * (1 + |xhat|): their error is
    # within the same relative bound of the sum of those sizes.
    terms = float(jnp.sum(jnp.abs(dy) * (1 + jnp.abs((x - x.mean((0, 1))) / x.std((0, 1))))))
    for name in ("scale", "bias"):
        np.testing.assert_allclose(dparams[name], dparams_ref[name], rtol=0, atol=tol * terms, err_msg=name)

    # Eval mode: the running statistics, no update; the same elementwise formula as flax's.
    y_eval = BatchNorm(True, momentum=0.9, relu=relu).apply(variables, x)
    y_eval_ref = FlaxNorm(True, momentum=0.9, relu=relu).apply(wrap(variables), x)
    np.testing.assert_allclose(y_eval, y_eval_ref, rtol=0, atol=8 * U * (1 + float(jnp.abs(y_eval_ref).max())))


def test_resnet_with_fused_norm_matches_flax_norm(monkeypatch):
    """The whole ResNet18 in training mode with resnet1d.fused_norm: features and updated running
    statistics as with flax.linen.BatchNorm + nn.relu (resnet1d.norm) in every place."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 256, 12)), jnp.float32)
    model = resnet1d.kite_resnet(18, 4)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    apply = lambda: jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)  # noqa: E731
    ref = apply()
    monkeypatch.setattr(resnet1d, "norm", resnet1d.fused_norm)
    fast = apply()
    # 20 norms in sequence, each within 16 n u (n <= 4 x 128 samples, the stem's) of flax's output
    # relative to its size (test above); errors add through the layers (each re-normalises).
    tol = 20 * 16 * 4 * 128 * U
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * (1 + float(jnp.abs(b).max())))


@pytest.mark.parametrize("time", [16, 17, 31])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 15])
def test_stride2_conv_matches_nn_conv(time, kernel):
    """Every parity of length and kernel (XLA's SAME split puts the odd pad on the right)."""
    rng = np.random.default_rng(kernel * 100 + time)
    batch, cin, cout = 2, 3, 4
    x = jnp.asarray(rng.normal(size=(batch, time, cin)), jnp.float32)
    ref = nn.Conv(cout, (kernel,), strides=(2,), padding="SAME", use_bias=False)
    fast = resnet1d.StridedConv(cout, kernel)
    variables = ref.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, variables)
    dy = jnp.asarray(rng.normal(size=(batch, -(-time // 2), cout)), jnp.float32)

    def grads(module, variables, x, dy):
        y, vjp = jax.vjp(lambda v, x: module.apply(v, x), variables, x)
        return y, *vjp(dy)

    run = jax.jit(grads, static_argnums=0)
    fast_out, ref_out = run(fast, variables, x, dy), run(ref, variables, x, dy)
    # A convolution is bilinear, so the same program on |x|, |kernel|, |dy| gives, element by
    # element, the sum of the absolute terms of each output and gradient. The longest sum is
    # n = max(kernel * channels, batch * time) terms; any order is within n u of that size.
    absolute = run(ref, jax.tree.map(jnp.abs, variables), jnp.abs(x), jnp.abs(dy))
    n = max(kernel * max(cin, cout), batch * time)
    for a, b, size in zip(jax.tree.leaves(fast_out), jax.tree.leaves(ref_out), jax.tree.leaves(absolute)):
        assert a.shape == b.shape
        np.testing.assert_array_less(np.abs(a - b), 2 * n * U * np.asarray(size) + 1e-30)


def test_resnet_variables_unchanged():
    """Both candidates keep the variable tree of the released models' ResNet (nn.Conv, nn.BatchNorm)."""
    x = jnp.zeros((2, 250, 12))
    shapes = lambda: jax.tree.map(jnp.shape, jax.eval_shape(  # noqa: E731
        lambda: resnet1d.kite_resnet(18, 8).init(jax.random.PRNGKey(0), x, train=False)))
    reference = shapes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resnet1d, "norm", resnet1d.fused_norm)
        patch.setattr(resnet1d, "conv", resnet1d.strided_conv)
        assert shapes() == reference
