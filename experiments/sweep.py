"""The 81-model grid: pretrain -> linear probe -> fine-tune per cell, resumable, then the report.

    python experiments/sweep.py --config=configs/grid.py --workdir=runs/grid --dry_run [--budget]
    python experiments/sweep.py --config=configs/grid.py:store=stores/ptbxl --workdir=runs/grid \
        --cells=hl-p125-*,0-2
    python experiments/sweep.py --config=configs/grid.py:runlocal --workdir=/tmp/grid

Finished cells are skipped, failed ones (reason in WORKDIR/sweep.md) tried again unless
--noretry_failed; see ecgjax.sweep. On a cluster, one job per shard of the cells (each cell
is claimed, so no two jobs run it; sweep.md and the report merge whatever is done):

    python experiments/sweep.py --config=configs/grid.py --workdir=runs/grid --shard=3/9
    sbatch --array=0-8 --wrap "python experiments/sweep.py --config=configs/grid.py --workdir=runs/grid --shard=slurm"
"""
from absl import app, flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.errors import UserError
from ecgjax.sweep import budget, runner, selection, status
from ecgjax.train.metrics_log import logger, setup_console_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Grid config (configs/grid.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (one subdirectory per cell).")
_CELLS = flags.DEFINE_string("cells", None, "Cells to run: indices, ranges (3-5), names "
                             "(hl-p125-d4-w512) or globs, comma-separated; default config.cells.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the selected cells and their state, at once; train nothing. "
                             "With --budget, also what they will cost.")
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", True, "Run cells whose last attempt failed again.")
_SHARD = flags.DEFINE_string("shard", None, "i/n: run only every n-th selected cell from the i-th (one job of n "
                             "on a cluster); 'slurm': this SLURM array task's shard.")
_BUDGET = flags.DEFINE_bool("budget", False, "With --dry_run: each cell's parameters, compiled step FLOPs, XLA "
                            "memory and projected device-hours (compiles each cell's step once, seconds to a "
                            "minute a cell on a CPU; cached in --budget_cache).")
_BUDGET_CACHE = flags.DEFINE_string("budget_cache", budget.DEFAULT_CACHE_DIR, "One JSON per compiled cell.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", budget.H100_PEAK_TFLOPS,
                                  "Device peak for the projection (default: H100 SXM, dense bf16).")
_MFU = flags.DEFINE_float("mfu", budget.DEFAULT_MFU, "Model-FLOPs utilisation assumed for the projection.")
_DEVICE_MEMORY_GIB = flags.DEFINE_float("device_memory_gib", budget.H100_MEMORY_GIB,
                                        "Device memory the cells must fit (default: H100, 80 GB).")
_BUDGET_BF16 = flags.DEFINE_bool("budget_bf16", True, "Size the cells in bf16, as they train on a GPU; "
                                 "--nobudget_bf16 keeps the grid's own train.bf16.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    shard = selection.parse_shard(_SHARD.value)
    if _BUDGET.value and not _DRY_RUN.value:
        raise UserError("--budget sizes the cells of a dry run: add --dry_run (nothing is trained)")
    if _DRY_RUN.value:
        statuses = status.load_statuses(config, workdir, _CELLS.value, shard)
        print(status.status_counts(config, statuses))
        print(f"stages: pretrain, then {' and '.join(config.probe.modes)} on {', '.join(config.probe.tasks)}")
        print(status.status_table(config, statuses))
        if _BUDGET.value:
            if _MFU.value <= 0 or _PEAK_TFLOPS.value <= 0:
                raise UserError(f"--mfu={_MFU.value} and --peak_tflops={_PEAK_TFLOPS.value} must be > 0")
            setup_console_logging()  # compile progress on stderr; the tables stay on stdout
            rows = budget.cell_budgets(config, [s.cell for s in statuses], cache_dir=_BUDGET_CACHE.value,
                                       bf16=True if _BUDGET_BF16.value else None)
            print(budget.budget_table(rows, peak_tflops=_PEAK_TFLOPS.value, mfu=_MFU.value,
                                      device_memory_gib=_DEVICE_MEMORY_GIB.value))
            print(budget.cache_note(rows, _BUDGET_CACHE.value))
        else:
            print(f"budget: not computed; add --budget for each cell's FLOPs, memory and device-hours (compiles "
                  f"each cell's step once, seconds to a minute a cell on a CPU, cached in {_BUDGET_CACHE.value})")
        return
    setup_console_logging()
    statuses = runner.run_sweep(config, workdir, _CELLS.value, shard=shard, retry_failed=_RETRY_FAILED.value)
    failed = [s for s in statuses if s.error]
    logger.info("sweep done: %d cells, %d failed; status in %s/sweep.md", len(statuses), len(failed), workdir)


if __name__ == "__main__":
    cli.run(main)
