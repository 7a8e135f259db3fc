"""Stage 'linear': a new linear head on the frozen encoder's features (000 §4.2, 003 §4.2).

The features of every sliding window of the training and validation records are computed once;
each training window is labelled with its record's target, and a record's validation score
aggregates its windows' scores. Settings: config.optim.linear_{epochs, lr, weight_decay}.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from ecgjax.downstream import network, windows as windows_lib
from ecgjax.downstream.batches import epoch_batches
from ecgjax.downstream.fit import fit
from ecgjax.downstream.heads import head_outputs, head_scores
from ecgjax.downstream.step import Optimizer
from ecgjax.eval.classifier import selection_score
from ecgjax.eval.recipe.stage import Context, Stage, State


@dataclasses.dataclass(frozen=True)
class LinearHead(Stage):
    name: ClassVar[str] = "linear"

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0

    @classmethod
    def from_config(cls, config) -> "LinearHead":
        o = config.optim
        return cls(int(o.linear_epochs), float(o.linear_lr), float(o.linear_weight_decay))

    def problems(self) -> list[str]:
        return [f"--config.optim.linear_epochs={self.epochs}: must be >= 1"] if self.epochs < 1 else []

    def run(self, state: State, context: Context, before) -> State:
        model, ctx = state.model, context
        encode = network.compiled_encoder(model.encoder_config)
        encoder = network.encoder_part(model.variables)
        features = {split: windows_lib.apply_sliding(lambda chunk: encode(encoder, chunk), records.x, records.lengths,
                                                     ctx.window, ctx.stride, ctx.fit.eval_batch_size)
                    for split, records in (("train", ctx.train), ("val", ctx.val))}
        (f_train, train_owner), (f_val, val_owner) = features["train"], features["val"]
        y_windows = ctx.train.y[train_owner]
        (head,) = model.heads
        heads_logits = network.compiled_heads(head_outputs(model.heads))

        def batches(epoch):
            del epoch
            return ((f_train[idx], y_windows[idx])
                    for idx in epoch_batches(len(f_train), ctx.batch_size, state.rng, ctx.fit.min_steps_per_epoch))

        def score(variables):   # the head on the fixed validation window features
            window_scores = head_scores(head, heads_logits(variables["params"]["heads"], f_val)[head.name])
            records = windows_lib.aggregate(window_scores, val_owner, len(ctx.val), ctx.windowing.aggregation)
            return selection_score(ctx.task, ctx.val.y, records)

        model, rows = fit(model, self.name, self.epochs, Optimizer(self.lr, self.weight_decay), batches, score,
                          patience=ctx.fit.patience, seed=ctx.seed, frozen_encoder=True)
        return state.advance(model, rows)
