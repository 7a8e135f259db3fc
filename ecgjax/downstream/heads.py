"""What a head predicts and how it learns: kinds, masked losses, scores in target units.

A target value that is missing (NaN, or -1 for a multiclass head) adds nothing to its head's
loss, so one batch can mix rows labelled for different heads.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax

# Kinds of head, and of downstream task (ecgjax.eval.tasks, ecgjax.eval.metrics).
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
_VECTOR_KINDS = ("multiclass", "multilabel")


@dataclasses.dataclass(frozen=True)
class Head:
    """One linear head on the encoder's features.

    name: key of its parameters, targets and loss.
    kind: 'binary' (one logit, sigmoid), 'multilabel' (one sigmoid per class), 'multiclass'
      (softmax over classes) or 'regression' (one value).
    classes: names of the outputs of a multilabel / multiclass head.
    output_key: its predictions go under this one key ([N], or [N, len(classes)]); empty: one
      [N] prediction per output name (the classes, or the head's name).
    scale: (mean, std) of a regression target: the head learns (y - mean) / std.
    huber_delta: regression loss, Huber with this delta on the scaled target; None: squared error.
    class_weights: multiclass loss weight of each class (empty: all 1), e.g. `balanced_weights`
      for imbalanced classes: the loss is the weighted mean over the rows.
    """

    name: str
    kind: str
    classes: tuple[str, ...] = ()
    output_key: str = ""
    scale: tuple[float, float] = (0.0, 1.0)
    huber_delta: float | None = None
    class_weights: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in TASK_TYPES:
            raise ValueError(f"head kind must be one of {TASK_TYPES}, got {self.kind!r}")
        if self.kind in _VECTOR_KINDS and not self.classes:
            raise ValueError(f"{self.kind} head {self.name!r} needs class names")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "class_weights", tuple(float(v) for v in self.class_weights))
        if self.class_weights and (self.kind != "multiclass" or len(self.class_weights) != len(self.classes)):
            raise ValueError(f"head {self.name!r}: class_weights need a multiclass head, one per class")

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of its outputs: the classes of a vector head, else its own name."""
        return self.classes if self.kind in _VECTOR_KINDS else (self.name,)

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    @property
    def prediction_keys(self) -> tuple[str, ...]:
        return (self.output_key,) if self.output_key else self.output_names

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Head":
        return cls(**{**d, "classes": tuple(d.get("classes", ())), "scale": tuple(d.get("scale", (0.0, 1.0))),
                      "class_weights": tuple(d.get("class_weights", ()))})


def head_outputs(heads: Sequence[Head]) -> tuple[tuple[str, int], ...]:
    """(name, number of logits) per head: the layout of models.heads.MultiHead."""
    return tuple((head.name, head.num_outputs) for head in heads)


def _masked_mean(values, known, weights=1.0):
    weights = jnp.where(known, weights, 0.0)
    return jnp.sum(jnp.where(known, values, 0.0) * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def balanced_weights(y: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Multiclass weights n / (K * n_c) (sklearn's 'balanced'; an absent class gets 1), so every class
    weighs the same in the loss however rare it is."""
    counts = np.bincount(np.asarray(y, np.int64)[np.asarray(y) >= 0], minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return tuple(float(w) for w in weights)


def head_loss(head: Head, logits, y):
    """Mean loss over the rows (and labels) with a target.

    logits: [B, k]. y: binary [B] 0/1, multilabel [B, C] 0/1, regression [B] in target units
    (NaN: no target); multiclass [B] int class index (-1: no target).
    """
    if head.kind == "multiclass":
        known, y = y >= 0, jnp.maximum(y, 0)
        weights = jnp.asarray(head.class_weights)[y] if head.class_weights else 1.0
        return _masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), known, weights)
    known = jnp.isfinite(y)
    y = jnp.where(known, y, 0.0)
    if head.kind == "binary":
        return _masked_mean(optax.sigmoid_binary_cross_entropy(logits[:, 0], y), known)
    if head.kind == "multilabel":
        return _masked_mean(optax.sigmoid_binary_cross_entropy(logits, y), known)
    mean, std = head.scale
    target = (y - mean) / std
    if head.huber_delta is None:
        return _masked_mean((logits[:, 0] - target) ** 2, known)
    return _masked_mean(optax.huber_loss(logits[:, 0], target, delta=head.huber_delta), known)


def head_losses(heads: Sequence[Head], logits: dict, targets: dict) -> dict:
    """{head name: loss} of a batch (see head_loss); the training objective is their sum."""
    return {head.name: head_loss(head, logits[head.name], targets[head.name]) for head in heads}


def head_scores(head: Head, logits) -> np.ndarray:
    """Logits [N, k] -> scores in the units of the target: binary [N] probability, multilabel
    [N, C] probabilities, multiclass [N, K] softmax, regression [N] value."""
    logits = np.asarray(logits, np.float64)
    if head.kind == "binary":
        return 1.0 / (1.0 + np.exp(-logits[:, 0]))
    if head.kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-logits))
    if head.kind == "multiclass":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    mean, std = head.scale
    return logits[:, 0] * std + mean


def named_predictions(head: Head, scores: np.ndarray) -> dict[str, np.ndarray]:
    """A head's scores under its prediction keys: {output_key: scores}, or one [N] per output name."""
    if head.output_key:
        return {head.output_key: scores}
    if scores.ndim == 1:
        return {head.output_names[0]: scores}
    return {name: scores[:, k] for k, name in enumerate(head.output_names)}
