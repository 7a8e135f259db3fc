"""Heart-rate pretext (001): 4-class heart rate (brady / normal / tachy / noise) of each crop, labels
from a QRS detector run once over the store (ecgjax.data.beats), on the same ViT1D as HL.

    python experiments/pretrain.py --config=configs/heart_rate.py:patch=125,depth=4,width=256,store=STORE
"""
from ecgjax import config as common


def get_config(arg=None):
    c = common.base_config(arg, method="hr")
    for key in ("patient", "sample", "reconstruction", "cpc"):
        c.objective.weights[key] = 0.0
    c.objective.weights.heart_rate = 1.0
    return common.finish(c)
