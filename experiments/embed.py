r"""One embedding per ECG record from a pretrained encoder (see ecgjax.eval.embed).

    python experiments/embed.py --checkpoint=runs/hl --input=stores/ptbxl --split=test \
        --output=runs/hl/embeddings
    python experiments/embed.py --checkpoint=runs/hl --input=/path/to/wfdb_folder --output=/tmp/emb

--checkpoint is a pretraining run (the --workdir of experiments/pretrain.py; its latest
checkpoint's encoder is used), an exported encoder or a released one (zoo:cl-resnet18-ptbxl).
For a model with heads, use ecgjax.load(PATH).embed(...) (ecgjax/api.py).
--input is an ingested store (python -m ecgjax.data.ingest) or WFDB records (a folder, a RECORDS
file or one .hea): any rate and lead set, preprocessed as ingest does (resampled to the
encoder's rate, canonical 12 leads, absent leads zero).

Each record is covered by windows of the encoder's input length (the last aligned to the end,
a shorter record zero-padded); its embedding is the mean of the encoder's pooled features over
its windows. --output receives embeddings.npy [records, features] float32, embeddings.csv (row,
record_id, patient_id, num_windows, and path for WFDB input; row i of the CSV is row i of the
array), rejected.csv (WFDB records that could not be read, with the reason) and embed.json.

    import numpy as np, pandas as pd
    z = np.load("runs/hl/embeddings/embeddings.npy"); ids = pd.read_csv("runs/hl/embeddings/embeddings.csv")
"""
from absl import app, flags

from ecgjax import cli
from ecgjax.eval import embed
from ecgjax.train.metrics_log import logger, setup_console_logging

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Pretraining run directory (experiments/pretrain.py --workdir), exported "
    "encoder, or released encoder zoo:NAME.")
_INPUT = flags.DEFINE_string("input", None, "Ingested store directory, or a folder of WFDB records.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for embeddings.npy / embeddings.csv / rejected.csv.")
_SPLIT = flags.DEFINE_string("split", "", "Store input only: embed the records of this split "
                             "(train, val, test); default all.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Windows per compiled encoder batch.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["checkpoint", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    setup_console_logging()
    summary = embed.embed(_CHECKPOINT.value, _INPUT.value, _OUTPUT.value, split=_SPLIT.value,
                          batch_size=_BATCH_SIZE.value, progress=_PROGRESS.value)
    logger.info("done: %d records, %d features, %d rejected -> %s", summary["records"],
                summary["features"], summary["rejected"], _OUTPUT.value)


if __name__ == "__main__":
    cli.run(main)
