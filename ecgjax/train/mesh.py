"""Device mesh for data parallelism: the batch is sharded over a 'data' axis, parameters replicated.

The same code runs on one CPU device, several GPUs, or several processes / hosts (after
`ecgjax.train.multihost.initialize()`): `jax.devices()` then lists every device of every process,
and each process feeds only its own slice of the global batch to its own devices (`shard_batch`).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ecgjax.errors import UserError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all of them by default).

    With several processes the mesh spans every device of every process (each process feeds its
    own), so `num_devices` may only restate that number. Devices are ordered process by process,
    so each process's rows of the global batch are one contiguous block.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices, only {len(devices)} available")
        if jax.process_count() > 1 and num_devices != len(devices):
            raise UserError(f"train.num_devices={num_devices}: a run of {jax.process_count()} processes uses all "
                            f"{len(devices)} devices of all of them; leave train.num_devices=0")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over devices; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise UserError(f"train.batch_size={global_batch} is not divisible by the {mesh.size} devices of the "
                        f"mesh; pass a multiple of {mesh.size}")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places this process's numpy batch on the mesh, split along the batch axis.

    batch: {key: [local_batch, ...]}. With one process the local batch is the global batch. With
    several, process i passes the i-th slice (rows [i * local_batch, (i + 1) * local_batch) of
    the global batch, as the device order of `make_mesh` is process-major) and gets back global
    arrays [local_batch * num_processes, ...] (`jax.make_array_from_process_local_data`).
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )

