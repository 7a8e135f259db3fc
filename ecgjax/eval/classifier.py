"""A task's downstream model: its head, an untrained model, and the validation score that picks
epochs and models. The recipe that trains it is ecgjax.eval.recipe:

    recipe = Recipe((LinearHead(), FineTune()))            # or Recipe.from_config(probe config)
    model, history = recipe.train(encoder_config, encoder_vars, train, val, task, seed, fs=250.0)
    model.save("models/af")                 # the one save format: downstream.model.load_model
    scores = model.record_scores(x, lengths)[task.name]   # whole records, windows aggregated
"""
from __future__ import annotations

import warnings

from ecgjax.downstream.heads import Head
from ecgjax.downstream.model import TrainedModel, new_model
from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval.tasks import Task


def task_head(task: Task, scale: tuple[float, float] = (0.0, 1.0), class_weights=()) -> Head:
    """The head of a task: its type, its outputs (labels or classes), its target scale."""
    classes = task.output_names if task.type in ("multilabel", "multiclass") else ()
    return Head(task.name, task.type, classes, scale=scale, class_weights=tuple(class_weights))


def task_model(encoder_config, task: Task, fs: float, *, window_s: float | None = None,
               scale: tuple[float, float] = (0.0, 1.0), encoder_variables: dict | None = None, seed: int = 0,
               class_weights=(), **fields) -> TrainedModel:
    """An untrained model for `task` (windows of `window_s`, default task.window_s): the encoder
    (random unless given) and a new head; `fields`: other TrainedModel fields."""
    return new_model(encoder_config, (task_head(task, scale, class_weights),), fs=fs, leads=task.leads,
                     window_s=window_s or task.window_s, encoder_variables=encoder_variables, seed=seed, **fields)


def selection_score(task: Task, y_true, scores) -> float:
    """The validation score that picks the best epoch (higher is better; NaN if undefined):
    AUROC / macro AUROC / macro F1 / -MAE by task type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics_lib.DegenerateMetricWarning)
        if task.type == "binary":
            return metrics_lib.auroc(y_true, scores)
        if task.type == "multilabel":
            return metrics_lib.macro_auroc(y_true, scores)
        if task.type == "multiclass":
            return metrics_lib.macro_f1(y_true, scores, labels=list(range(task.num_outputs)))
        return -metrics_lib.mae(y_true, scores)
