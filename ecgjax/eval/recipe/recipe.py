"""A downstream recipe: its stages in order, the shared settings, and the one call that trains.

    recipe = Recipe.from_config(config)       # configs/probe.py; every mistake in one UserError
    model, history = recipe.train(encoder_config, encoder_variables, train, val, task, seed, fs=250.0)

train builds the task's model (the encoder, random unless weights are given, and a new head),
hands it to each stage in turn (linear head, fine-tune, WiSE-FT, self-distillation) and returns
the last stage's model with the history of every epoch.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ecgjax.cli import closest
from ecgjax.downstream.heads import balanced_weights
from ecgjax.downstream.records import Records
from ecgjax.downstream.step import is_vit
from ecgjax.errors import UserError
from ecgjax.eval.classifier import task_model
from ecgjax.eval.recipe.distill import SelfDistill
from ecgjax.eval.recipe.finetune import FineTune
from ecgjax.eval.recipe.linear_head import LinearHead
from ecgjax.eval.recipe.settings import FitSettings, Windowing
from ecgjax.eval.recipe.stage import Context, Stage, State
from ecgjax.eval.recipe.wise_ft import WiSEFT
from ecgjax.eval.tasks import Task

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (LinearHead, FineTune, WiSEFT, SelfDistill)}
INITS = ("pretrained", "random", "supervised")
MODES = ("linear", "finetune")


def mode_stages(init: str, mode: str) -> tuple[str, ...]:
    """The recipe a mode stands for: 'linear' a linear head on frozen features; 'finetune' all
    weights after a linear head, or from the start when there is no pretrained encoder to probe."""
    if mode == "linear" and init != "supervised":
        return ("linear",)
    return ("linear", "finetune") if init == "pretrained" else ("finetune",)


def _stage_names(text) -> tuple[str, ...]:
    return tuple(name for name in (part.strip() for part in str(text).split(",")) if name)


@dataclasses.dataclass(frozen=True)
class Recipe:
    stages: tuple[Stage, ...]
    fit: FitSettings = FitSettings()
    windowing: Windowing = Windowing()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def trains_encoder(self) -> bool:
        return any(stage.trains_encoder for stage in self.stages)

    def stage(self, name: str) -> Stage | None:
        """The (first) stage of that name, or None."""
        return next((stage for stage in self.stages if stage.name == name), None)

    def prefix(self, count: int) -> "Recipe":
        """The recipe of the first `count` stages."""
        return dataclasses.replace(self, stages=self.stages[:count])

    def for_new_leads(self) -> "Recipe":
        """The recipe for an encoder whose first layer was cut to other leads (FineTune.for_new_leads)."""
        return dataclasses.replace(self, stages=tuple(stage.for_new_leads() if isinstance(stage, FineTune) else stage
                                                      for stage in self.stages))

    @classmethod
    def from_config(cls, config) -> "Recipe":
        """config.recipe's stages (or config.mode's), each from its own settings, with config.optim's
        fit settings and config.protocol's windows; a UserError naming every flag that is wrong."""
        init, mode = str(config.init), str(config.mode)
        problems = [] if init in INITS else [f"--config.init={init}: must be one of {', '.join(INITS)}"]
        problems += [] if mode in MODES else [f"--config.mode={mode}: must be 'linear' or 'finetune'"]
        names = _stage_names(config.recipe) or mode_stages(init, mode)
        given = f"--config.recipe={config.recipe}"
        problems += [f"{given}: {name!r} is not a stage{closest(name, STAGES)} (stages: {', '.join(STAGES)})"
                     for name in names if name not in STAGES]
        stages = tuple(STAGES[name].from_config(config) for name in names if name in STAGES)
        fit, windowing = FitSettings.from_config(config.optim), Windowing.from_config(config.protocol)
        problems += fit.problems() + windowing.problems()
        for index, stage in enumerate(stages):
            problems += stage.problems() + stage.place_problems(stages[:index], init)
        trains = any(stage.trains_encoder for stage in stages)
        if config.recipe and mode in MODES and trains != (mode == "finetune"):
            problems.append(f"{given}: {'trains' if trains else 'does not train'} the encoder's weights, but "
                            f"--config.mode={mode} (the report's arm) says otherwise: pass "
                            f"--config.mode={'finetune' if trains else 'linear'}")
        if init == "supervised" and stages and not trains:
            problems.append(f"--config.init=supervised trains all weights from scratch: "
                            f"--config.recipe={config.recipe} needs finetune")
        for name, stage_type in STAGES.items():   # settings of a stage the recipe leaves out would do nothing
            defaults = getattr(stage_type, "defaults", None)
            if name not in names and defaults is not None and config[name].to_dict() != defaults().to_dict():
                problems.append(f"--config.{name}.*: set, but {name} is not in the recipe; add it: "
                                f"--config.recipe={','.join(names + (name,))}")
        if problems:
            raise UserError("; ".join(problems))
        return cls(stages, fit, windowing)

    def train(self, encoder_config, encoder_variables: dict | None, train, val, task: Task, seed: int = 0, *,
              fs: float = 250.0, pool=None, teacher_starts: Sequence[tuple[dict, dict]] = ()):
        """Trains a new head (and, by the stages, the encoder) on one task.

        Args:
          encoder_config: registry.build_encoder config; its leads must match task.leads (see
            downstream.network.adapt_encoder for lead surgery).
          encoder_variables: {'params', ['batch_stats']} of the encoder alone (pretrained), or None
            (random init).
          train, val: TaskArrays (records x [N, T, len(task.leads)] f32 mV with lengths [N]) or (x, y)
            pairs of whole rows (y as in Task.targets: binary [N] 0/1, multilabel [N, C], multiclass [N]
            int, regression [N]).
          pool: records whose labels are withheld (TaskArrays or (x, y); y never read), for 'distill'.
          teacher_starts: (encoder_config, encoder_variables) where the other members of an ensemble
            teacher start in turn; () = this encoder.
        Returns:
          (TrainedModel of windows of protocol.window_s (0: the encoder's input length; capped at
          the longest record and a ViT's input length) with the weights the last stage kept, history: per-epoch
          dicts {stage, epoch, train_loss, val_score}, also the model's history).
        Regression targets are standardised with the training mean and std for the loss (the
        head's scale); predictions are in the original units.
        """
        train, val = Records.of(train), Records.of(val)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"task {task.name!r}: empty training ({len(train)}) or validation ({len(val)}) set")
        # The window: as configured (0: the encoder's input length), but never past the longest record,
        # nor past a ViT's input length (its position embeddings are that long); a ResNet's global
        # pool takes windows of any length (CinC 2017's 30-60 s rhythms on a 10 s-pretrained one).
        longest = int(max(train.lengths.max(), val.lengths.max()))
        encoder_input = int(dict(encoder_config).get("num_samples") or longest)
        cap = encoder_input if is_vit(encoder_config) else longest
        window = min(int(round(self.windowing.window_s * fs)) or encoder_input, cap, longest)
        stride = max(int(round((self.windowing.stride_s or window / fs / 2) * fs)), 1)
        scale = (0.0, 1.0)
        if task.type == "regression":
            scale = (float(np.mean(train.y)), float(np.std(train.y)) or 1.0)
        class_weights = ()
        if task.type == "multiclass" and self.fit.class_weighting == "balanced":
            class_weights = balanced_weights(train.y, task.num_outputs)
        model_config = encoder_config
        for stage in self.stages:
            model_config = stage.encoder_config(model_config)
        model = task_model(model_config, task, fs, window_s=window / fs, scale=scale, class_weights=class_weights,
                           encoder_variables=encoder_variables, seed=seed, batch_size=self.fit.eval_batch_size)
        context = Context(task, train, val, fs, window, stride, min(self.fit.batch_size, len(train)), self.fit,
                          self.windowing, seed, (encoder_config, encoder_variables),
                          None if pool is None else Records.of(pool), tuple(teacher_starts))
        state = State(model, np.random.default_rng(seed))
        for index, stage in enumerate(self.stages):
            state = stage.run(state, context, self.prefix(index))
        history = list(state.history)
        return dataclasses.replace(state.model, history=history), history
