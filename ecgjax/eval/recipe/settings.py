"""What every stage of a downstream recipe shares: the windowed protocol and the fit loop's
batching, early stopping and loss weighting (configs/probe.py's `protocol` and `optim`).

Each is an object built from its config section that names its own mistakes (`problems`: one
'--config.x=v: ...' string each), so the probe refuses them all in one line before any work.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from ecgjax.data.augment import DEFAULT_AUGMENTATION
from ecgjax.downstream.windows import AGGREGATIONS

# Fine-tuning augmentation: the pretraining chain without the transforms that need all 12 leads
# in canonical order (VCG rotation), that hide what a label may hinge on (lead drop, time mask) or
# that alias at 100 Hz (50/60 Hz powerline).
FINETUNE_AUGMENTATION = {name: dict(params) for name, params in DEFAULT_AUGMENTATION.items()
                         if name in ("amplitude_scale", "baseline_wander", "gaussian_noise")}
CLASS_WEIGHTINGS = ("none", "balanced")


def default_optim() -> ml_collections.ConfigDict:
    """The fit loop's settings and the two training stages' (README "Evaluation"; configs/probe.py
    uses it as is). `linear_*`: the linear head stage; `epochs` ... `drop_path`: the fine-tune stage."""
    return ml_collections.ConfigDict(dict(
        batch_size=64, eval_batch_size=256,
        # Linear head stage. A convex problem on fixed features: train it to convergence and let
        # early stopping end it (at 30 epochs PTB-XL's validation AUROC was still rising).
        linear_epochs=100, linear_lr=1e-3, linear_weight_decay=0.0,
        epochs=30, lr=1e-3, weight_decay=1e-4,                        # fine-tune stage: all weights
        warmup_epochs=1.0,        # linear warm-up, then cosine decay to 0 over `epochs`
        min_steps_per_epoch=20,   # an epoch repeats the records until it has this many batches
        patience=8,               # early stopping: epochs without a better validation score (0 = off)
        clip_norm=0.0,            # global gradient-norm clip (0 = off)
        layer_decay=0.75,         # layer-wise lr decay of a pretrained ViT's blocks
        # ... of a pretrained ResNet's stages: 1.0 = none. On PTB-XL the CL ResNet18's validation
        # macro AUROC was 0.941 without and 0.935 with 0.75 at 100% labels (0.810 / 0.809 at 1%).
        layer_decay_resnet=1.0,
        # ... used instead when the task's leads differ from the checkpoint's: the first layer lost
        # (or gained) input channels and must move as fast as the head (PTB-XL lead-I AF, validation
        # AUROC 0.970 with 0.75, 0.980 with 1.0; benchmarks/ptbxl.md).
        layer_decay_new_leads=1.0,
        drop_path=0.1,            # ViT stochastic depth while training all weights
        class_weighting="balanced",  # multiclass loss: none | balanced
    ))


def default_protocol() -> ml_collections.ConfigDict:
    """The windowed protocol (configs/probe.py uses it as is)."""
    return ml_collections.ConfigDict(dict(
        # crop / scoring window, s (0 = the encoder's input, num_samples / fs). 2.5 s crops of 10 s
        # PTB-XL records beat whole 10 s windows for the supervised ResNet (benchmarks/ptbxl.md).
        window_s=2.5,
        stride_s=0.0,          # scoring stride, s; 0 = half a window
        aggregation="mean",    # mean | max (of window scores per record)
        record_s=0.0,          # 0 = whole records; > 0 = pad / crop every record to this length (001: 60)
        crops_per_record=1,    # random crops of each training record per epoch
        augment=True,          # on-device augmentation of the crops (all-weights training)
        augmentation=ml_collections.ConfigDict(FINETUNE_AUGMENTATION),
        # ... less these (comma-separated) when a pretrained encoder's weights train: its pretraining
        # taught it amplitude invariance already, and voltage is what the hypertrophy criteria
        # measure. Without the scaling the CL ResNet18 scored higher on PTB-XL validation in 5 seeds
        # of 5 at 1% (+0.004), level at 10%, +0.002 at 100%; the CNN from scratch needs it (-0.005
        # at 1% without; benchmarks/ptbxl.md). '' = the same augmentation for every arm.
        skip_for_pretrained="amplitude_scale",
    ))


def _names(text) -> list[str]:
    return [name for name in (part.strip() for part in str(text).split(",")) if name]


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Batching, early stopping and loss weighting of every stage's fit loop (config.optim)."""

    batch_size: int = 64
    eval_batch_size: int = 256
    min_steps_per_epoch: int = 20
    patience: int = 8
    class_weighting: str = "balanced"

    @classmethod
    def from_config(cls, optim) -> "FitSettings":
        return cls(int(optim.batch_size), int(optim.eval_batch_size), int(optim.min_steps_per_epoch),
                   int(optim.patience), str(optim.class_weighting))

    def problems(self) -> list[str]:
        out = [f"--config.optim.{key}={getattr(self, key)}: must be >= 1" for key in ("batch_size", "eval_batch_size")
               if getattr(self, key) < 1]
        if self.patience < 0:
            out.append(f"--config.optim.patience={self.patience}: must be >= 0 (0 = no early stopping)")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            out.append(f"--config.optim.class_weighting={self.class_weighting}: must be 'none' or 'balanced'")
        return out


@dataclasses.dataclass(frozen=True)
class Windowing:
    """The windowed protocol (config.protocol): training crops of window_s, records scored by the
    `aggregation` of sliding windows stride_s apart, the crops' augmentation."""

    window_s: float = 2.5
    stride_s: float = 0.0
    aggregation: str = "mean"
    record_s: float = 0.0
    crops_per_record: int = 1
    augment: bool = True
    augmentation: dict = dataclasses.field(default_factory=lambda: dict(FINETUNE_AUGMENTATION))
    skip_for_pretrained: tuple[str, ...] = ("amplitude_scale",)

    @classmethod
    def from_config(cls, protocol) -> "Windowing":
        augmentation = protocol.augmentation
        return cls(float(protocol.window_s), float(protocol.stride_s), str(protocol.aggregation),
                   float(protocol.record_s), int(protocol.crops_per_record), bool(protocol.augment),
                   augmentation.to_dict() if hasattr(augmentation, "to_dict") else dict(augmentation),
                   tuple(_names(protocol.skip_for_pretrained)))

    def problems(self) -> list[str]:
        out = [f"--config.protocol.{key}={getattr(self, key)}: must be >= 0"
               for key in ("window_s", "stride_s", "record_s") if getattr(self, key) < 0]
        if self.crops_per_record < 1:
            out.append(f"--config.protocol.crops_per_record={self.crops_per_record}: must be >= 1")
        unknown = [name for name in self.skip_for_pretrained if name not in self.augmentation]
        if unknown:
            out.append(f"--config.protocol.skip_for_pretrained={','.join(self.skip_for_pretrained)}: "
                       f"{', '.join(unknown)} is not one of protocol.augmentation ({', '.join(self.augmentation)})")
        if self.aggregation not in AGGREGATIONS:
            out.append(f"--config.protocol.aggregation={self.aggregation}: must be one of {list(AGGREGATIONS)}")
        return out

    def augmentation_for(self, pretrained: bool) -> dict | None:
        """The crops' augmentation when all weights train (None: none); a pretrained encoder's
        leaves out skip_for_pretrained."""
        if not self.augment:
            return None
        return {name: params for name, params in self.augmentation.items()
                if not (pretrained and name in self.skip_for_pretrained)} or None
