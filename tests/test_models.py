"""Tests for ecgjax.models: shapes, patching, masking path, parameter counts, dtypes, dropout,
dual stream, heads and input-lead adaptation. Big models are only traced (jax.eval_shape)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.dual_stream import DualStreamEncoder
from ecgjax.models.heads import AttentionPooling, LinearHead, ProjectionHead
from ecgjax.models.registry import adapt_input_leads, build_encoder, build_mae_decoder, example_input
from ecgjax.models.resnet1d import kite_resnet, resnet_v2
from ecgjax.models.vit1d import ConvPatchEmbed, MAEDecoder, ViT1D, num_patches, patchify, unpatchify

KEY = jax.random.key(0)
TINY_VIT = dict(name="vit1d", num_samples=250, patch=25, width=32, depth=2, heads=4, mlp_ratio=2.0)


def _signal(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _small(model):
    """ResNets with one block per stage but the first (keeps every block kind, fewer repeats)."""
    return model.clone(stage_sizes=(2, 1, 1, 1)) if hasattr(model, "stage_sizes") else model


def _num_params(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _init(model, *args, **kwargs):
    """Variables with the shapes of `model.init` but filled from numpy: XLA's CPU compile of the
    random initialisers costs seconds per model, and these tests only need generic weights.
    (Flax's own init still runs under jax.eval_shape, and once for real below.)"""
    shapes = jax.eval_shape(lambda: model.init(KEY, *args, train=False, **kwargs))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "mean":
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1]) if name == "kernel" else 100.0
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_real_init_matches_shapes():
    model, x = build_encoder(TINY_VIT), jnp.zeros((1, 250, 12))
    variables = model.init(KEY, x, train=False)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(_init(model, x))
    assert bool(jnp.all(jnp.isfinite(model.apply(variables, x, train=False))))


# ----------------------------------------------------------------------------- patching

def test_patchify_pads_right_with_zeros_and_inverts():
    x = _signal((2, 130, 3))
    patches = patchify(x, 60)
    assert num_patches(130, 60) == 3 and patches.shape == (2, 3, 180)
    np.testing.assert_array_equal(patches[:, 0].reshape(2, 60, 3), x[:, :60])
    last = patches[:, 2].reshape(2, 60, 3)
    np.testing.assert_array_equal(last[:, :10], x[:, 120:])
    assert not np.any(last[:, 10:])
    np.testing.assert_array_equal(unpatchify(patches, 60, num_samples=130), x)


@pytest.mark.usefixtures("float32_products")
def test_vit_patch_embedding_matches_patchify():
    """Token i of the conv embedding is a linear map of patchify(x)[:, i] (same padding rule)."""
    model = build_encoder(TINY_VIT)
    x = _signal((2, 240, 12))  # 240 samples -> 10 patches, the last one half padding
    variables = _init(model, x)
    _, state = model.apply(variables, x, train=False, capture_intermediates=lambda m, _: m.name == "input_conv",
                           mutable=["intermediates"])
    embedded = state["intermediates"]["input_conv"]["__call__"][0]
    conv = variables["params"]["input_conv"]
    expected = patchify(x, 25) @ conv["kernel"].reshape(25 * 12, 32) + conv["bias"]
    assert embedded.shape == (2, 10, 32)
    np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- ViT

def test_vit_shapes_and_too_long_input():
    model = build_encoder(TINY_VIT)
    assert isinstance(model, ViT1D) and model.max_patches == 10 and model.feature_dim == 32
    x = _signal((3, 240, 12))
    variables = _init(model, x)
    assert model.apply(variables, x, train=False).shape == (3, 32)
    assert model.apply(variables, x, train=False, return_tokens=True).shape == (3, 10, 32)
    with pytest.raises(ValueError, match="position table"):
        model.apply(variables, _signal((1, 260, 12)), train=False)


