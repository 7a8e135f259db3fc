"""HL (003 eq. 3): MAE reconstruction + patient-level + sample-level contrastive terms on a ViT1D.

    python experiments/pretrain.py --config=configs/hybrid.py:patch=125,depth=4,width=512
"""
from ecgjax import config as common


def get_config(arg=None):
    return common.finish(common.base_config(arg, method="hl"))
