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
from ecgjax.data import resolve
from ecgjax.downstream.network import adapt_encoder, encoder_features
from ecgjax.errors import UserError
from ecgjax.eval import diagnostics, folds as folds_lib, risk, tasks
from ecgjax.eval.task_data import TaskArrays, load_task_arrays

logger = logging.getLogger("ecgjax")


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
    data_store = resolve.open_store(network.config.data, store=store)
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
    data = {split: load_task_arrays(data_store, task, records) for split, records in splits.items()}
    output = pathlib.Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def sample(arrays: TaskArrays) -> TaskArrays:  # bounds CPU time on big stores
        if len(arrays) <= max_records:
            return arrays
        keep = np.zeros(len(arrays), bool)
        keep[rng.choice(len(arrays), max_records, replace=False)] = True
        return arrays.subset(keep)

    train, val, test = sample(data["train"]), data["val"], sample(data["test"])
    z_val = encoder_features(encoder_config, encoder_vars, val.x)
    labels = val.y if task.type != "multilabel" else val.y.argmax(axis=1)
    plot = diagnostics.embedding_plot(z_val, labels, output / "embedding.png", method=method,
                                      title=f"{network.method} encoder, validation records, {task.name}")
    result = {"checkpoint": checkpoint, "task": task.name, "method": network.method,
              "embedding_plot": str(plot), "n_val": len(val)}
    multi = np.bincount(val.patient)[val.patient] >= 2
    result["patient_identification"] = {
        "accuracy": diagnostics.patient_identification_accuracy(z_val, val.patient),
        "records": int(multi.sum()), "patients": int(len(np.unique(val.patient[multi])))}
    if task.type in ("binary", "multiclass"):
        z_train = encoder_features(encoder_config, encoder_vars, train.x)
        z_test = encoder_features(encoder_config, encoder_vars, test.x)
        z_sup = None
        if supervised:
            z_sup = loader.load_trained(supervised, "--supervised", batch_size=256).features(train.x)
        result["risk_decomposition"] = risk.risk_decomposition(
            z_train, _class_ids(task, train.y), z_test, _class_ids(task, test.y),
            supervised_train_embeddings=z_sup, train_patient_ids=train.patient, seed=seed)
    (output / "diagnostics.json").write_text(json.dumps(result, indent=1))
    logger.info("diagnostics: %s", json.dumps(result))
    return result
