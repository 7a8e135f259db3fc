"""Self-supervised pretraining.

    python experiments/pretrain.py --config=configs/hybrid.py --workdir=runs/hybrid
    python experiments/pretrain.py --config=configs/hybrid.py:patch=60,depth=8,width=1024 \
        --config.data.store=stores/ptbxl --config.train.bf16=True --workdir=runs/hl-60-8-1024

Runs (or resumes) pretraining in --workdir; see ecgjax.train.loop. Several processes (one data-
parallel run over all their devices; README, "Several processes or hosts"):

    python -m ecgjax.launch --num_processes=2 -- experiments/pretrain.py --config=... --workdir=...
    srun python experiments/pretrain.py --multihost --config=... --workdir=...   # SLURM, one task per host
"""
from absl import app, flags
from ml_collections import config_flags

from ecgjax import cli, loader
from ecgjax.train import loop, multihost
from ecgjax.train.metrics_log import logger, setup_console_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Join a multi-process run found in the cluster's environment "
                                "(SLURM, Open MPI, Cloud TPU) via jax.distributed.initialize(); implied under "
                                "python -m ecgjax.launch.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if multihost.initialize(required=_MULTIHOST.value):
        import jax

        setup_console_logging(process_index=jax.process_index(), process_count=jax.process_count())
    else:
        setup_console_logging()
    with multihost.exit_fast_on_error():
        config = _CONFIG.value
        initial = loader.load_pretrained(config.init_from, "--config.init_from") if config.init_from else None
        metrics = loop.pretrain(config, _WORKDIR.value, initial)
    logger.info("done: %s", {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    cli.run(main)