def test_vit_keep_indices_all_kept_equals_full_path_in_order():
    model = build_encoder(TINY_VIT)
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    full = model.apply(variables, x, train=False, return_tokens=True)
    order = jnp.stack([jax.random.permutation(jax.random.key(i), 10) for i in range(2)])
    kept = model.apply(variables, x, train=False, keep_indices=order, return_tokens=True)
    np.testing.assert_allclose(kept, jnp.take_along_axis(full, order[..., None], axis=1), atol=1e-5)
    np.testing.assert_allclose(model.apply(variables, x, train=False, keep_indices=order),
                               model.apply(variables, x, train=False), atol=1e-5)
    # Encoding a subset is not the same as encoding everything (tokens attend to fewer tokens).
    subset = model.apply(variables, x, train=False, keep_indices=order[:, :4], return_tokens=True)
    assert subset.shape == (2, 4, 32)
    assert not np.allclose(subset, jnp.take_along_axis(full, order[:, :4, None], axis=1), atol=1e-4)


@pytest.mark.parametrize("patch,depth,width", [(60, 2, 256), (125, 4, 512), (250, 8, 1024)])
def test_vit_param_count_formula(patch, depth, width):
    model = build_encoder(dict(name="vit1d", num_samples=2500, patch=patch, depth=depth, width=width))
    shapes = jax.eval_shape(lambda: model.init(KEY, example_input({"num_samples": 2500}), train=False))
    n, hidden = num_patches(2500, patch), 4 * width
    per_block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width) \
        + (width * hidden + hidden + hidden * width + width)
    expected = (patch * 12 * width + width) + n * width + depth * per_block + 2 * width
    assert _num_params(shapes["params"]) == expected


def test_vit_dropout_only_in_training():
    model = build_encoder(dict(TINY_VIT, dropout=0.3))
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    eval_a = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(eval_a, model.apply(variables, x, train=False))
    with pytest.raises(Exception):  # dropout needs an rng when training
        model.apply(variables, x, train=True)
    train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)
    no_dropout = build_encoder(TINY_VIT)
    np.testing.assert_allclose(no_dropout.apply(variables, x, train=True, rngs={"dropout": KEY}),
                               no_dropout.apply(variables, x, train=False), atol=1e-6)


def test_mae_decoder_scatters_visible_tokens_to_their_patches():
    config = dict(TINY_VIT, decoder_depth=0)  # depth 0: each output sees only its own position
    decoder = build_mae_decoder(config)
    assert decoder.width == 16 and decoder.num_patches == 10 and decoder.patch_dim == 25 * 12
    keep = jnp.array([[7, 2, 4], [0, 9, 5]])
    tokens = _signal((2, 3, 32))
    variables = _init(decoder, tokens, keep)
    out = decoder.apply(variables, tokens, keep, train=False)
    assert out.shape == (2, 10, 300)
    changed = decoder.apply(variables, tokens.at[0, 1].add(1.0), keep, train=False)
    differs = np.any(np.abs(np.asarray(changed - out)) > 1e-6, axis=-1)
    assert differs[0].tolist() == [i == 2 for i in range(10)] and not differs[1].any()
    deep = MAEDecoder(num_patches=10, patch_dim=300, width=16, depth=2, heads=4)
    assert deep.apply(_init(deep, tokens, keep), tokens, keep, train=False).shape == (2, 10, 300)


# ----------------------------------------------------------------------------- ResNets

TABLE1 = {"resnet18": 0.24, "resnet34": 1.81, "resnet50": 0.26, "resnet101": 0.45, "resnet152": 2.43,
          "resnet18x2": 0.96, "resnet34x2": 7.22, "resnet50x2": 1.01, "resnet101x2": 1.79,
          "resnet152x2": 9.64}
TABLE1_CHAN_OUT = {"resnet18": 128, "resnet34": 256, "resnet50": 256, "resnet101": 256, "resnet152": 512}


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_resnet_trainable_params_match_table1(name):
    """000 Appendix B Table 1, 4 input leads; BN scale/bias count, running statistics do not."""
    model = build_encoder({"name": name})
    shapes = jax.eval_shape(lambda: _init(model, jnp.zeros((1, 1024, 4))))
    assert _num_params(shapes["params"]) / 1e6 == pytest.approx(TABLE1[name], rel=0.05)
    base = name.removesuffix("x2")
    assert model.feature_dim == TABLE1_CHAN_OUT[base] * (2 if name.endswith("x2") else 1)


