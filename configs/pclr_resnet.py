"""PCLR (000): patient-contrastive MoCo on the 1D ResNet family with the hyperparameters of
000 Table 2 (queue 38912, tau 0.1, momentum 0.999, batch 256, lr 6.25e-4 with linear warmup from
lr/10 then cosine to 1e-6, weight decay 1e-4, Adam)."""
from ecgjax import config as common


def get_config(arg=None):
    c = common.base_config(arg, method="cl", encoder="resnet18")
    c.model.encoder.chan_start = 16  # ResNet18 of 000 Table 1
    c.objective.moco.enabled = True
    c.objective.weights.sample = 0.0
    c.objective.weights.reconstruction = 0.0
    c.optim.update(dict(schedule="warmup_cosine", lr=6.25e-4, final_lr=1e-6, weight_decay=1e-4,
                        warmup_steps=500, grad_clip=0.0))
    return common.finish(c)
