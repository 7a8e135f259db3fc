"""The sweep's budget before it runs (`experiments/sweep.py --dry_run`).

For every selected cell: its model parameters, the FLOPs of its compiled pretraining step and
XLA's memory estimate for it (ecgjax.train.cost: compile-only, nothing allocated), and the
device-hours its configured steps take at a given peak and MFU:

    hours = num_steps * flops_per_step / (peak_tflops * 1e12 * mfu) / 3600

Device-hours, not wall hours: data parallelism over n devices divides the wall time by n at best.
Compiling a cell takes seconds to a minute on a CPU, so each result is cached on disk, one JSON per
cell under `cache_dir`, keyed by a hash of the cell's pretraining config, the JAX version and the
compiling backend; a second dry run reads them back without compiling anything.

    rows = cell_budgets(grid_config, cells, cache_dir="~/.cache/ecgjax/budget")  # cells: grid.Cell list
    print(budget_table(rows, peak_tflops=989, mfu=0.4, device_memory_gib=80))
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Sequence

import jax
import ml_collections

from ecgjax import markdown
from ecgjax.sweep.grid import Cell, grid_cells, pretrain_config
from ecgjax.train import cost

logger = logging.getLogger("ecgjax")

DEFAULT_CACHE_DIR = "~/.cache/ecgjax/budget"
# H100 SXM: 989 dense bf16 TFLOP/s (the spec sheet's 1979 counts 2:4 sparsity); 80 GB.
H100_PEAK_TFLOPS = 989.0
H100_MEMORY_GIB = 80.0
DEFAULT_MFU = 0.4


@dataclasses.dataclass(frozen=True)
class CellBudget:
    """One cell's compile-only cost and its configured run length."""

    index: int               # position in the full grid
    name: str
    params: int
    batch: int
    num_steps: int
    bf16: bool
    flops_per_step: float    # XLA's count, whole step, all devices
    memory_bytes: int        # XLA's buffer assignment, per device
    backend: str             # where it was compiled (memory differs a little between backends)
    cached: bool             # read back from the cache, not compiled in this run

    def device_hours(self, peak_tflops: float, mfu: float) -> float:
        return self.num_steps * self.flops_per_step / (peak_tflops * 1e12 * mfu) / 3600.0

    def fits(self, device_memory_gib: float) -> bool:
        return self.memory_bytes <= device_memory_gib * 2 ** 30


def budget_config(config: ml_collections.ConfigDict, cell: Cell, bf16: bool | None) -> ml_collections.ConfigDict:
    """The cell's pretraining config as the sweep would run it; bf16 overrides train.bf16 if given."""
    c = pretrain_config(config, cell)
    if bf16 is not None:
        c.train.bf16 = bool(bf16)
    return c


def cache_key(cell_config: ml_collections.ConfigDict) -> str:
    """Hash of what the compiled step depends on: the config, the JAX version, the devices."""
    devices = jax.devices()
    settings = json.loads(cell_config.to_json_best_effort())
    settings["data"].pop("store", None)  # where the data lives changes nothing compiled
    settings["data"].get("synthetic", {}).pop("cache_dir", None)
    what = {"config": settings, "jax": jax.__version__, "backend": jax.default_backend(),
            "device": devices[0].device_kind, "num_devices": len(devices)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _compile_cost(cell_config: ml_collections.ConfigDict) -> dict:
    try:
        return cost.step_cost(cell_config)
    finally:  # one cell's executables and buffers must not pile up over 81 compilations
        gc.collect()
        jax.clear_caches()


def cell_budget(config: ml_collections.ConfigDict, cell: Cell, index: int, cache_dir,
                bf16: bool | None = True) -> CellBudget:
    """The cell's budget, from the cache or by compiling its step (and caching the result)."""
    cell_config = budget_config(config, cell, bf16)
    path = pathlib.Path(cache_dir).expanduser() / f"{cell.name}-{cache_key(cell_config)}.json"
    cached = path.is_file()
    if cached:
        result = json.loads(path.read_text())
    else:
        logger.info("budget: compiling %s", cell.name)
        result = _compile_cost(cell_config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)  # a kill mid-write leaves no half file to read back
    return CellBudget(index=index, name=cell.name, params=int(result["params"]),
                      batch=int(cell_config.train.batch_size), num_steps=int(cell_config.train.num_steps),
                      bf16=bool(cell_config.train.bf16), flops_per_step=float(result["flops"]),
                      memory_bytes=int(result["memory_bytes"]), backend=str(result["backend"]), cached=cached)


def cell_budgets(config: ml_collections.ConfigDict, cells: Sequence[Cell], *,
                 cache_dir=DEFAULT_CACHE_DIR, bf16: bool | None = True) -> list[CellBudget]:
    """Budgets of `cells` (e.g. a dry run's selection), in the order given."""
    index = {c: i for i, c in enumerate(grid_cells(config))}
    return [cell_budget(config, c, index[c], cache_dir, bf16) for c in cells]


def cache_note(rows: Sequence[CellBudget], cache_dir) -> str:
    """Where the numbers came from: how many cells were read from the cache, how many compiled now."""
    cached = sum(r.cached for r in rows)
    return (f"budget: {cached} of {len(rows)} cells read from the cache in {cache_dir}, {len(rows) - cached} "
            f"compiled now")


def budget_table(rows: Sequence[CellBudget], *, peak_tflops: float = H100_PEAK_TFLOPS, mfu: float = DEFAULT_MFU,
                 device_memory_gib: float = H100_MEMORY_GIB) -> str:
    """Markdown: one row per cell, then the total device-hours and the cells that do not fit."""
    header = ["#", "Cell", "Params (M)", "Batch", "Steps", "Dtype", "TFLOP/step", "XLA memory (GiB)",
              f"Fits {device_memory_gib:g} GiB", "Device-hours"]
    lines = [markdown.table(header, [
        [r.index, r.name, f"{r.params / 1e6:.1f}", r.batch, r.num_steps, "bf16" if r.bf16 else "fp32",
         f"{r.flops_per_step / 1e12:.4g}", f"{r.memory_bytes / 2 ** 30:.2f}",
         "yes" if r.fits(device_memory_gib) else "NO", f"{r.device_hours(peak_tflops, mfu):.3g}"]
        for r in rows])]
    total = sum(r.device_hours(peak_tflops, mfu) for r in rows)
    too_big = [r.name for r in rows if not r.fits(device_memory_gib)]
    backends = sorted({r.backend for r in rows})
    lines += ["", f"Total for {len(rows)} cells: {total:.4g} device-hours of pretraining at {peak_tflops:g} "
                  f"TFLOP/s peak x {mfu:.0%} MFU (probing not included).",
              f"XLA memory estimated on {', '.join(backends) or '-'}; "
              + (f"{len(too_big)} {'cell does' if len(too_big) == 1 else 'cells do'} not fit {device_memory_gib:g} GiB: "
                 f"{', '.join(too_big)}."
                 if too_big else f"every cell fits {device_memory_gib:g} GiB.")]
    return "\n".join(lines)
