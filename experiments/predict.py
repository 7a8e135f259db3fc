r"""A model's predictions for every record: one CSV row per record (see ecgjax.predict).

    python experiments/predict.py --model=zoo:ptbxl-superclass --input=/path/to/wfdb_folder --output=/tmp/pred
    python experiments/predict.py --model=zoo:ptbxl-superclass --input=stores/ptbxl --output=/tmp/pred
    python experiments/predict.py --model=runs/probe/models/superclass_finetune_seed0 \
        --input=ecgs.npy --fs=500 --leads=I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6 --output=/tmp/pred

--model is a model with heads: a released one (zoo:NAME) or a folder saved by experiments/probe.py
--config.save_model=True. --input is WFDB records (a folder, a RECORDS file or one .hea), an
ingested store, a .npy array ([records, time, leads] or [time, leads]; needs --fs and --leads) or a
CSV file of one record (a header of lead names, one row per sample; needs --fs). --output gets
predictions.csv (record, path, each output's probability, and `<output>_label` at the model's
validation-chosen thresholds), rejected.csv (records that could not be used, with the reason)
and predict.json.
"""
from absl import app, flags

from ecgjax import api, cli
from ecgjax import predict as predict_lib
from ecgjax.train.metrics_log import logger, setup_console_logging

_MODEL = flags.DEFINE_string("model", None, "A model with heads: zoo:NAME or a saved model folder.")
_INPUT = flags.DEFINE_string("input", None, "WFDB records, an ingested store, or a .npy / .csv file.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for predictions.csv / rejected.csv / predict.json.")
_FS = flags.DEFINE_float("fs", None, "Sampling rate in Hz of a .npy / .csv input.")
_LEADS = flags.DEFINE_list("leads", None, "Lead names of the columns of a .npy input (a CSV's header names them).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["model", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    setup_console_logging()
    model = api.Model(_MODEL.value, api.loader.load_trained(_MODEL.value, "--model"))
    summary = predict_lib.predict(model, _INPUT.value, _OUTPUT.value, fs=_FS.value, leads=_LEADS.value,
                                  progress=_PROGRESS.value)
    logger.info("done: %d records, %d rejected -> %s", summary["records"], summary["rejected"], _OUTPUT.value)


if __name__ == "__main__":
    cli.run(main)
