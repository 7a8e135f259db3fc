"""The architecture sweep (003's 81-model grid): pretrain -> linear probe -> fine-tune per cell.

    runner.run_sweep(grid_config, workdir, selection="hl-p125-*")

Modules: grid (the cells and the configs each runs), selection (--cells and --shard), status
(per-cell state on disk and sweep.md), claims (one job per cell), runner (stages, cells, the
sweep), budget (compile-only cost of the cells, for --dry_run).

Layout under workdir::

    cells/<name>/status.json     per-stage state of one cell (see `status.CellStatus`)
    cells/<name>/claim.json      the job running the cell (see `claims`)
    cells/<name>/pretrain/       ecgjax.train.loop.pretrain's workdir (config, metrics, checkpoints)
    cells/<name>/eval/...        run JSONs of ecgjax.eval.probe (ecgjax.eval.report schema)
    sweep.md                     every selected cell's state, and the failures with their reasons
    report/                      ecgjax.eval.report.write_report(workdir)

A cell's stages are 'pretrain' then '<mode>:<task>' for every probe mode and task. A stage
marked done is skipped on the next run; an interrupted pretraining resumes from its own
checkpoint. An exception in a stage (an out-of-memory XlaRuntimeError included) marks the
cell failed with its reason and the sweep goes on to the next cell; failed cells are tried
again on the next run unless `retry_failed=False`.

On a cluster the cells are independent jobs. `shard=(i, n)` (experiments/sweep.py --shard=i/n,
or --shard=slurm in a SLURM job array) runs the deterministic subset cells[i::n] of the selection.
Whatever the sharding, a job claims a cell before running it, so two jobs never run the same cell;
a job that died leaves a claim that goes stale and is taken over. Status files are replaced
atomically, and sweep.md and the report are rewritten (one job at a time) from every cell on disk,
so they merge whatever all jobs have done so far.
"""
