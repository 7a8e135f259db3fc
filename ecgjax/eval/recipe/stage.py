"""What a stage of a downstream recipe is, and what it is handed: the run's Context (read only)
and the State the stage before it left.

A stage is a frozen dataclass of its settings with
  from_config(config)        its settings out of configs/probe.py's config
  problems()                 its own mistakes, one '--config.x=v: ...' string each
  place_problems(before, init)   what it needs from the stages before it (and the encoder's init)
  encoder_config(config)     the encoder config it wants the model built with (default: as is)
  run(state, context, before)    -> the next State; `before` is the recipe of the stages before it
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np

from ecgjax.downstream.model import TrainedModel
from ecgjax.downstream.records import Records
from ecgjax.eval.classifier import selection_score
from ecgjax.eval.recipe.settings import FitSettings, Windowing
from ecgjax.eval.tasks import Task


@dataclasses.dataclass(frozen=True)
class Context:
    """One training run's facts, the same for every stage: the task, its records, the windows
    (window and stride in samples at fs), the shared settings, whether the encoder is pretrained,
    where it started (encoder_config, encoder_variables), and self-distillation's inputs: the pool of
    unlabelled records and the starts of an ensemble teacher's other members."""

    task: Task
    train: Records
    val: Records
    fs: float
    window: int
    stride: int
    batch_size: int              # of training batches: fit.batch_size, at most len(train)
    fit: FitSettings
    windowing: Windowing
    seed: int
    start: tuple[dict, Any]      # (encoder_config, encoder_variables or None)
    pool: Records | None = None
    teacher_starts: tuple = ()

    @property
    def pretrained(self) -> bool:
        return self.start[1] is not None

    def record_scores(self, model: TrainedModel, records: Records) -> np.ndarray:
        """The model's scores of whole records: its sliding windows' scores, aggregated."""
        return model.record_scores(records.x, records.lengths, stride_s=self.stride / self.fs,
                                   aggregation=self.windowing.aggregation)[self.task.name]

    def score(self, model: TrainedModel) -> float:
        """The validation score that picks epochs and models (classifier.selection_score)."""
        return selection_score(self.task, self.val.y, self.record_scores(model, self.val))

    def scorer(self, model: TrainedModel):
        """variables -> the validation score of the model with those weights (for downstream.fit)."""
        return lambda variables: self.score(dataclasses.replace(model, variables=variables))


@dataclasses.dataclass(frozen=True)
class State:
    """What a stage hands the next: the model so far, the weights all-weights training started
    from (`anchor`: WiSE-FT's other end, a distilled student's start; None before fine-tuning), the
    history rows so far, and the recipe's one data-order stream (a numpy Generator drawn by the
    stages in turn, so a run's batches are a function of its seed)."""

    model: TrainedModel
    rng: np.random.Generator
    anchor: Any = None
    history: tuple = ()

    def advance(self, model: TrainedModel, rows: Sequence[dict] = (), **changes) -> "State":
        return dataclasses.replace(self, model=model, history=self.history + tuple(rows), **changes)


class Stage:
    """Base of the recipe's stages (see the module docstring)."""

    name: ClassVar[str]
    trains_encoder: ClassVar[bool] = False   # does it train the encoder's weights (the report's arm)

    @classmethod
    def from_config(cls, config) -> "Stage":
        raise NotImplementedError

    def problems(self) -> list[str]:
        return []

    def place_problems(self, before: Sequence["Stage"], init: str) -> list[str]:
        return []

    def encoder_config(self, config):
        return config

    def run(self, state: State, context: Context, before) -> State:
        raise NotImplementedError
