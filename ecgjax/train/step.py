"""One pretraining step: `step(state, batch) -> (state, metrics)`, compiled once with jax.jit.

The batch is sharded over the mesh's 'data' axis and the state replicated; jit then runs the
same program data-parallel on 1 CPU, 8 GPUs or several hosts, with gradient (and BatchNorm)
reductions over the global batch, so results do not depend on the number of devices.

The batch holds the loader's unaugmented crops; the step augments them itself (`augment_views`,
ecgjax.data.augment) with keys from the state's RNG, so the host never waits on augmentation and
a resumed run draws the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ecgjax.data import augment
from ecgjax.objectives import contrastive, cpc, hybrid, mae, moco
from ecgjax.train.pretrain_model import PretrainModel, masking_indices, query_views
from ecgjax.train.state import TrainState


def _variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _active(weights, name: str) -> bool:
    return float(weights.get(name, 0.0)) != 0.0


def compute_losses(params, state: TrainState, batch: dict, rng, *, model: PretrainModel,
                   config: ml_collections.ConfigDict, train: bool = True):
    """Total loss and every part (003 Appendix C logs patient, sample, reconstruction separately).

    Returns (total, (parts, metrics, new_batch_stats, moco_keys)).
    """
    obj = config.objective
    weights = obj.weights
    method = obj.method
    mask_rng, dropout_rng, negatives_rng = jax.random.split(rng, 3)
    b = batch["patient"].shape[0]
    keep = mask = None
    if method in ("gl", "hl"):
        keep, mask = masking_indices(mask_rng, config, b)
    mutable = ["batch_stats"] if state.batch_stats else False
    result = model.apply(_variables(params, state.batch_stats), batch, train=train,
                         keep_indices=keep, rngs={"dropout": dropout_rng}, mutable=mutable)
    out, updates = result if mutable else (result, {})
    new_batch_stats = updates.get("batch_stats", state.batch_stats)

    parts, metrics, keys = {}, {}, None
    if "reconstruction" in out:
        parts["reconstruction"] = mae.reconstruction_loss(
            out["reconstruction"], batch["segment"], mask[:b], config.model.encoder.patch,
            lead_mask=batch.get("lead_mask"))
    if "z" in out:
        z = dict(zip(query_views(obj), out["z"]))
        t = obj.temperature
        if obj.moco.enabled:
            keys = _moco_keys(state, batch, model, config, dropout_rng)
            for name, view in (("patient", "patient_segment"), ("sample", "segment_aug")):
                if _active(weights, name):
                    parts[name] = moco.moco_infonce(
                        z["segment"], keys[view], state.moco["queue"], t, q_patient=batch["patient"],
                        queue_patient=state.moco["queue_patient"])
            # 000 tracks NT-Xent between the positive pairs alongside the queue InfoNCE.
            metrics["nt_xent"] = contrastive.nt_xent(z["segment"], keys["patient_segment"], t)
        else:
            if _active(weights, "sample") or method == "hl":
                parts["sample"] = contrastive.sample_contrastive(z["segment"], z["segment_aug"], t)
            if _active(weights, "patient") or method == "hl":
                parts["patient"] = contrastive.patient_contrastive(
                    z["segment"], z["patient_segment"], batch["patient"], t)
            if _active(weights, "intersegment"):
                parts["intersegment"] = contrastive.intersegment_contrastive(
                    z["segment"], z["patient_segment"], batch["patient"], t)
        if _active(weights, "interlead"):
            parts["interlead"] = contrastive.interlead_contrastive(
                jnp.stack([z["limb_only"], z["precordial_only"]], axis=1), t)
    if "cpc_prediction" in out:
        n_neg = obj.cpc.num_negatives or None
        parts["cpc"] = cpc.cpc_infonce(out["cpc_prediction"], out["cpc_future"],
                                       num_negatives=n_neg, rng=negatives_rng)
    used = {k: v for k, v in weights.items() if k in parts}
    total, parts = hybrid.hybrid_loss(parts, used)
    return total, (parts, metrics, new_batch_stats, keys)


def _moco_keys(state: TrainState, batch: dict, model: PretrainModel, config, rng) -> dict:
    """Momentum-encoder embeddings of the positive views (no gradient)."""
    views = ["patient_segment"] + (["segment_aug"] if _active(config.objective.weights, "sample") else [])
    x = jnp.concatenate([batch[v] for v in views])
    variables = _variables(state.moco["ema_params"], state.moco["ema_batch_stats"])
    mutable = ["batch_stats"] if state.moco["ema_batch_stats"] else False
    result = model.apply(variables, x, train=True, method=PretrainModel.embed,
                         rngs={"dropout": rng}, mutable=mutable)
    k = result[0] if mutable else result
    k = jax.lax.stop_gradient(k).reshape((len(views), batch["patient"].shape[0], -1))
    return dict(zip(views, k))


# fold_in tag of the augmentation stream: the loss keeps the key it had before augmentation moved here.
_AUGMENT_STREAM = 0xA46


def device_views(objective: ml_collections.ConfigDict) -> tuple[tuple[str, str], ...]:
    """(view, host crop it is drawn from) for every view the step augments.

    'segment' and 'segment_aug' are two independent augmentations of the same crop (the
    sample-level positive pair), 'patient_segment' one of the patient's other crop. CPC's frames
    stay unaugmented; GL uses the anchor only; a MoCo queue needs 'segment_aug' only for the
    sample term.
    """
    if objective.method == "cpc":
        return ()
    if objective.method == "gl":
        return (("segment", "segment"),)
    views = [("segment", "segment")]
    if not objective.moco.enabled or _active(objective.weights, "sample"):
        views.append(("segment_aug", "segment"))
    return (*views, ("patient_segment", "patient_segment"))


def augment_views(batch: dict, key, augmentation: augment.Augmentation, views) -> dict:
    """The batch with each view of `views` (see `device_views`) replaced by an augmentation of its
    crop, [batch, time, 12] each, an independent draw per view and example. Signals the loader
    sends in the store's float16 are cast to float32 first (exactly: float16 is a subset)."""
    batch = {k: v.astype(jnp.float32) if v.dtype == jnp.float16 else v for k, v in batch.items()}
    out = dict(batch)
    for i, (view, source) in enumerate(views):
        out[view] = augmentation(jax.random.fold_in(key, i), batch[source]) if augmentation else batch[source]
    return out


