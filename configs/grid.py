"""003's 81-model grid: patch 60/125/250 x depth 2/4/8 x width 256/512/1024 x CL/GL/HL.

Each cell pretrains with configs/{contrastive,generative,hybrid}.py at
`patch=P,depth=D,width=W`, then is linear-probed and fine-tuned on every task with
configs/probe.py (run by ecgjax.sweep):

    python experiments/sweep.py --config=configs/grid.py --workdir=runs/grid --dry_run
    python experiments/sweep.py --config=configs/grid.py:store=stores/ptbxl --workdir=runs/grid
    python experiments/sweep.py --config=configs/grid.py:runlocal --workdir=/tmp/grid \
        --cells=hl-p125-d4-w512,0-2 --config.pretrain.num_steps=10

`arg` keys: store (an ingested store; empty = the embedded synthetic cohort), steps
(pretraining steps per cell), batch, seed, runlocal (CPU scale: tiny steps, 3 cells unless
--cells says otherwise; the method configs' own `runlocal` shrinks each encoder).
"""
import os

import ml_collections

from ecgjax import config as common
from ecgjax.data.synthetic import CONDITIONS
from ecgjax.eval.metrics import CRITERIA_TASKS

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
    a = common.parse_arg(arg, store="", steps=20_000, batch=256, seed=0, runlocal=False)
    c = ml_collections.ConfigDict()
    c.runlocal = a.runlocal

    # The grid is the product of these axes, method outermost, so a cell's index within its
    # method is 003 App. C's "Case" number.
    c.axes = ml_collections.ConfigDict(dict(
        method=("cl", "gl", "hl"), patch=(60, 125, 250), depth=(2, 4, 8), width=(256, 512, 1024)))
    # Which cells to run: '' = all; else comma-separated indices, index ranges (3-5), names
    # (hl-p125-d4-w512) or globs (hl-p60-*). --cells overrides it.
    c.cells = ""
    c.method_configs = ml_collections.ConfigDict(dict(
        cl=os.path.join(_HERE, "contrastive.py"),
        gl=os.path.join(_HERE, "generative.py"),
        hl=os.path.join(_HERE, "hybrid.py"),
    ))

    c.data = ml_collections.ConfigDict(dict(store=a.store))

    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.num_steps = a.steps
    c.pretrain.batch_size = a.batch
    c.pretrain.seed = a.seed
    # Applied last to every cell's pretraining config, nested like it (e.g. train.bf16);
    # a key the pretraining config lacks is an error.
    c.pretrain.overrides = ml_collections.ConfigDict()

    c.probe = ml_collections.ConfigDict()
    c.probe.config = os.path.join(_HERE, "probe.py")
    c.probe.arg = ""
    c.probe.modes = ("linear", "finetune")
    # PTB-XL superclasses (003 Tables 4-9) on an ingested store; the synthetic cohort's
    # conditions on the embedded default.
    c.probe.tasks = tuple(CRITERIA_TASKS) if a.store else tuple(CONDITIONS)
    c.probe.seeds = 3              # downstream seeds first_seed, first_seed + 1, ...
    c.probe.first_seed = 0
    # Applied last to every probe config (nested like configs/probe.py's; unknown keys are an error).
    c.probe.overrides = ml_collections.ConfigDict()

    # Render ecgjax.eval.report's tables and figures at the end of every sweep.
    c.report = True

    if a.runlocal:
        c.cells = "cl-p250-d2-w256,gl-p125-d2-w256,hl-p125-d2-w256"
        c.pretrain.num_steps = min(a.steps, 20)
        c.pretrain.batch_size = min(a.batch, 16)
        c.pretrain.overrides = ml_collections.ConfigDict(dict(
            train=dict(checkpoint_every=10, log_every=5)))
        c.probe.arg = "runlocal"
        if not a.store:  # two of the five synthetic conditions; PTB-XL keeps all four (criteria)
            c.probe.tasks = ("wide_qrs", "st_elevation")
        c.probe.seeds = 1
    return c
