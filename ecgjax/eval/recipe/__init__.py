"""The downstream recipe: a list of stages that train one task's model in turn.

    recipe = Recipe.from_config(config)      # configs/probe.py: --config.recipe=linear,finetune,wise_ft,distill
    model, history = recipe.train(encoder_config, encoder_variables, train, val, task, seed, fs=250.0)

Stages (one module each; a stage checks its own settings and what it needs before it):
  linear    linear_head.LinearHead   a new linear head on the frozen encoder's window features
  finetune  finetune.FineTune        all weights on random crops (from the linear head, or from scratch)
  wise_ft   wise_ft.WiSEFT           the best mixture of the fine-tuned and the linear-probed weights
  distill   distill.SelfDistill      a student trained on teacher-labelled unlabelled records

Below them: stage (Context, State, the Stage protocol), settings (the windowed protocol, the
fit loop's settings), and in ecgjax.downstream the fit loop (fit), batching (batches) and records.
"""
from ecgjax.eval.recipe.distill import Pool, SelfDistill, Teachers, teacher_targets
from ecgjax.eval.recipe.finetune import FineTune
from ecgjax.eval.recipe.linear_head import LinearHead
from ecgjax.eval.recipe.recipe import STAGES, Recipe, mode_stages
from ecgjax.eval.recipe.settings import FitSettings, Windowing, default_optim, default_protocol
from ecgjax.eval.recipe.wise_ft import WiSEFT

__all__ = ("STAGES", "FineTune", "FitSettings", "LinearHead", "Pool", "Recipe", "SelfDistill", "Teachers", "WiSEFT",
           "Windowing", "default_optim", "default_protocol", "mode_stages", "teacher_targets")
