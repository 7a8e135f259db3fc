"""CPC (001): a ResNet-18v2 frame encoder, attention pooling over context frames (3 layers,
d_model 512, 8 heads), InfoNCE on the embedding of a future frame `offset` frames after the
context, negatives from the other samples of the batch."""
from ecgjax import config as common


def get_config(arg=None):
    c = common.base_config(arg, method="cpc", encoder="resnet18v2")
    for key in ("patient", "sample", "reconstruction"):
        c.objective.weights[key] = 0.0
    return common.finish(c)
