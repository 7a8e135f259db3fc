"""Stage 'finetune': all weights trained on random crops of the training records.

AdamW with a linear warm-up and cosine decay over the planned steps, the crops augmented on the
device (protocol.augmentation, less protocol.skip_for_pretrained for a pretrained encoder), ViT
stochastic depth (`drop_path`) and, for a pretrained encoder, layer-wise lr decay (`layer_decay`
for ViTs, `layer_decay_resnet` for ResNets; `layer_decay_new_leads` when the first layer was cut
to other leads). It starts from the weights the stages before it left (a linear-probed head, or
random weights when it comes first: 'supervised') and records them as the state's anchor.
Settings: config.optim.{epochs, lr, weight_decay, warmup_epochs, clip_norm, layer_decay*, drop_path}.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from ecgjax.downstream import network
from ecgjax.downstream.batches import crop_batches
from ecgjax.downstream.fit import fit
from ecgjax.downstream.records import Records
from ecgjax.downstream.step import Optimizer, encoder_layers, is_vit
from ecgjax.eval.recipe.stage import Context, Stage, State

LAYER_DECAYS = ("layer_decay", "layer_decay_resnet", "layer_decay_new_leads")


@dataclasses.dataclass(frozen=True)
class FineTune(Stage):
    name: ClassVar[str] = "finetune"
    trains_encoder: ClassVar[bool] = True

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    clip_norm: float = 0.0
    layer_decay: float = 0.75
    layer_decay_resnet: float = 1.0
    layer_decay_new_leads: float = 1.0
    drop_path: float = 0.1
    label: str = "finetune"    # the history's name of its epochs ('distill' when it trains a student)

    @classmethod
    def from_config(cls, config) -> "FineTune":
        o = config.optim
        return cls(int(o.epochs), float(o.lr), float(o.weight_decay), float(o.warmup_epochs), float(o.clip_norm),
                   *(float(o[key]) for key in LAYER_DECAYS), float(o.drop_path))

    def problems(self) -> list[str]:
        out = [f"--config.optim.epochs={self.epochs}: must be >= 1"] if self.epochs < 1 else []
        return out + [f"--config.optim.{key}={getattr(self, key)}: must be > 0" for key in LAYER_DECAYS
                      if getattr(self, key) <= 0]

    def for_new_leads(self) -> "FineTune":
        """The stage for an encoder whose first layer was cut (or widened) to other leads:
        layer_decay_new_leads for every architecture."""
        return dataclasses.replace(self, layer_decay=self.layer_decay_new_leads,
                                   layer_decay_resnet=self.layer_decay_new_leads)

    def layer_decay_for(self, encoder_config) -> float:
        """The layer-wise lr decay of a pretrained encoder: layer_decay (ViT) or layer_decay_resnet."""
        return self.layer_decay if is_vit(encoder_config) else self.layer_decay_resnet

    def encoder_config(self, config):
        if is_vit(config) and self.drop_path:
            return {**network.config_dict(config), "drop_path": self.drop_path}
        return config

    def run(self, state: State, context: Context, before) -> State:
        return self.train(state.advance(state.model, anchor=jax.device_get(state.model.variables)), context,
                          context.train)

    def train(self, state: State, context: Context, records: Records, to_beat=None) -> State:
        """This stage's epochs on `records` from the state's model; `to_beat`: (score, variables) that
        stay unless an epoch scores better."""
        ctx, model = context, state.model
        crops = ctx.windowing.crops_per_record
        steps = max((len(records) * crops) // ctx.batch_size, ctx.fit.min_steps_per_epoch, 1)
        total = steps * self.epochs
        optimizer = Optimizer(self.lr, self.weight_decay, warmup_steps=min(int(self.warmup_epochs * steps), total - 1),
                              decay_steps=total, clip_norm=self.clip_norm,
                              layer_decay=self.layer_decay_for(model.encoder_config) if ctx.pretrained else 1.0,
                              num_layers=encoder_layers(model.encoder_config))

        def batches(epoch):
            del epoch
            return crop_batches(records, ctx.window, ctx.batch_size, steps, state.rng, crops)

        model, rows = fit(model, self.label, self.epochs, optimizer, batches, ctx.scorer(model),
                          patience=ctx.fit.patience, seed=ctx.seed,
                          augmentation=ctx.windowing.augmentation_for(ctx.pretrained), to_beat=to_beat)
        return state.advance(model, rows)
