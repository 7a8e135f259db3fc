"""Device mesh for data parallelism: the batch is sharded over a 'data' axis, parameters replicated.

The same code runs on one CPU device, several GPUs, or several hosts (after
`jax.distributed.initialize()`): `jax.devices()` then lists every device of every host and each
host feeds only its own slice of the global batch.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all of them by default)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices, only {len(devices)} available")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over devices; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise ValueError(
            f"batch size {global_batch} is not divisible by the {mesh.size} devices of the mesh"
        )


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places a host-local numpy batch on the mesh, split along the batch axis.

    On one host the local batch is the global batch. On several hosts each host passes its own
    slice and the result is one global array (`make_array_from_process_local_data`).
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def replicate(tree, mesh: Mesh):
    """Copies a pytree (parameters, optimizer state) to every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))
