"""Self-supervised pretraining.

    python experiments/pretrain.py --config=configs/hybrid.py --workdir=runs/hybrid
    python experiments/pretrain.py --config=configs/hybrid.py:patch=60,depth=8,width=1024 \
        --config.data.store=stores/ptbxl --config.train.bf16=True --workdir=runs/hl-60-8-1024

Runs (or resumes) pretraining in --workdir; see ecgjax.train.loop.
"""
from absl import app, flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.train import loop
from ecgjax.train.metrics_log import logger, setup_console_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _MULTIHOST.value:
        import jax
        jax.distributed.initialize()
    setup_console_logging()
    metrics = loop.pretrain(_CONFIG.value, _WORKDIR.value)
    logger.info("done: %s", {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    cli.run(main)
