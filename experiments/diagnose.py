"""Representation diagnostics of a pretraining checkpoint: embedding plot, patient
identification accuracy, risk decomposition (see ecgjax.eval.diagnose).

    python experiments/diagnose.py --checkpoint=runs/hl --task=MI --output=runs/hl/diagnostics \
        --store=stores/ptbxl --folds=1-7,8,9 [--supervised=runs/sl/models/MI_supervised_seed0]
"""
from absl import flags

from ecgjax import cli
from ecgjax.errors import UserError
from ecgjax.eval.diagnose import run_diagnostics
from ecgjax.train.metrics_log import setup_console_logging

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Pretraining workdir.")
_TASK = flags.DEFINE_string("task", "MI", "Task whose labels colour the plot and feed the risk probes.")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.")
_STORE = flags.DEFINE_string("store", "", "Store ('' = the checkpoint's pretraining data).")
_FOLDS = flags.DEFINE_list("folds", [], "train,val,test PTB-XL folds, e.g. 1-7,8,9 (default: store splits).")
_SUPERVISED = flags.DEFINE_string("supervised", "", "A saved supervised model, e.g. a probe's --config.save_model (approximation error).")
_METHOD = flags.DEFINE_enum("method", "pca", ["pca", "tsne"], "2-D projection of the plot.")
flags.mark_flags_as_required(["checkpoint", "output"])


def main(argv):
    del argv
    setup_console_logging()
    if _FOLDS.value and len(_FOLDS.value) != 3:
        raise UserError(f"--folds={','.join(_FOLDS.value)}: expected three comma-separated fold sets, "
                        f"train,val,test (e.g. --folds=1-7,8,9)")
    folds = dict(zip(("train", "val", "test"), _FOLDS.value)) if _FOLDS.value else None
    run_diagnostics(_CHECKPOINT.value, _TASK.value, _OUTPUT.value, store=_STORE.value, folds=folds,
                    supervised=_SUPERVISED.value, method=_METHOD.value)


if __name__ == "__main__":
    cli.run(main)
