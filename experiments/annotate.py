"""Continuous annotation of long recordings with a fine-tuned model.

    python experiments/annotate.py --checkpoint=runs/telemetry/model --input=/work/shared/data/mitdb \
        --output=/tmp/annotations [--window_s=10 --stride_s=5 --batch_size=64 --lead=MLII]

--input is one WFDB record (path with or without .hea) or a folder of them. Per record, --output
gets <name>.csv (one row per window), <name>.ecgjax (WFDB annotations: wfdb.rdann(path, 'ecgjax'))
and <name>.png. Bad records are logged and skipped; the exit status is 1 when none succeeded, 2 (with
one line naming the problem) when --input holds no records at all.
"""
import logging

from absl import app, flags

from ecgjax import cli
from ecgjax.annotate import apply, run
from ecgjax.errors import UserError

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Directory of a saved model (annotate.train_heads, or a probe run with --config.save_model).")
_INPUT = flags.DEFINE_string("input", None, "A WFDB record or a folder of records.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the CSV, WFDB annotation and PNG files.")
_WINDOW_S = flags.DEFINE_float("window_s", None, "Window length in seconds (default: the model's).")
_STRIDE_S = flags.DEFINE_float("stride_s", None, "Hop between windows in seconds (default: window_s).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Windows per compiled inference batch.")
_LEAD = flags.DEFINE_string("lead", None, "For a single-lead model: the recording lead to feed it (name or column).")
_QRS = flags.DEFINE_bool("qrs_heart_rate", True, "Add the QRS-detector heart-rate track (qrs_hr_bpm).")
_QRS_FS = flags.DEFINE_float("qrs_fs", None, "Run QRS detection at this rate (faster; default: the recording's).")
_PLOT = flags.DEFINE_bool("plot", True, "Write the PNG plot.")
flags.mark_flags_as_required(["checkpoint", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not run.record_paths(_INPUT.value):  # checked before the model is loaded
        raise UserError(f"--input={_INPUT.value}: no WFDB records in this folder (no RECORDS list, no .hea "
                        f"headers); pass a WFDB record or a folder of them")
    lead = _LEAD.value
    if lead is not None and lead.lstrip("-").isdigit():
        lead = int(lead)
    status = apply.annotate_with_model(apply.load_model(_CHECKPOINT.value), _INPUT.value, _OUTPUT.value,
                                       window_s=_WINDOW_S.value, stride_s=_STRIDE_S.value,
                                       batch_size=_BATCH_SIZE.value, lead=lead, qrs_heart_rate=_QRS.value,
                                       qrs_fs=_QRS_FS.value, plot=_PLOT.value)
    for name, result in status.items():
        print(f"{name}: {result}")
    return 0 if any(result == "ok" for result in status.values()) else 1


if __name__ == "__main__":
    cli.run(main)
