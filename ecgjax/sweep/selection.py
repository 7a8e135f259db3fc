"""Which cells a job runs: the --cells selection, then this job's --shard of it."""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence

import ml_collections

from ecgjax.errors import UserError
from ecgjax.sweep.grid import Cell, grid_cells


def select_cells(cells: Sequence[Cell], selection: str | None) -> list[Cell]:
    """The cells named by `selection`, in grid order; '' or None selects all.

    Comma-separated items: an index ('4'), an index range ('3-5', inclusive), a name
    ('hl-p125-d4-w512') or a glob ('hl-p60-*'). An item matching nothing is an error.
    """
    if not selection or not selection.strip():
        return list(cells)
    chosen: set[int] = set()
    for item in filter(None, (s.strip() for s in selection.split(","))):
        first, sep, last = item.partition("-")
        if item.isdigit() or (sep and first.isdigit() and last.isdigit()):
            lo, hi = int(first), int(last or first)
            if not 0 <= lo <= hi < len(cells):
                raise ValueError(f"cell index {item!r} out of range 0-{len(cells) - 1}")
            matched = set(range(lo, hi + 1))
        else:
            matched = {i for i, c in enumerate(cells) if fnmatch.fnmatchcase(c.name, item)}
        if not matched:
            raise ValueError(f"--cells item {item!r} matches no cell (names look like {cells[0].name})")
        chosen |= matched
    return [cells[i] for i in sorted(chosen)]


def job_cells(config: ml_collections.ConfigDict, selection: str | None = None,
              shard: tuple[int, int] | None = None) -> list[Cell]:
    """The grid's cells named by `selection` (None: config.cells), then `shard` of them (None: all)."""
    return shard_cells(select_cells(grid_cells(config), config.cells if selection is None else selection), shard)


def parse_shard(text: str | None, environ=None) -> tuple[int, int] | None:
    """'i/n' -> (i, n); 'slurm' -> this SLURM array task's (index, count); None/'' -> None.

    A UserError names --shard and what to pass for anything else.
    """
    if not text:
        return None
    environ = os.environ if environ is None else environ
    if text == "slurm":
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
        missing = [n for n in names if n not in environ]
        if missing:
            raise UserError(f"--shard=slurm outside a SLURM job array ({', '.join(missing)} not set): submit with "
                            f"sbatch --array=0-N, or pass --shard=i/n")
        index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ["SLURM_ARRAY_TASK_MIN"])
        return index, int(environ["SLURM_ARRAY_TASK_COUNT"])
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise UserError(f"--shard={text}: expected i/n with 0 <= i < n (this job's part of n), e.g. --shard=0/4, "
                        f"or --shard=slurm in a SLURM job array")
    return int(index), int(count)


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Shard (i, n) of the cells: every n-th from the i-th, so shards are disjoint, cover every
    cell, and mix methods and sizes (the grid is ordered by method, then patch, depth, width)."""
    if shard is None:
        return list(cells)
    index, count = shard
    return list(cells)[index::count]