def make_train_step(model: PretrainModel, config: ml_collections.ConfigDict,
                    optimizer: optax.GradientTransformation, schedule: optax.Schedule):
    """The un-jitted step; `jit_train_step` compiles it for a mesh."""
    loss_fn = functools.partial(compute_losses, model=model, config=config)
    mc = config.objective.moco
    augmentation = augment.build_augmentation(config.data.augmentation, fs=config.data.fs)
    views = device_views(config.objective)

    def step(state: TrainState, batch: dict):
        rng, next_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
        rng = jax.random.fold_in(rng, state.step)
        batch = augment_views(batch, jax.random.fold_in(rng, _AUGMENT_STREAM), augmentation, views)
        (total, (parts, metrics, batch_stats, keys)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params, state, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, rng=jax.random.key_data(next_rng))
        if mc.enabled:
            old = state.moco
            queue, queue_patient, ptr = moco.queue_enqueue(
                old["queue"], old["queue_patient"], old["queue_ptr"], keys["patient_segment"],
                batch["patient"])
            new = new.replace(moco=dict(
                ema_params=moco.ema_update(old["ema_params"], params, mc.momentum),
                ema_batch_stats=moco.ema_update(old["ema_batch_stats"], batch_stats, mc.momentum),
                queue=queue, queue_patient=queue_patient, queue_ptr=ptr))
        metrics = {**metrics, **parts, "loss": total, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state.step)}
        return new, metrics

    return step


def jit_train_step(step_fn, state_sharding, metrics_sharding):
    """Compiles the step; the old state's buffers are donated (updated in place)."""
    return jax.jit(step_fn, out_shardings=(state_sharding, metrics_sharding), donate_argnums=0)
