"""GL (003): MAE with random patch masking and L1 reconstruction of the masked patches."""
from ecgjax import config as common


def get_config(arg=None):
    c = common.base_config(arg, method="gl")
    c.objective.weights.patient = 0.0
    c.objective.weights.sample = 0.0
    return common.finish(c)
