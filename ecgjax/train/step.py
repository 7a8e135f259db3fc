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
from ecgjax.methods import registry
from ecgjax.methods.network import PretrainModel, apply_model
from ecgjax.objectives import hybrid
from ecgjax.train.state import TrainState


def compute_losses(params, state: TrainState, batch: dict, rng, *, model: PretrainModel,
                   config: ml_collections.ConfigDict, train: bool = True):
    """Total loss and every part the method computes (003 Appendix C logs them separately).

    Returns (total, (parts, metrics, new_batch_stats, aux)); aux goes to `Method.update_extra`.
    """
    method = registry.get(config.objective.method)
    inputs_rng, dropout_rng, loss_rng = jax.random.split(rng, 3)
    inputs = method.inputs(config, inputs_rng, batch["patient"].shape[0])
    out, new_batch_stats = apply_model(model, params, state.batch_stats, batch, rng=dropout_rng,
                                       train=train, inputs=inputs)
    parts, metrics, aux = method.losses(config, out, batch, inputs, model=model, extra=state.moco,
                                        rng=loss_rng)
    weights = {name: registry.weight(config.objective, name) for name in parts}
    total, parts = hybrid.hybrid_loss(parts, weights, names=method.terms)
    return total, (parts, metrics, new_batch_stats, aux)


# fold_in tag of the augmentation stream: the loss keeps the key it had before augmentation moved here.
_AUGMENT_STREAM = 0xA46


def device_views(objective: ml_collections.ConfigDict) -> tuple[tuple[str, str], ...]:
    """(view, host crop it is drawn from) for every view the step augments (the method's)."""
    return registry.get(objective.method).device_views(objective)


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
    method = registry.get(config.objective.method)
    augmentation = augment.build_augmentation(config.data.augmentation, fs=config.data.fs)
    views = method.device_views(config.objective)

    def step(state: TrainState, batch: dict):
        rng, next_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
        rng = jax.random.fold_in(rng, state.step)
        batch = augment_views(batch, jax.random.fold_in(rng, _AUGMENT_STREAM), augmentation, views)
        (total, (parts, metrics, batch_stats, aux)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params, state, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, rng=jax.random.key_data(next_rng),
                            moco=method.update_extra(config, state.moco, params, batch_stats, batch, aux))
        metrics = {**metrics, **parts, "loss": total, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state.step)}
        return new, metrics

    return step


def jit_train_step(step_fn, state_sharding, metrics_sharding):
    """Compiles the step; the old state's buffers are donated (updated in place)."""
    return jax.jit(step_fn, out_shardings=(state_sharding, metrics_sharding), donate_argnums=0)
