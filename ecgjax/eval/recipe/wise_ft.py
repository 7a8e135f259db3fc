"""Stage 'wise_ft': weight-space ensembling of a fine-tuned pretrained model (WiSE-FT, Wortsman
et al. 2022).

The interpolations (1 - a) * anchor + a * kept weights for a = 1/n ... (n-1)/n (the anchor: the
linear-probed weights fine-tuning started from) are scored on validation, and the best of them and
the fine-tuned model is kept. Each interpolation mixes towards the best model so far, so once a
mixture beats the fine-tuned weights the later ones mix towards it (as the recipe of
benchmarks/ptbxl_log.md, stop 20, ran). Settings: config.wise_ft.points (n).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import jax
import ml_collections

from ecgjax.downstream.fit import better
from ecgjax.eval.recipe.stage import Context, Stage, State

logger = logging.getLogger("ecgjax")


@dataclasses.dataclass(frozen=True)
class WiSEFT(Stage):
    name: ClassVar[str] = "wise_ft"

    points: int = 4

    @staticmethod
    def defaults() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(points=4))   # n: mixtures at 1/n ... (n-1)/n

    @classmethod
    def from_config(cls, config) -> "WiSEFT":
        return cls(int(config.wise_ft.points))

    def problems(self) -> list[str]:
        return [f"--config.wise_ft.points={self.points}: must be >= 2 (mixtures at 1/n ... (n-1)/n)"
                ] if self.points < 2 else []

    def place_problems(self, before, init: str) -> list[str]:
        if not any(stage.trains_encoder for stage in before) or init != "pretrained":
            return [f"--config.recipe: wise_ft mixes fine-tuned weights with the linear-probed pretrained ones, so "
                    f"it needs finetune before it and --config.init=pretrained (init is {init})"]
        return []

    def run(self, state: State, context: Context, before) -> State:
        model = state.model
        kept = (context.score(model), model.variables)
        rows = []
        for k in range(1, self.points):
            alpha = k / self.points
            mixed = jax.tree_util.tree_map(lambda a, b: (1 - alpha) * a + alpha * b, state.anchor, kept[1])
            score = context.score(dataclasses.replace(model, variables=mixed))
            rows.append({"stage": self.name, "epoch": k, "train_loss": float("nan"), "val_score": score})
            logger.info("WiSE-FT: %.2f x linear-probed + %.2f x fine-tuned weights, validation %.4f (kept so far %.4f)",
                        1 - alpha, alpha, score, kept[0])
            if better(score, kept[0]):
                kept = (score, mixed)
        return state.advance(dataclasses.replace(model, variables=kept[1]), rows)
