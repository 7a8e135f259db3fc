"""Orbax checkpoints of the whole training state plus the Grain iterator position.

One checkpoint step holds:
  state: params, optimizer state, batch statistics, EMA (key) encoder, MoCo queue, step, RNG;
  data:  the Grain iterator state, so a resumed run sees the same batches in the same order.
Saves are asynchronous; `close()` waits for the last one.
"""
from __future__ import annotations

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp


logger = logging.getLogger("ecgjax")

class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for (state, data-iterator) pairs."""

    def __init__(self, directory: str, *, keep: int = 3, save_every: int = 1000):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=save_every, create=True,
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
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logger.info("checkpoint: restored step %d from %s", step, self.directory)
        return restored["state"], (restored["data"] if data_iterator is not None else None)

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