@pytest.mark.parametrize("model,dim", [
    (kite_resnet(18, 8), 64), (kite_resnet(50, 8), 64), (resnet_v2(18, 8), 64), (resnet_v2(50, 4), 128)])
def test_resnet_forward_shapes_and_batch_stats(model, dim):
    model = _small(model)
    x = _signal((2, 256, 12))
    variables = _init(model, x)
    assert model.apply(variables, x, train=False).shape == (2, dim) == (2, model.feature_dim)
    features, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert features.shape == (2, dim)
    before, after = jax.tree_util.tree_leaves(variables["batch_stats"]), jax.tree_util.tree_leaves(updates)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_resnet_v2_layout_from_registry():
    for name, dim, kernels in [("resnet18v2", 512, (7, 5, 5, 3)), ("resnet34v2", 512, (7, 5, 5, 3)),
                               ("resnet50v2", 2048, (7, 5, 5, 3))]:
        model = build_encoder({"name": name})
        assert model.preact and model.feature_dim == dim and tuple(model.kernel_sizes) == kernels
    with pytest.raises(ValueError):
        build_encoder({"name": "resnet101v2"})
    with pytest.raises(ValueError):
        build_encoder({"name": "densenet"})


@pytest.mark.parametrize("config", [dict(TINY_VIT), {"name": "resnet18", "chan_start": 8}])
def test_bfloat16_forward(config):
    model = _small(build_encoder(dict(config, dtype="bfloat16")))
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables["params"]))
    out = model.apply(variables, x, train=False)
    assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
    reference = _small(build_encoder(config)).apply(variables, x, train=False)
    np.testing.assert_allclose(out.astype(jnp.float32), reference, rtol=0.1, atol=0.1)


# ----------------------------------------------------------------------------- dual stream

@pytest.mark.parametrize("base", [{"name": "resnet18", "chan_start": 8}, dict(TINY_VIT)])
def test_dual_stream_uses_both_lead_groups(base):
    built = build_encoder(dict(base, dual_stream=True))
    assert isinstance(built, DualStreamEncoder) and built.limb_encoder is not built.precordial_encoder
    model = built.clone(limb_encoder=_small(built.limb_encoder),
                        precordial_encoder=_small(built.precordial_encoder))
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    encode = jax.jit(lambda params, x: model.apply({**variables, "params": params}, x, train=False))
    out = encode(variables["params"], x)
    assert out.shape == (2, model.feature_dim)
    for lead in (1, 8):  # lead II (limb stream) and V3 (precordial stream)
        assert not np.allclose(encode(variables["params"], x.at[:, :, lead].add(1.0)), out)
    grads = jax.jit(jax.grad(lambda p: encode(p, x).sum()))(variables["params"])
    for stream in ("limb_encoder", "precordial_encoder"):
        assert float(jnp.abs(grads[stream]["input_conv"]["kernel"]).sum()) > 0
    with pytest.raises(ValueError):
        model.apply(variables, x[..., :6], train=False)


# ----------------------------------------------------------------------------- heads

@pytest.mark.parametrize("norm", ["batch", "layer", None])
def test_projection_head(norm):
    head = ProjectionHead(hidden_dims=(16, 16), out_dim=8, norm=norm)
    x = _signal((4, 32))
    variables = _init(head, x)
    assert len([k for k in variables["params"] if k.startswith("dense")]) == 3
    out, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (4, 8) and head.apply(variables, x, train=False).shape == (4, 8)


