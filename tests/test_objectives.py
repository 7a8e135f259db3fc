"""Loss functions against hand-computed values (explicit numpy loops and closed forms)."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.vit1d import patchify
from ecgjax.objectives import contrastive as _contrastive
from ecgjax.objectives import cpc as _cpc
from ecgjax.objectives import hybrid, mae as _mae, moco as _moco

TAU = 0.5


class _Jitted:
    """Module proxy whose functions run under jax.jit: checks jit-compatibility and is faster than eager."""

    def __init__(self, module, static=()):
        self._module, self._static = module, static

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        params = inspect.signature(fn).parameters
        return jax.jit(fn, static_argnames=[s for s in self._static if s in params])


contrastive = _Jitted(_contrastive, ("with_metrics",))
moco = _Jitted(_moco, ("with_metrics", "size", "dim", "dtype"))
cpc = _Jitted(_cpc, ("with_metrics", "num_negatives", "normalize"))
mae = _Jitted(_mae, ("batch", "num_patches", "mask_ratio", "patch", "normalize_target"))


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _nce_term(pos_logit, neg_logits):
    """-log(exp(pos) / (exp(pos) + sum exp(neg))) by hand."""
    return -pos_logit + math.log(math.exp(pos_logit) + sum(math.exp(n) for n in neg_logits))


def _ref_two_view(z1, z2, ids, tau):
    """Loop reference for NT-Xent / patient contrastive over the 2B embeddings."""
    z = _unit(np.concatenate([z1, z2]))
    ids = list(ids) + list(ids)
    losses = []
    for i in range(len(z)):
        pos = [j for j in range(len(z)) if j != i and ids[j] == ids[i]]
        neg = [float(z[i] @ z[k]) / tau for k in range(len(z)) if ids[k] != ids[i]]
        if pos:
            losses.append(np.mean([_nce_term(float(z[i] @ z[p]) / tau, neg) for p in pos]))
    return float(np.mean(losses))


@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)


# ---------------------------------------------------------------- contrastive

def test_nt_xent_worked_example():
    # Orthonormal views, tau=1: each anchor sees its positive at sim 1 and two negatives at sim 0.
    e = np.eye(2, dtype=np.float32)
    assert float(contrastive.nt_xent(e, e, 1.0)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)


def test_nt_xent_uniform_similarities_is_log_2b_minus_1():
    z = np.ones((5, 4), np.float32)
    assert float(contrastive.nt_xent(z, z, 0.1)) == pytest.approx(math.log(9), rel=1e-5)


def test_nt_xent_matches_loop_reference(emb):
    z1, z2 = emb
    ref = _ref_two_view(z1, z2, range(4), TAU)
    assert float(contrastive.nt_xent(z1, z2, TAU)) == pytest.approx(ref, rel=1e-5)
    assert float(contrastive.sample_contrastive(z1, z2, TAU)) == pytest.approx(ref, rel=1e-5)


def test_patient_contrastive_matches_loop_reference(emb):
    z1, z2 = emb
    ids = np.array([7, 7, 3, 9])
    ref = _ref_two_view(z1, z2, ids, TAU)
    assert float(contrastive.patient_contrastive(z1, z2, ids, TAU)) == pytest.approx(ref, rel=1e-5)
    # Distinct patients reduce to NT-Xent.
    assert float(contrastive.patient_contrastive(z1, z2, np.arange(4), TAU)) == pytest.approx(
        float(contrastive.nt_xent(z1, z2, TAU)), rel=1e-6
    )


def test_patient_contrastive_uniform_closed_form():
    # Patient 0 owns 4 of 8 embeddings (4 negatives each), patients 1 and 2 own 2 (6 negatives).
    z = np.ones((4, 3), np.float32)
    expected = (4 * math.log(5) + 4 * math.log(7)) / 8
    assert float(contrastive.patient_contrastive(z, z, np.array([0, 0, 1, 2]), 0.1)) == pytest.approx(expected, rel=1e-5)


def test_same_patient_entries_are_never_negatives():
    # Two records of one patient that are far apart: treating the other as a negative would raise the loss.
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    z2 = z1.copy()
    loss_same = float(contrastive.patient_contrastive(z1, z2, np.array([0, 0]), 1.0))
    # Each anchor has 3 positives and no negatives: loss 0.
    assert loss_same == pytest.approx(0.0, abs=1e-6)


def test_contrastive_invariances(emb):
    z1, z2 = emb
    ids = np.array([1, 1, 2, 3])
    base = float(contrastive.patient_contrastive(z1, z2, ids, TAU))
    perm = np.array([2, 0, 3, 1])
    assert float(contrastive.patient_contrastive(z1[perm], z2[perm], ids[perm], TAU)) == pytest.approx(base, rel=1e-5)
    scale = np.array([[0.1], [3.0], [7.0], [0.5]], np.float32)
    assert float(contrastive.patient_contrastive(z1 * scale, z2 * scale[::-1], ids, TAU)) == pytest.approx(base, rel=1e-5)


def test_metrics_top1():
    e = np.eye(3, dtype=np.float32)
    loss, metrics = contrastive.nt_xent(e, e, 0.1, with_metrics=True)
    assert float(metrics["top1"]) == 1.0
    _, metrics = contrastive.nt_xent(e, e[[1, 2, 0]], 0.1, with_metrics=True)
    assert float(metrics["top1"]) == 0.0


def test_intersegment_matches_loop_reference(emb):
    a, b = emb
    za, zb = _unit(a), _unit(b)
    for ids in (np.arange(4), np.array([5, 5, 6, 7])):
        losses = []
        for x, y in ((za, zb), (zb, za)):  # rows anchored on segment a, then on segment b
            for i in range(4):
                pos = [j for j in range(4) if ids[j] == ids[i]]
                neg = [float(x[i] @ y[k]) / TAU for k in range(4) if ids[k] != ids[i]]
                losses.append(np.mean([_nce_term(float(x[i] @ y[p]) / TAU, neg) for p in pos]))
        got = contrastive.intersegment_contrastive(a, b, ids, TAU)
        assert float(got) == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_interlead_matches_loop_reference():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 4, 5)).astype(np.float32)  # [batch, leads, dim]
    present = np.array([[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 0]], bool)
    zn = _unit(z)
    losses = []
    for l in range(4):
        for m in range(4):
            for i in range(3):
                if l == m or not (present[i, l] and present[i, m]):
                    continue
                neg = [float(zn[i, l] @ zn[k, m]) / TAU for k in range(3) if k != i and present[k, m]]
                losses.append(_nce_term(float(zn[i, l] @ zn[i, m]) / TAU, neg))
    got = contrastive.interlead_contrastive(z, TAU, lead_mask=present)
    assert float(got) == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_interlead_uniform_closed_form():
    # All embeddings equal: every (pair, anchor) row has B-1 negatives -> log(B).
    z = np.ones((4, 3, 2), np.float32)
    assert float(contrastive.interlead_contrastive(z, 0.1)) == pytest.approx(math.log(4), rel=1e-5)


# ---------------------------------------------------------------- MoCo

def _ref_moco(q, k, queue, tau, q_pat=None, queue_pat=None):
    q, k, queue = _unit(q), _unit(k), _unit(queue)
    losses = []
    for i in range(len(q)):
        neg = [
            float(q[i] @ queue[j]) / tau
            for j in range(len(queue))
            if queue_pat is None or (queue_pat[j] >= 0 and (q_pat is None or queue_pat[j] != q_pat[i]))
        ]
        losses.append(_nce_term(float(q[i] @ k[i]) / tau, neg))
    return float(np.mean(losses))


def test_moco_matches_loop_reference():
    rng = np.random.default_rng(2)
    q, k, queue = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    q_pat, queue_pat = np.array([0, 1, 2]), np.array([0, 5, 1, -1, 2, 0])
    assert float(moco.moco_infonce(q, k, queue, TAU)) == pytest.approx(_ref_moco(q, k, queue, TAU), rel=1e-5)
    got = moco.moco_infonce(q, k, queue, TAU, q_patient=q_pat, queue_patient=queue_pat)
    assert float(got) == pytest.approx(_ref_moco(q, k, queue, TAU, q_pat, queue_pat), rel=1e-5)


def test_moco_uniform_is_log_k_plus_1():
    q = np.ones((2, 3), np.float32)
    assert float(moco.moco_infonce(q, q, np.ones((7, 3)), 0.1)) == pytest.approx(math.log(8), rel=1e-5)


def test_moco_same_patient_queue_entries_are_masked():
    q = np.array([[1.0, 0.0]], np.float32)
    k = np.array([[0.6, 0.8]], np.float32)
    # Queue holds a near-copy of q from the same patient and one far entry from another patient.
    queue = np.array([[1.0, 0.05], [-1.0, 0.0]], np.float32)
    unmasked = float(moco.moco_infonce(q, k, queue, 0.1, q_patient=np.array([4]), queue_patient=np.array([9, 8])))
    masked = float(moco.moco_infonce(q, k, queue, 0.1, q_patient=np.array([4]), queue_patient=np.array([4, 8])))
    assert masked < unmasked
    # top1: the same-patient near-copy outranks the key only while it counts as a negative.
    _, unmasked_metrics = moco.moco_infonce(q, k, queue, 0.1, np.array([4]), np.array([9, 8]), with_metrics=True)
    _, masked_metrics = moco.moco_infonce(q, k, queue, 0.1, np.array([4]), np.array([4, 8]), with_metrics=True)
    assert float(unmasked_metrics["top1"]) == 0.0 and float(masked_metrics["top1"]) == 1.0
    # Masking equals dropping the entry from the queue.
    assert masked == pytest.approx(float(moco.moco_infonce(q, k, queue[1:], 0.1)), rel=1e-6)


def test_moco_ignores_empty_slots():
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    queue, queue_pat, ptr = moco.queue_init(5, 4)
    queue, queue_pat, ptr = moco.queue_enqueue(queue, queue_pat, ptr, rng.normal(size=(2, 4)), np.array([10, 11]))
    full = float(moco.moco_infonce(q, k, queue, TAU, queue_patient=queue_pat))
    assert full == pytest.approx(float(moco.moco_infonce(q, k, queue[:2], TAU)), rel=1e-6)
    valid = np.array([True, True, False, False, False])
    assert float(moco.moco_infonce(q, k, queue, TAU, queue_valid=valid)) == pytest.approx(full, rel=1e-6)


def test_moco_keys_get_no_gradient():
    q, k, queue = jnp.ones((2, 3)), jnp.arange(6.0).reshape(2, 3), jnp.eye(3)
    gq, gk, gqueue = jax.grad(moco.moco_infonce, argnums=(0, 1, 2))(q, k, queue, 0.1)
    assert np.all(np.asarray(gk) == 0) and np.all(np.asarray(gqueue) == 0)
    assert np.all(np.isfinite(gq)) and np.any(np.asarray(gq) != 0)


def test_queue_wraps_around():
    queue, pat, ptr = moco.queue_init(5, 2)
    enqueue = jax.jit(moco.queue_enqueue)
    for step in range(3):  # 6 keys into 5 slots: the third batch wraps to slots 4 and 0
        keys = np.full((2, 2), step + 1.0, np.float32) + np.array([[0.0], [0.5]], np.float32)
        queue, pat, ptr = enqueue(queue, pat, ptr, keys, np.array([10 * step, 10 * step + 1]))
    assert int(ptr) == 1
    np.testing.assert_array_equal(np.asarray(pat), [21, 1, 10, 11, 20])
    np.testing.assert_allclose(np.asarray(queue)[:, 0], [3.5, 1.5, 2.0, 2.5, 3.0])
    with pytest.raises(ValueError):
        moco.queue_enqueue(queue, pat, ptr, np.zeros((6, 2), np.float32), np.zeros(6, np.int32))


def test_ema_update():
    from ecgjax.methods import momentum

    target = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    online = {"w": jnp.array([5.0, 6.0]), "b": jnp.array(-1.0)}
    queue, queue_patient, ptr = _moco.queue_init(4, 2)
    state = dict(queue=queue, queue_patient=queue_patient, queue_ptr=ptr, ema_params=target, ema_batch_stats={})

    def ema(m):  # the momentum encoder's update after a step (ecgjax.methods.momentum)
        return momentum.update(m, state, online, {}, jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32))["ema_params"]

    keep, copy, half = ema(1.0), ema(0.0), ema(0.75)
    np.testing.assert_allclose(keep["w"], [1.0, 2.0])
    np.testing.assert_allclose(copy["w"], [5.0, 6.0])
    np.testing.assert_allclose(copy["b"], -1.0)
    np.testing.assert_allclose(half["w"], [2.0, 3.0])


# ---------------------------------------------------------------- MAE

def test_random_masking_keeps_unique_sorted_indices():
    keep, mask = mae.random_masking(jax.random.key(0), 6, 10, 0.75)
    keep, mask = np.asarray(keep), np.asarray(mask)
    assert keep.shape == (6, 2) and keep.dtype == np.int32 and mask.shape == (6, 10)
    for row_keep, row_mask in zip(keep, mask):
        assert len(set(row_keep)) == 2 and np.all(np.diff(row_keep) > 0)
        assert set(np.flatnonzero(~row_mask)) == set(row_keep)
    again, _ = mae.random_masking(jax.random.key(0), 6, 10, 0.75)
    other, _ = mae.random_masking(jax.random.key(1), 6, 10, 0.75)
    np.testing.assert_array_equal(keep, again)
    assert not np.array_equal(keep, np.asarray(other))
    with pytest.raises(ValueError):
        mae.random_masking(jax.random.key(0), 2, 4, 1.0)


def test_masked_l1_matches_loop_and_ignores_visible_patches():
    rng = np.random.default_rng(4)
    pred, target = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    mask = np.array([[True, False, True], [False, False, True]])
    total, count = 0.0, 0
    for b in range(2):
        for n in range(3):
            if mask[b, n]:
                for p in range(4):
                    total += abs(pred[b, n, p] - target[b, n, p])
                    count += 1
    assert float(mae.masked_l1(pred, target, mask)) == pytest.approx(total / count, rel=1e-5)
    pred_changed = pred.copy()
    pred_changed[~mask] = 1e3  # visible patches are never scored
    assert float(mae.masked_l1(pred_changed, target, mask)) == pytest.approx(total / count, rel=1e-5)


def test_masked_l1_normalized_target():
    target = np.array([[[1.0, 3.0]]])  # mean 2, std 1 -> normalised [-1, 1]
    got = mae.masked_l1(np.zeros((1, 1, 2)), target, np.array([[True]]), normalize_target=True)
    assert float(got) == pytest.approx(1.0, rel=1e-5)


def test_reconstruction_loss_skips_padding_and_absent_leads():
    signal = np.arange(10 * 2, dtype=np.float32).reshape(1, 10, 2)  # 10 samples, 2 leads, patch 4 -> 3 patches
    target = np.asarray(patchify(jnp.asarray(signal), 4))
    mask = np.array([[False, True, True]])
    pred = target + 1.0  # error 1 everywhere, including the two padded samples of patch 2
    assert float(mae.reconstruction_loss(pred, signal, mask, 4)) == pytest.approx(1.0, rel=1e-6)
    pred = target.copy()
    pred[0, 2, 4:] = 50.0  # the padded tail of the last patch (time-major: samples 10, 11)
    assert float(mae.reconstruction_loss(pred, signal, mask, 4)) == pytest.approx(0.0, abs=1e-6)
    pred = target.copy()
    pred[0, :, 1::2] += 5.0  # lead 1 wrong, but absent
    got = mae.reconstruction_loss(pred, signal, mask, 4, lead_mask=np.array([[True, False]]))
    assert float(got) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- CPC

def test_cpc_matches_loop_reference():
    rng = np.random.default_rng(5)
    c, h = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    ref = np.mean([_nce_term(float(c[i] @ h[i]), [float(c[i] @ h[j]) for j in range(4) if j != i]) for i in range(4)])
    assert float(cpc.cpc_infonce(c, h)) == pytest.approx(float(ref), rel=1e-5)
    # Step-wise: each step is an independent batch, negatives from the same step.
    c2, h2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    stepwise = cpc.cpc_infonce(np.stack([c, c2], 1), np.stack([h, h2], 1))
    assert float(stepwise) == pytest.approx((float(cpc.cpc_infonce(c, h)) + float(cpc.cpc_infonce(c2, h2))) / 2, rel=1e-5)


def test_cpc_sampled_negatives():
    z = np.ones((6, 3), np.float32)
    # Equal scores: the loss counts the negatives exactly, log(1 + ns).
    assert float(cpc.cpc_infonce(z, z, 2, jax.random.key(0))) == pytest.approx(math.log(3), rel=1e-5)
    rng = np.random.default_rng(6)
    c, h = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    full = float(cpc.cpc_infonce(c, h))
    assert float(cpc.cpc_infonce(c, h, 5, jax.random.key(1))) == pytest.approx(full, rel=1e-5)
    a = float(cpc.cpc_infonce(c, h, 2, jax.random.key(2)))
    assert a == float(cpc.cpc_infonce(c, h, 2, jax.random.key(2)))
    with pytest.raises(ValueError):
        cpc.cpc_infonce(c, h, 6, jax.random.key(0))


# ---------------------------------------------------------------- hybrid

def test_hybrid_loss_is_eq3_sum():
    parts = {"reconstruction": 16.9187, "patient": 135.0332, "sample": 169.3104}  # 003 Table 3, HL row
    total, logged = hybrid.hybrid_loss(parts)
    assert float(total) == pytest.approx(321.2623, rel=1e-5)
    assert set(logged) == set(parts)
    total, _ = hybrid.hybrid_loss(parts, {"reconstruction": 2.0, "sample": 0.0})
    assert float(total) == pytest.approx(2 * 16.9187 + 135.0332, rel=1e-5)
    with pytest.raises(ValueError):
        hybrid.hybrid_loss({"recon": 1.0})


# ---------------------------------------------------------------- jit, dtype, gradients

def _all_losses(z1, z2, ids, z_leads):
    return {
        "nt_xent": contrastive.nt_xent(z1, z2, 0.1),
        "patient": contrastive.patient_contrastive(z1, z2, ids, 0.1),
        "intersegment": contrastive.intersegment_contrastive(z1, z2, ids, 0.1),
        "interlead": contrastive.interlead_contrastive(z_leads, 0.1),
        "moco": moco.moco_infonce(z1, z2, jnp.concatenate([z2, z1]), 0.1, ids, jnp.concatenate([ids, ids + 100])),
        "cpc": cpc.cpc_infonce(z1, z2, 2, jax.random.key(0)),
    }


def test_jit_bfloat16_and_finite_gradients(emb):
    z1, z2 = map(jnp.asarray, emb)
    z1 = z1.at[0].set(0.0)  # a zero embedding must not produce NaNs through the normalisation
    ids = jnp.array([0, 0, 1, 2])
    z_leads = jnp.stack([z1, z2, z1 + z2], axis=1)
    def total(a, b, l):
        losses = _all_losses(a, b, ids, l)
        return sum(losses.values()), losses

    (_, f32), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True))(z1, z2, z_leads)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    bf16 = jax.jit(_all_losses)(z1.astype(jnp.bfloat16), z2.astype(jnp.bfloat16), ids, z_leads.astype(jnp.bfloat16))
    for name in f32:
        assert bf16[name].dtype == jnp.float32, name
        assert float(bf16[name]) == pytest.approx(float(f32[name]), rel=2e-2), name
    pred = jnp.ones((2, 3, 8))
    recon = lambda p: _mae.reconstruction_loss(p, jnp.zeros((2, 10, 2)), jnp.ones((2, 3), bool), 4, normalize_target=True)
    g = jax.jit(jax.grad(recon))(pred)
    assert np.all(np.isfinite(np.asarray(g)))
