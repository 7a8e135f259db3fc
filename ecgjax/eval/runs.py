"""Run records: one JSON per downstream run, written by probe and read by the report.

Run JSON schema ("ecgjax.eval.run/1"), written by `write_run_json`, read by `read_runs`::

    {
      "schema": "ecgjax.eval.run/1",
      "cell": {"patch": 125, "depth": 4, "width": 512, "method": "HL"},
                                  # encoder cell; method CL|GL|HL|... (null for baselines)
      "mode": "linear",           # linear | finetune | random_init (linear probe on a randomly
                                  # initialised encoder) | supervised (trained end to end from scratch)
      "task": "MI",               # one downstream task; a multilabel run may name a task group
      "task_type": "binary",      # binary | multiclass | multilabel | regression
      "data_fraction": 1.0,       # share of labelled training patients (protocols.subsample_patients)
      "case_ratio": null,         # target prevalence (protocols.case_ratio_subsample); null = natural
      "seed": 0,                  # downstream seed (data subsample + head init + order)
      "pretrain_loss": {"patient": 135.0, "sample": 169.3, "reconstruction": 16.9},
                                  # final pretraining loss parts of the encoder; null when absent
      "metrics": {"auroc": 0.83, "auprc": 0.61, "f1": 0.55, "fmax": 0.60},
                                  # metrics.compute_metrics output; multilabel runs use
                                  # "auroc/MI", "auprc/MI", ... and are split into per-task rows
      "ci": {"auroc": [0.80, 0.86]},   # optional 95% bootstrap interval per metric
      "extra": {}                 # optional free-form (checkpoint path, step, wall time, ...)
    }

`read_runs(workdir)` walks every *.json below workdir and keeps those with this schema.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from ecgjax.data.errors import ECGInputError

SCHEMA = "ecgjax.eval.run/1"
MODES: tuple[str, ...] = ("linear", "finetune", "random_init", "supervised")
LOSS_PARTS: tuple[str, ...] = ("patient", "sample", "reconstruction")
CELL_KEYS: tuple[str, ...] = ("patch", "depth", "width", "method")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One downstream run: which encoder, how it was trained, on what, and how it scored."""

    cell: dict
    mode: str
    task: str
    seed: int
    metrics: dict
    task_type: str = "binary"
    data_fraction: float = 1.0
    case_ratio: float | None = None
    pretrain_loss: dict = dataclasses.field(default_factory=dict)
    ci: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        missing = [k for k in CELL_KEYS if k not in self.cell]
        if missing:
            raise ValueError(f"cell lacks {missing}")
        if not 0.0 < float(self.data_fraction) <= 1.0:
            raise ValueError(f"data_fraction must be in (0, 1], got {self.data_fraction}")

    def to_json(self) -> dict:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def run_filename(run: RunRecord) -> str:
    """A path, relative to the workdir, unique per (cell, mode, task, fraction, ratio, seed)."""
    c = run.cell
    ratio = "natural" if run.case_ratio is None else f"{run.case_ratio:g}"
    return (f"eval/{run.mode}/{c['method'] or 'none'}_p{c['patch']}_d{c['depth']}_w{c['width']}/"
            f"{run.task}_frac{run.data_fraction:g}_ratio{ratio}_seed{run.seed}.json")


def write_run_json(workdir, run: RunRecord) -> pathlib.Path:
    """Write one run as JSON under workdir (see `run_filename`); returns the path."""
    path = pathlib.Path(workdir) / run_filename(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True, allow_nan=True))
    return path


def read_runs(workdir) -> list[RunRecord]:
    """Every run JSON below workdir (files of other schemas are skipped).

    A file claiming this schema but unreadable raises ECGInputError naming it.
    """
    runs = []
    for path in sorted(pathlib.Path(workdir).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if SCHEMA in path.read_text(errors="ignore"):
                raise ECGInputError(path, f"run JSON does not parse: {err}") from err
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            continue
        try:
            runs.append(RunRecord.from_json(data))
        except (TypeError, ValueError) as err:
            raise ECGInputError(path, f"malformed run record: {err}") from err
    return runs
