"""Stage 'distill': self-distillation on unlabelled records (SimCLRv2's third step, Chen et al.
2020; each further round Noisy Student's, Xie et al. 2020).

The model so far (the teacher) labels the pool of unlabelled records (the training records the
labelled subset left out, and those of `pool.store`); a student, started from the anchor (the
weights fine-tuning started from), is trained by the stages before this one from the fine-tune
stage on (fine-tune, then WiSE-FT if listed) on labelled + teacher-labelled records, for `epochs`
epochs a round; it replaces the teacher only if its validation score is better, and the kept model
teaches the next round. In the first round the teacher can be an ensemble: the mean scores of the
model and `teachers.size - 1` more, each trained by the stages before this one from another seed
(seed + 1000 k) and started from `teachers.checkpoints` in turn (other pretraining runs, whose
fine-tunes disagree more than seeds of one). Without unlabelled records (all labels used) it does
nothing. Settings: config.distill.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import ml_collections
import numpy as np

from ecgjax.eval.classifier import selection_score
from ecgjax.eval.recipe.stage import Context, Stage, State
from ecgjax.eval.tasks import Task

logger = logging.getLogger("ecgjax")


def _names(text) -> tuple[str, ...]:
    return tuple(name for name in (part.strip() for part in str(text).split(",")) if name)


@dataclasses.dataclass(frozen=True)
class Teachers:
    """The first round's teacher: the model and size - 1 more; `checkpoints`: where the others
    start in turn (pretraining runs or released encoders; () = the model's own start)."""

    size: int = 1
    checkpoints: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        if self.size < 1:
            return [f"--config.distill.teachers.size={self.size}: must be >= 1 (1 = the model alone)"]
        if self.checkpoints and self.size < 2:
            return [f"--config.distill.teachers.checkpoints={','.join(self.checkpoints)}: start the other members "
                    f"of an ensemble teacher, so they need --config.distill.teachers.size>=2"]
        return []


@dataclasses.dataclass(frozen=True)
class Pool:
    """Unlabelled records beyond the training records the labelled subset left out: those of
    `store` (another corpus at the task store's rate; labels never read), at most `records` of them
    (a fixed random sample; 0 = all), each cut to the task's longest record and held in memory."""

    store: str = ""
    records: int = 0

    def problems(self) -> list[str]:
        if self.records < 0:
            return [f"--config.distill.pool.records={self.records}: must be >= 0 (0 = all)"]
        return []


def teacher_targets(task: Task, scores: np.ndarray) -> np.ndarray:
    """What a student learns from its teacher's record scores: the probabilities themselves
    (binary [N], multilabel [N, C]: sigmoid cross-entropy takes soft targets), the most probable
    class (multiclass [N]) or the predicted value (regression [N])."""
    if task.type == "multiclass":
        return np.argmax(scores, axis=-1).astype(np.int32)
    return np.asarray(scores, np.float32)


@dataclasses.dataclass(frozen=True)
class SelfDistill(Stage):
    name: ClassVar[str] = "distill"

    epochs: int = 10
    rounds: int = 1
    teachers: Teachers = Teachers()
    pool: Pool = Pool()

    @staticmethod
    def defaults() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            epochs=10,    # a round's epochs; an epoch is one pass over labelled + unlabelled records
            rounds=1,     # each further round the kept model teaches again
            teachers=dict(size=1, checkpoints=""),   # checkpoints: comma-separated
            pool=dict(store="", records=0)))

    @classmethod
    def from_config(cls, config) -> "SelfDistill":
        d = config.distill
        return cls(int(d.epochs), int(d.rounds), Teachers(int(d.teachers.size), _names(d.teachers.checkpoints)),
                   Pool(str(d.pool.store), int(d.pool.records)))

    def problems(self) -> list[str]:
        out = [f"--config.distill.{key}={getattr(self, key)}: must be >= 1" for key in ("epochs", "rounds")
               if getattr(self, key) < 1]
        return out + self.teachers.problems() + self.pool.problems()

    def place_problems(self, before, init: str) -> list[str]:
        out = []
        if not any(stage.trains_encoder for stage in before):
            out.append("--config.recipe: distill trains its student as the fine-tune stage trained the model, so it "
                       "needs finetune before it")
        if self.teachers.checkpoints and init != "pretrained":
            out.append(f"--config.distill.teachers.checkpoints={','.join(self.teachers.checkpoints)}: are pretrained "
                       f"encoders, so they need --config.init=pretrained (init is {init})")
        return out

    def run(self, state: State, context: Context, before) -> State:
        ctx = context
        if ctx.pool is None or not len(ctx.pool):
            logger.info("self-distillation: no unlabelled record, nothing to distil")
            return state
        # The student is trained by the stages before this one from the (last) fine-tune stage on.
        first = max(i for i, stage in enumerate(before.stages) if stage.trains_encoder)
        student = dataclasses.replace(before.stages[first], epochs=self.epochs, label=self.name)
        joined = ctx.train.plus(ctx.pool)   # labelled rows first, then the pool's, whose targets each round writes
        starts = list(ctx.teacher_starts) or [ctx.start]
        for round_ in range(self.rounds):
            teachers = [state.model]
            if round_ == 0:   # the other members of an ensemble teacher
                teachers += [before.train(*starts[(k - 1) % len(starts)], ctx.train, ctx.val, ctx.task,
                                          ctx.seed + 1000 * k, fs=ctx.fs)[0] for k in range(1, self.teachers.size)]
            scores, val_scores = ([ctx.record_scores(t, records) for t in teachers] for records in (ctx.pool, ctx.val))
            teacher = (selection_score(ctx.task, ctx.val.y, val_scores[0]), state.model.variables)   # the kept model
            targets = teacher_targets(ctx.task, np.mean(scores, axis=0)).astype(ctx.train.y.dtype)
            students = joined.with_targets(np.concatenate([ctx.train.y, targets]))
            logger.info("self-distillation round %d: %d labelled + %d teacher-labelled records (teacher of %d "
                        "model(s), validation %.4f; the kept model %.4f)", round_ + 1, len(ctx.train), len(ctx.pool),
                        len(teachers), selection_score(ctx.task, ctx.val.y, np.mean(val_scores, axis=0)), teacher[0])
            at_anchor = state.advance(dataclasses.replace(state.model, variables=state.anchor))
            state = student.train(at_anchor, ctx, students, to_beat=teacher)
            for index in range(first + 1, len(before.stages)):   # e.g. WiSE-FT
                state = before.stages[index].run(state, ctx, before.prefix(index))
        return state
