"""The grid's cells and the configs each one runs: its pretraining and its probes.

    cells = grid_cells(grid_config)                 # 81 Cells, method outermost (003 App. C order)
    pretrain_config(grid_config, cells[67])         # configs/hybrid.py at patch 125, depth 4, width 512
    probe_config(grid_config, "linear", "MI", pretrain_dir, cell)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import pathlib

import ml_collections

PRETRAIN_STAGE = "pretrain"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid point: an SSL method on a ViT1D of the given patch, depth and width."""

    method: str
    patch: int
    depth: int
    width: int

    @property
    def name(self) -> str:
        """'hl-p125-d4-w512'."""
        return f"{self.method}-p{self.patch}-d{self.depth}-w{self.width}"

    @property
    def report_cell(self) -> dict:
        """The run JSON 'cell' (ecgjax.eval.report): method upper-case as in 003's tables."""
        return dict(patch=self.patch, depth=self.depth, width=self.width, method=self.method.upper())

    @property
    def pretrain_arg(self) -> str:
        return f"patch={self.patch},depth={self.depth},width={self.width}"


def grid_cells(config: ml_collections.ConfigDict) -> list[Cell]:
    """Every cell of the grid, method outermost then patch, depth, width (003 App. C order)."""
    axes = config.axes
    return [Cell(str(m), int(p), int(d), int(w))
            for m, p, d, w in itertools.product(axes.method, axes.patch, axes.depth, axes.width)]


def probe_stages(config: ml_collections.ConfigDict) -> list[str]:
    """'<mode>:<task>' for every probe mode and task, in run order."""
    return [f"{mode}:{task}" for mode in config.probe.modes for task in config.probe.tasks]


def cell_stages(config: ml_collections.ConfigDict) -> list[str]:
    """Every stage of a cell, in run order: pretraining, then the probes."""
    return [PRETRAIN_STAGE, *probe_stages(config)]


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a configs/*.py file given by path."""
    spec = importlib.util.spec_from_file_location(f"_sweep_config_{pathlib.Path(path).stem}", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str = "") -> None:
    """Sets nested `overrides` into `config`; a key `config` lacks is a ValueError."""
    items = overrides.items() if overrides is not None else ()
    for key, value in items:
        path = f"{where}{key}"
        if key not in config:
            raise ValueError(f"override {path!r}: the config has no such field")
        if isinstance(config[key], ml_collections.ConfigDict):
            apply_overrides(config[key], value, f"{path}.")
        else:
            config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def pretrain_config(config: ml_collections.ConfigDict, cell: Cell) -> ml_collections.ConfigDict:
    """The cell's method config at its patch/depth/width, with the grid's data, steps and overrides."""
    if cell.method not in config.method_configs:
        raise ValueError(f"no pretraining config for method {cell.method!r}")
    arg = cell.pretrain_arg + (",runlocal" if config.runlocal else "")
    c = load_config_file(config.method_configs[cell.method], arg)
    c.data.store = config.data.store
    c.seed = config.pretrain.seed
    c.train.num_steps = config.pretrain.num_steps
    c.train.batch_size = config.pretrain.batch_size
    apply_overrides(c, config.pretrain.overrides)
    return c


def probe_config(config: ml_collections.ConfigDict, mode: str, task: str,
                 pretrain_dir, cell: Cell | None = None) -> ml_collections.ConfigDict:
    """configs/probe.py's config for one (mode, task) on the cell's pretrained encoder; runs are
    labelled with the grid cell (under `runlocal` the encoder itself is shrunk)."""
    c = load_config_file(config.probe.config, config.probe.arg)
    if cell is not None:
        c.cell.update(cell.report_cell)
    c.checkpoint = str(pretrain_dir)
    c.init = "pretrained"
    c.mode = mode
    c.task = task
    c.seeds = int(config.probe.seeds)
    c.first_seed = int(config.probe.first_seed)
    c.data.store = config.data.store
    apply_overrides(c, config.probe.overrides)
    return c