def test_linear_head_and_attention_pooling():
    linear = LinearHead(5)
    x = _signal((3, 32))
    assert linear.apply(_init(linear, x), x).shape == (3, 5)

    pool = AttentionPooling(d_model=32, heads=4, layers=3)
    tokens = _signal((2, 6, 24))  # projected to d_model since 24 != 32
    variables = _init(pool, tokens)
    out = pool.apply(variables, tokens, train=False)
    assert out.shape == (2, 32)
    assert variables["params"]["context_token"].shape == (1, 1, 32)
    # No positions: pooling is invariant to the order of the pooled tokens, but not to their values.
    np.testing.assert_allclose(pool.apply(variables, tokens[:, ::-1], train=False), out, atol=1e-5)
    assert not np.allclose(pool.apply(variables, tokens * 2, train=False), out)
    default = AttentionPooling()
    assert (default.d_model, default.heads, default.layers, default.dropout) == (512, 8, 3, 0.0)


# ----------------------------------------------------------------------------- lead adaptation

@pytest.mark.usefixtures("float32_products")
@pytest.mark.parametrize("config", [dict(TINY_VIT), {"name": "resnet18", "chan_start": 8}])
def test_one_lead_encoder_adapted_to_twelve_leads(config):
    model = build_encoder(config)
    x1 = _signal((2, 250, 1))
    variables = _init(model, x1)
    adapted = {**variables, "params": adapt_input_leads(variables["params"], 1, 12)}
    assert adapted["params"]["input_conv"]["kernel"].shape[1] == 12
    np.testing.assert_allclose(model.apply(adapted, jnp.repeat(x1, 12, axis=-1), train=False),
                               model.apply(variables, x1, train=False), rtol=1e-4, atol=1e-5)


def test_twelve_lead_encoder_adapted_to_lead_subset():
    model = build_encoder({"name": "resnet18", "chan_start": 8})
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    columns = [0, 1, 6]
    subset = adapt_input_leads(variables, 12, columns)  # variables dict works too
    zeroed = jnp.zeros_like(x).at[..., columns].set(x[..., columns])
    np.testing.assert_allclose(model.apply(subset, x[..., columns], train=False),
                               model.apply(variables, zeroed, train=False), rtol=1e-4, atol=1e-5)
    assert adapt_input_leads(variables, 12, 4)["params"]["input_conv"]["kernel"].shape[1] == 4
    with pytest.raises(ValueError):
        adapt_input_leads(variables, 4, 12)
    with pytest.raises(ValueError):
        adapt_input_leads(variables, 12, [12])


def test_conv_stem_tokens_see_only_their_own_patch_and_adapt_to_a_lead_subset():
    model = build_encoder({**TINY_VIT, "stem": "conv"})
    x = _signal((2, 250, 12))
    variables = _init(model, x)
    stem = ConvPatchEmbed(patch=25, width=32)  # [2, 250, 12] -> [2, 10, 32], the model's own weights
    stem_vars = {"params": variables["params"]["conv_stem"]}
    tokens = stem.apply(stem_vars, x)
    changed = stem.apply(stem_vars, x.at[:, 50:75].add(1.0))  # patch 2's samples only
    differs = np.abs(np.asarray(changed - tokens)).max(axis=(0, 2)) > 1e-6
    assert differs.tolist() == [i == 2 for i in range(10)]
    # Keeping every patch in some order gives the full path's tokens in that order (MAE).
    order = jnp.stack([jax.random.permutation(jax.random.key(i), 10) for i in range(2)])
    np.testing.assert_allclose(model.apply(variables, x, train=False, keep_indices=order),
                               model.apply(variables, x, train=False), atol=1e-5)
    # Its first convolution is the one lead adaptation rewrites.
    columns = [0, 1, 6]
    subset = adapt_input_leads(variables, 12, columns)
    zeroed = jnp.zeros_like(x).at[..., columns].set(x[..., columns])
    np.testing.assert_allclose(model.apply(subset, x[..., columns], train=False),
                               model.apply(variables, zeroed, train=False), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown ViT stem 'cnn'"):
        _init(build_encoder({**TINY_VIT, "stem": "cnn"}), x)
