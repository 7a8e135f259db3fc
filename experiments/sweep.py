"""The 81-model grid: pretrain -> linear probe -> fine-tune per cell, resumable, then the report.

    python experiments/sweep.py --config=configs/grid.py --workdir=runs/grid --dry_run
    python experiments/sweep.py --config=configs/grid.py:store=stores/ptbxl --workdir=runs/grid \
        --cells=hl-p125-*,0-2
    python experiments/sweep.py --config=configs/grid.py:runlocal --workdir=/tmp/grid

Finished cells are skipped, failed ones (reason in WORKDIR/sweep.md) tried again unless
--noretry_failed; see ecgjax.eval.sweep.
"""
from absl import app, flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.eval import sweep
from ecgjax.train.metrics_log import logger, setup_console_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Grid config (configs/grid.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (one subdirectory per cell).")
_CELLS = flags.DEFINE_string("cells", None, "Cells to run: indices, ranges (3-5), names "
                             "(hl-p125-d4-w512) or globs, comma-separated; default config.cells.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the selected cells and their state; run nothing.")
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", True, "Run cells whose last attempt failed again.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    if _DRY_RUN.value:
        statuses = sweep.load_statuses(config, workdir, _CELLS.value)
        print(sweep.status_counts(config, statuses))
        print(f"stages: pretrain, then {' and '.join(config.probe.modes)} on {', '.join(config.probe.tasks)}")
        print(sweep.status_table(config, statuses))
        return
    setup_console_logging()
    statuses = sweep.run_sweep(config, workdir, _CELLS.value, retry_failed=_RETRY_FAILED.value)
    failed = [s for s in statuses if s.error]
    logger.info("sweep done: %d cells, %d failed; status in %s/sweep.md", len(statuses), len(failed), workdir)


if __name__ == "__main__":
    cli.run(main)
