"""Continuous annotation of long recordings with a fine-tuned model.

    python experiments/annotate.py --checkpoint=runs/telemetry/model --input=/work/shared/data/mitdb \
        --output=/tmp/annotations [--window_s=10 --stride_s=5 --batch_size=64 --lead=MLII]

--input is one WFDB record (path with or without .hea) or a folder of them. Per record, --output
gets <name>.csv (one row per window), <name>.ecgjax (WFDB annotations: wfdb.rdann(path, 'ecgjax'))
and <name>.png. Bad records are logged and skipped; when none succeeds, or --input holds no records
at all, one error: line names the problem, nothing is written and the exit status is 2.
"""
import logging
import os

from absl import app, flags

from ecgjax import cli, loader
from ecgjax.annotate import apply, run
from ecgjax.errors import UserError

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A saved model folder (annotate.train_heads, or a probe run with --config.save_model) or a released model, e.g. zoo:telemetry-af-hr.")
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


def check_checkpoint(spec: str) -> None:
    """A --checkpoint path that does not exist: the closest one beside it, and what to pass."""
    if spec.startswith("zoo:") or os.path.exists(os.path.expanduser(spec)):
        return
    raise UserError(f"--checkpoint={spec}: no such directory{cli.closest_path(spec)}; pass a model with trained heads: "
                    f"a probe's WORKDIR/models/NAME (experiments/probe.py --config.save_model=True), "
                    f"benchmarks/telemetry.py's WORKDIR/model, or a released model zoo:NAME")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not run.record_paths(_INPUT.value):  # checked before the model is loaded
        raise UserError(f"--input={_INPUT.value}: no WFDB records in this folder (no RECORDS list, no .hea "
                        f"headers); pass a WFDB record or a folder of them")
    check_checkpoint(_CHECKPOINT.value)
    lead = _LEAD.value
    if lead is not None and lead.lstrip("-").isdigit():
        lead = int(lead)
    status = apply.annotate_with_model(loader.load_trained(_CHECKPOINT.value, "--checkpoint"), _INPUT.value, _OUTPUT.value,
                                       window_s=_WINDOW_S.value, stride_s=_STRIDE_S.value,
                                       batch_size=_BATCH_SIZE.value, lead=lead, qrs_heart_rate=_QRS.value,
                                       qrs_fs=_QRS_FS.value, plot=_PLOT.value)
    if not any(result == "ok" for result in status.values()):
        reasons = list(status.values())
        raise UserError(f"--input={_INPUT.value}: none of its {len(reasons)} records could be annotated "
                        f"({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''}); nothing was written "
                        f"to --output={_OUTPUT.value}")
    for name, result in status.items():
        print(f"{name}: {result}")
    return 0


if __name__ == "__main__":
    cli.run(main)
