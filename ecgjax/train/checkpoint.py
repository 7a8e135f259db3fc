"""Orbax checkpoints of the whole training state plus the Grain iterator position.

One checkpoint step holds:
  state: params, optimizer state, batch statistics, EMA (key) encoder, MoCo queue, step, RNG;
  data:  the Grain iterator state, so a resumed run sees the same batches in the same order.
Saves are asynchronous; `close()` waits for the last one.

Several processes (ecgjax.train.multihost): every process calls save and restore with the same
step. Orbax writes each array once (the primary process writes the metadata and commits the step
only after all processes have written theirs), and Grain writes one iterator state per process,
data/process_<i>-of-<n>.json, since each process reads its own shard of patients. A step that a
killed process never finished is not committed; the next run removes its temporary folder and
resumes from the last step every process completed. A checkpoint resumes only with the number of
processes that wrote it (each one's iterator state belongs to its shard).
"""
from __future__ import annotations

import logging
import os
import re

import grain
import jax
import orbax.checkpoint as ocp

from ecgjax.errors import UserError

logger = logging.getLogger("ecgjax")

# Orbax saves a replicated array in parallel from its replicas (each writes a slice), which costs an
# XLA compilation per slice shape at the first save (~50 for a small ViT, a minute on a busy
# 2-core CPU) for nothing on small arrays. Slices under this size are written by one replica.
MIN_REPLICA_PARALLEL_SLICE_BYTES = 16 * 2**20


_array_handler_registered = False


def _register_array_handler() -> None:
    """Orbax's jax.Array handler with MIN_REPLICA_PARALLEL_SLICE_BYTES, once per process."""
    global _array_handler_registered
    if _array_handler_registered:
        return
    absl_logger = logging.getLogger("absl")  # Orbax warns that it overrides its default handler
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES,
                # the default handler's metadata store, as Orbax registers it
                array_metadata_store=getattr(ocp.type_handlers.get_type_handler(jax.Array), "_array_metadata_store", None)),
            override=True)
    finally:
        absl_logger.setLevel(level)
    _array_handler_registered = True


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for (state, data-iterator) pairs."""

    def __init__(self, directory: str, *, keep: int = 3, save_every: int = 1000):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        _register_array_handler()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=save_every, create=True,
                cleanup_tmp_directories=True,  # a save that a killed process left unfinished
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
        """Saves if `step` falls on the save interval (or `force`); returns whether it saved."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if saved:
            logger.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def restore(self, state_template, data_iterator=None, step: int | None = None):
        """Restores into the structure (and shardings) of `state_template`.

        Returns (state, data_iterator); the iterator is restored in place when given.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iterator is not None:
            self._check_data_processes(step)
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logger.info("checkpoint: restored step %d from %s", step, self.directory)
        return restored["state"], (restored["data"] if data_iterator is not None else None)

    def data_processes(self, step: int) -> int | None:
        """How many processes wrote the data-iterator states of `step` (None: no such states)."""
        folder = os.path.join(self.directory, str(step), "data")
        counts = {int(m.group(1)) for name in (os.listdir(folder) if os.path.isdir(folder) else ())
                  if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", name))}
        return max(counts) if counts else None

    def _check_data_processes(self, step: int) -> None:
        saved, now = self.data_processes(step), jax.process_count()
        if saved is not None and saved != now:
            raise UserError(
                f"{self.directory}/{step}: this checkpoint was written by {saved} process(es), each with its "
                f"own shard of the data, and this run has {now}. Resume it with {saved} processes "
                f"(python -m ecgjax.launch --num_processes={saved} -- ..., or as many SLURM tasks), "
                f"or start a new --workdir")

    def restore_state_only(self, state_template, step: int | None = None):
        """The training state alone (evaluation and fine-tuning don't need the data position)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
