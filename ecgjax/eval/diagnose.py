"""Representation diagnostics of a pretrained encoder (000 §5.1, 003 §4.6.1):

  - an embedding plot of validation records, coloured by a task label (PNG);
  - patient identification accuracy: how often a record's nearest neighbour in embedding space
    belongs to the same patient (over patients with at least two records);
  - the risk decomposition of a linear probe (Dubois et al. 2023), with an optional encoder
    trained supervised on the task (a saved downstream model) for the approximation term.

    python experiments/diagnose.py --checkpoint=runs/hl --task=MI --output=runs/hl/diagnostics
"""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from ecgjax import loader
from ecgjax.downstream.batches import batched_apply
from ecgjax.downstream.network import adapt_encoder, compiled_encoder
from ecgjax.errors import UserError
from ecgjax.eval import diagnostics, folds as folds_lib, risk, tasks
from ecgjax.eval.task_data import load_task_arrays

logger = logging.getLogger("ecgjax")

# Windows per encoder call, and the most records' signals held in memory at once.
_BATCH = 256


def _class_ids(task: tasks.Task, y: np.ndarray) -> np.ndarray:
    if task.type in ("binary", "multiclass"):
        return np.asarray(y).astype(int).ravel()
    raise ValueError(f"risk decomposition needs a binary or multi-class task, not {task.type} ({task.name})")


def run_diagnostics(checkpoint: str, task_spec: str, output_dir, *, store: str = "",
                    folds: dict | None = None, supervised: str = "", method: str = "pca",
                    max_records: int = 4000, seed: int = 0) -> dict:
    """Writes embedding.png and diagnostics.json to output_dir; returns the figures.

    folds: {'train': '1-7', 'val': '8', 'test': '9'} PTB-XL folds, or None for the store's split.
    """
    network = loader.load_pretrained(checkpoint, "--checkpoint")
    data_store = loader.open_task_store(network.config, store, "--store", checkpoint)
    try:
        task = tasks.get_task(task_spec, data_store.metadata.columns)
    except UserError:
        raise
    except ValueError as error:  # an unknown task name
        raise UserError(f"--task={task_spec}: {error}") from None
    encoder_config, encoder_vars, leads = adapt_encoder(network.encoder_config, network.encoder_variables, task.leads)
    # The plot and patient identification use val; the risk decomposition train and test too.
    needed = ("train", "val", "test") if task.type in ("binary", "multiclass") else ("val",)
    splits = folds_lib.resolve_splits(data_store, task, folds, needed=needed, flag="--folds")
    output = pathlib.Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    encoder = compiled_encoder(encoder_config)

    def labelled(split: str, limit: int | None = None):
        """(records, y, patient) of the split's records with a valid label; at most `limit` of them,
        a fixed random subset (bounds CPU time on big stores)."""
        records = splits[split]
        y, valid = task.targets(data_store.metadata.iloc[records].reset_index(drop=True))
        records, y = records[valid], y[valid]
        if limit is not None and len(records) > limit:
            keep = np.zeros(len(records), bool)
            keep[rng.choice(len(records), limit, replace=False)] = True
            records, y = records[keep], y[keep]
        return records, y, data_store.metadata["patient_index"].to_numpy(np.int64)[records]

    def embed(records: np.ndarray, features=lambda x: encoder(encoder_vars, x)) -> np.ndarray:
        """[len(records), D] features, the windows read from the store one batch at a time: memory
        holds a batch of signals, never a split's."""
        def read(first, stop):  # [stop - first, window, leads]
            return load_task_arrays(data_store, task, records[first:stop]).x
        return batched_apply(features, read, _BATCH, num=len(records))

    val_records, val_y, val_patient = labelled("val")
    z_val = embed(val_records)
    labels = val_y if task.type != "multilabel" else val_y.argmax(axis=1)
    plot = diagnostics.embedding_plot(z_val, labels, output / "embedding.png", method=method,
                                      title=f"{network.method} encoder, validation records, {task.name}")
    result = {"checkpoint": checkpoint, "task": task.name, "method": network.method,
              "embedding_plot": str(plot), "n_val": len(val_records)}
    multi = np.bincount(val_patient)[val_patient] >= 2
    result["patient_identification"] = {
        "accuracy": diagnostics.patient_identification_accuracy(z_val, val_patient),
        "records": int(multi.sum()), "patients": int(len(np.unique(val_patient[multi])))}
    if task.type in ("binary", "multiclass"):
        (train_records, train_y, train_patient), (test_records, test_y, _) = (
            labelled("train", max_records), labelled("test", max_records))
        z_train, z_test = embed(train_records), embed(test_records)
        z_sup = None
        if supervised:
            model = loader.load_trained(supervised, "--supervised", batch_size=_BATCH)
            z_sup = embed(train_records, model.features)
        result["risk_decomposition"] = risk.risk_decomposition(
            z_train, _class_ids(task, train_y), z_test, _class_ids(task, test_y),
            supervised_train_embeddings=z_sup, train_patient_ids=train_patient, seed=seed)
    (output / "diagnostics.json").write_text(json.dumps(result, indent=1))
    logger.info("diagnostics: %s", json.dumps(result))
    return result
