"""What one pretraining step costs according to XLA, found by compiling it without running it.

    cost = step_cost(config)   # {'params', 'flops', 'memory_bytes', ...}; allocates no state

The state and the batch are abstract (shapes, dtypes and shardings only), so a cell far too big
for this machine's memory can still be sized here. FLOPs are XLA's count for the whole compiled
step (device augmentation, forward, backward, optimizer); memory is XLA's buffer assignment for it
(arguments + outputs + temporaries + code - what the outputs alias), on the backend that compiled.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from ecgjax.data import pipeline
from ecgjax.methods import registry
from ecgjax.train import loop, mesh as mesh_lib, state as state_lib

# The loader's signal dtype: the store's float16 samples, cast on the device (see pipeline).
HOST_SIGNAL_DTYPE = np.float16


def host_batch_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple[tuple, np.dtype]]:
    """{key: (shape, dtype)} of the batches the loader yields for this config (what the step takes)."""
    cpc = config.objective.cpc
    arrays = pipeline.view_arrays(loop.loader_views(config.objective), config.model.encoder.num_samples,
                                  pipeline.CPCSpec(n_context=cpc.n_context, frame_s=cpc.frame_s, offset=cpc.offset),
                                  config.data.fs, leads=config.model.encoder.in_leads)
    return {key: ((batch_size, *shape), HOST_SIGNAL_DTYPE if kind == "signal" else np.dtype(kind))
            for key, (shape, kind) in arrays.items()}


def random_host_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0) -> dict:
    """A numpy batch shaped like the loader's: N(0, 1) mV signals, distinct patients, all leads,
    labels drawn from the method's classes (`Method.label_classes`)."""
    rng = np.random.default_rng(seed)
    classes = registry.get(config.objective.method).label_classes()
    batch = {}
    for key, (shape, dtype) in host_batch_shapes(config, batch_size).items():
        if key == "patient":
            batch[key] = np.arange(batch_size, dtype=dtype)
        elif key == "lead_mask":
            batch[key] = np.ones(shape, dtype)
        elif key in classes:
            batch[key] = rng.integers(0, classes[key], size=shape).astype(dtype)
        else:
            batch[key] = rng.normal(size=shape).astype(dtype)
    return batch


def abstract_inputs(trainer: loop.Trainer) -> tuple:
    """(state, batch) of the trainer's step as ShapeDtypeStructs with their shardings."""
    state = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0))
    sharding = mesh_lib.data_sharding(trainer.mesh)
    batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
             for k, (shape, dtype) in host_batch_shapes(trainer.config, trainer.config.train.batch_size).items()}
    return state, batch


def compiled_cost(compiled) -> dict:
    """FLOPs and memory analysis of a compiled executable."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    parts = {f: int(getattr(memory, f"{f}_size_in_bytes", 0) or 0)
             for f in ("argument", "output", "temp", "generated_code", "alias")}
    return {"flops": float(cost.get("flops", float("nan"))) if cost else float("nan"),
            "memory_bytes": parts["argument"] + parts["output"] + parts["temp"] + parts["generated_code"]
            - parts["alias"],
            **{f"{f}_bytes": v for f, v in parts.items()}}


def step_cost(config: ml_collections.ConfigDict, num_devices: int | None = None) -> dict:
    """Compiles the config's train step on abstract inputs; returns params, FLOPs and memory.

    Keys: params (count), flops (per step, all devices), memory_bytes (per device) and its
    argument / output / temp / generated_code / alias parts, backend.
    """
    trainer = loop.Trainer(config, num_devices=num_devices)
    state, batch = abstract_inputs(trainer)
    compiled = trainer.train_step.lower(state, batch).compile()
    return {"params": state_lib.count_params(state.params), **compiled_cost(compiled),
            "backend": jax.default_backend()}
