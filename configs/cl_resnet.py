"""CL + interlead on a ResNet18 of 16 base channels: the best pretrained model of
benchmarks/ptbxl.md ("CL+interlead ResNet18 CNN fine-tune": 0.825 macro AUROC at 1% of the PTB-XL
training patients, 0.788 for the same ResNet from scratch; 0.925 at 100%, level with it).

    python experiments/pretrain.py --config=configs/cl_resnet.py:store=stores/ptbxl --workdir=runs/cl-resnet
    python experiments/probe.py --config=configs/probe.py --config.checkpoint=runs/cl-resnet \\
        --config.mode=finetune --config.task=superclass --config.data.store=stores/ptbxl ...

Patient- and sample-level InfoNCE on 10 s views (003) plus 002's interlead term (the anchor seen
through its limb leads only and through its precordial leads only are positives), batch 128 for
600 steps, warm-up (50 steps) then cosine from lr 1e-3: 22 min on 2 CPU cores. Longer runs,
temporal views, a MoCo queue, twice the width or a weight of 2 on the interlead term did not fine-tune better
under label scarcity (benchmarks/ptbxl.md). Loading is in-process (the 2-core measurement); on a
bigger host add --config.data.num_workers=N. Keys in `arg` (batch=, steps=, encoder=, ...) win.
"""
from ecgjax import config as common

RECIPE = dict(batch=128, steps=600)


def get_config(arg=None):
    given = common.parse_arg(arg)
    c = common.base_config(arg, method="cl", encoder="resnet18")
    c.model.encoder.chan_start = common.CPU_CHAN_START
    c.objective.weights.reconstruction = 0.0
    c.objective.weights.interlead = 1.0
    c.optim.update(dict(schedule="warmup_cosine", lr=1e-3, warmup_steps=50))
    c.train.batch_size = given.get("batch", RECIPE["batch"])
    c.train.num_steps = given.get("steps", RECIPE["steps"])
    c.data.num_workers = 0
    return common.finish(c)
