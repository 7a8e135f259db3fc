"""Linear probing / fine-tuning of a pretrained encoder on a downstream task.

    python experiments/probe.py --config=configs/probe.py --config.checkpoint=runs/hl \
        --config.task=MI --config.mode=linear --workdir=runs/hl/probe
    python experiments/probe.py --config=configs/probe.py:runlocal --config.init=supervised \
        --config.encoder_config=configs/hybrid.py:runlocal --config.task=afib --workdir=/tmp/sl

Writes one run JSON per seed under --workdir (ecgjax.eval.report schema) and a summary; see
ecgjax.eval.probe.
"""
from absl import app, flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.eval import probe
from ecgjax.train.metrics_log import logger, setup_console_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/probe.py[:runlocal]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run JSON files.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    setup_console_logging()
    runs = probe.run_probe(_CONFIG.value, _WORKDIR.value)
    logger.info("done: %d runs in %s", len(runs), _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
