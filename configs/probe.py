"""Linear probing / fine-tuning of a pretrained encoder on one downstream task (003 §3.2.2, 000 §4.2).

    python experiments/probe.py --config=configs/probe.py --config.checkpoint=runs/hl \
        --config.task=MI --config.mode=linear --workdir=runs/hl/probe
    python experiments/probe.py --config=configs/probe.py:runlocal --config.checkpoint=runs/hl \
        --config.task=superclass --config.mode=finetune --config.data.store=stores/ptbxl \
        --config.folds.train=1-7 --config.folds.val=8 --config.folds.test=9 --workdir=runs/hl/probe

init: 'pretrained' (the checkpoint's encoder), 'random' (same architecture, random weights:
the baseline of 003 Table 4) or 'supervised' (trained end to end from scratch: Table 5).
"""
import ml_collections
from ml_collections import config_dict

from ecgjax.cli import closest
from ecgjax.data.splits import SPLITS
from ecgjax.errors import UserError
from ecgjax.eval import recipe


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.checkpoint = ""              # pretraining workdir (experiments/pretrain.py --workdir)
    # Pretraining config whose encoder a baseline builds when no checkpoint is given.
    c.encoder_config = "configs/hybrid.py"
    c.init = "pretrained"          # pretrained | random | supervised
    # linear | finetune: the report's arm (with init) and the recipe it stands for (below).
    c.mode = "linear"
    # The recipe: its stages in order, comma-separated (ecgjax.eval.recipe): linear (a new head on
    # frozen window features), finetune (all weights), wise_ft, distill. '' = the mode's:
    # linear -> 'linear'; finetune -> 'linear,finetune' ('finetune' without a pretrained encoder).
    # A listed stage reads its settings: linear / finetune from optim, wise_ft / distill below.
    c.recipe = ""
    # The report's 'cell' of these runs (a sweep sets its grid cell, which `runlocal` shrinks in
    # the encoder itself); method '' = read the cell from the checkpoint's encoder.
    c.cell = ml_collections.ConfigDict(dict(patch=0, depth=0, width=0, method=""))
    c.task = "MI"                  # see ecgjax.eval.tasks.get_task; 'csv:/path/labels.csv:column[:type]'
    c.leads = ""                   # comma-separated lead names overriding the task's (e.g. 'II')
    # 'select': keep only the task's input channels of the first layer; 'zero': keep all 12
    # channels and feed zeros in the absent leads.
    c.lead_adaptation = "select"

    c.data = ml_collections.ConfigDict()
    c.data.store = ""              # '' = the store of the checkpoint's config (synthetic cohort by default)
    # PTB-XL strat_fold folds (used when the store has strat_fold; else the store's split column).
    # Unset (None), a split takes the standard protocol's folds, 1-8 / 9 / 10; a copy with folds 1-9
    # only needs 1-7 / 8 / 9. Where the standard folds leave a split of such a store empty, the unset
    # ones fall back (with a warning) to the store's split; a fold set here is used as given or
    # refused before any work (ecgjax.eval.folds.resolve_splits).
    c.folds = ml_collections.ConfigDict({split: config_dict.placeholder(str) for split in SPLITS})

    c.data_fraction = 1.0          # share of training patients kept (protocols.subsample_patients)
    c.case_ratio = 0.0             # target prevalence for binary tasks (0 = natural)
    c.seeds = 5
    c.first_seed = 0

    # The windowed protocol, the fit loop's and the linear / finetune stages' settings: every field
    # is documented in ecgjax.eval.recipe.settings (default_protocol, default_optim).
    c.protocol = recipe.default_protocol()
    c.optim = recipe.default_optim()
    # WiSE-FT (ecgjax.eval.recipe.wise_ft): mixtures at 1/points ... (points-1)/points.
    c.wise_ft = recipe.WiSEFT.defaults()
    # Self-distillation (ecgjax.eval.recipe.distill): epochs a round, rounds, the first round's
    # teacher (size: models; checkpoints: comma-separated pretraining runs where the others start,
    # '' = the checkpoint above), the pool beyond the left-out training records (store: another
    # corpus at the task store's rate, labels never read; records: a fixed sample of it, 0 = all).
    c.distill = recipe.SelfDistill.defaults()
    c.bootstrap = 1000             # patient-level bootstrap resamples for the CIs (0 = none)
    c.save_model = False           # also save each seed's Classifier under workdir/models/

    unknown = [key for key in filter(None, str(arg or "").split(",")) if key.strip() != "runlocal"]
    if unknown:
        raise UserError(f"config arg {unknown[0]!r} (after ':' in --config=configs/probe.py:{arg}) is unknown"
                        f"{closest(unknown[0], ['runlocal'])}; the probe config takes only 'runlocal'")
    if arg:
        c.seeds = 2
        c.bootstrap = 20
        c.optim.update(dict(batch_size=16, eval_batch_size=32, linear_epochs=5, epochs=2, patience=0,
                            min_steps_per_epoch=1))
    return c
