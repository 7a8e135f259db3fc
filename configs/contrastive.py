"""CL (003): patient-level + sample-level InfoNCE on a ViT1D (no reconstruction)."""
from ecgjax import config as common


def get_config(arg=None):
    c = common.base_config(arg, method="cl")
    c.objective.weights.reconstruction = 0.0
    return common.finish(c)
