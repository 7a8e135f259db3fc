"""One loader: a pretraining run, a saved folder or a released model (`zoo:NAME`) -> what it holds.

    network = loader.load_pretrained("runs/cl")            # a pretraining run's latest checkpoint,
    network = loader.load_pretrained("zoo:cl-resnet18-ptbxl")  # or an exported / released encoder
    model = loader.load_trained("zoo:ptbxl-superclass")    # an encoder with trained heads
    thing = loader.load(spec)                               # either, by what `spec` names

Three things a path may hold, told apart by their files:
  - a pretraining run (experiments/pretrain.py --workdir): config.json + checkpoints/ (Orbax);
  - an exported pretrained network (`export_pretrained`): pretrained.json + variables.msgpack,
    the format of released encoders: no optimiser state, loads without Orbax;
  - a model with heads (probe --config.save_model, annotate.train_heads): classifier.json +
    variables.msgpack (ecgjax.downstream.model).
`zoo:NAME` is the folder of a released model, its files checked against their SHA-256 first
(ecgjax.zoo). Every consumer (probe, embed, diagnose, annotate, predict, the Python API and a
pretraining run's init_from) loads through here; mistakes are one UserError naming the flag.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import ml_collections
from flax import serialization

from ecgjax import zoo
from ecgjax.cli import closest_path
from ecgjax.data.resolve import open_store
from ecgjax.data.errors import ECGInputError
from ecgjax.downstream import model as model_lib
from ecgjax.errors import UserError
from ecgjax.train import loop

PRETRAINED_FILE = "pretrained.json"
VARIABLES_FILE = model_lib.VARIABLES_FILE
WHAT_TO_PASS = ("pass a pretraining run (the --workdir of experiments/pretrain.py), a saved model folder, "
                "or a released model zoo:NAME")


@dataclasses.dataclass
class PretrainedNetwork:
    """A pretraining run's network: its config and the PretrainModel's variables.

    config: the pretraining config (model, objective, data.fs, data.segment_s);
    variables: {'params': {'encoder', heads...}, ['batch_stats']}; source: where it came from;
    last_logged: its last logged step's metrics ({} if unknown).
    """

    config: ml_collections.ConfigDict
    variables: dict
    source: str
    last_logged: dict = dataclasses.field(default_factory=dict)

    @property
    def encoder_config(self) -> dict:
        return self.config.model.encoder.to_dict()

    @property
    def encoder_variables(self) -> dict:
        """The encoder's own {'params', ['batch_stats']} (projection, decoder dropped)."""
        return loop.encoder_variables(self.variables)

    @property
    def method(self) -> str:
        return str(self.config.objective.method).upper()

    @property
    def fs(self) -> float:
        return float(self.config.data.fs)

    @property
    def num_samples(self) -> int:
        """The encoder's input length in samples at `fs`."""
        return int(self.encoder_config.get("num_samples") or round(self.fs * self.config.data.segment_s))


def kind_of(path) -> str | None:
    """'run', 'pretrained' or 'model' by the files in folder `path`; None for anything else."""
    path = pathlib.Path(path)
    if (path / PRETRAINED_FILE).is_file():
        return "pretrained"
    if model_lib.is_saved(path):
        return "model"
    if (path / "config.json").is_file():
        return "run"
    return None


def resolve(spec: str, flag: str = "--checkpoint") -> tuple[str, pathlib.Path]:
    """(kind, folder) of `spec`: a zoo name (checked) or a path; UserError naming `flag=spec` otherwise."""
    if not spec:
        raise UserError(f"{flag} is empty; {WHAT_TO_PASS}")
    if zoo.is_zoo(spec):
        folder = zoo.verified_path(spec)
        return kind_of(folder), folder
    path = pathlib.Path(os.path.expanduser(str(spec))).absolute()
    if not path.exists():
        raise UserError(f"{flag}={spec}: no such directory{closest_path(spec)}; {WHAT_TO_PASS}")
    kind = kind_of(path) if path.is_dir() else None
    if kind in (None, "run"):  # the run checks say what is wrong with a path that is no model
        path = pathlib.Path(loop.resolve_run_dir(str(path) if kind else str(spec), flag))
        kind = "run"
    return kind, path


def pretrain_config(spec: str, flag: str = "--checkpoint") -> ml_collections.ConfigDict:
    """The pretraining config of a run / exported / released network, without loading weights."""
    kind, path = resolve(spec, flag)
    if kind == "run":
        return loop.load_config(str(path))
    if kind == "pretrained":
        return ml_collections.ConfigDict(json.loads((path / PRETRAINED_FILE).read_text())["config"])
    raise UserError(f"{flag}={spec}: a model with trained heads, not a pretrained encoder; {WHAT_TO_PASS}")


def load_pretrained(spec: str, flag: str = "--checkpoint") -> PretrainedNetwork:
    """The pretrained network `spec` names (run: its latest checkpoint)."""
    kind, path = resolve(spec, flag)
    if kind == "run":
        config, _, variables = loop.restore_pretrained(str(path))
        return PretrainedNetwork(config, jax.device_get(variables), str(path), last_logged(path))
    if kind == "model":
        raise UserError(f"{flag}={spec}: a model with trained heads (classifier.json), not a pretraining run; "
                        f"{WHAT_TO_PASS} (a model's encoder: --config.init_from / ecgjax.load(...).embed)")
    saved = json.loads((path / PRETRAINED_FILE).read_text())
    variables = _read_variables(path)
    return PretrainedNetwork(ml_collections.ConfigDict(saved["config"]), variables, str(spec),
                             saved.get("last_logged", {}))


def load_trained(spec: str, flag: str = "--checkpoint", batch_size: int = 64) -> model_lib.TrainedModel:
    """The model with heads `spec` names."""
    kind, path = resolve(spec, flag)
    if kind != "model":
        raise UserError(f"{flag}={spec}: a pretrained encoder without trained heads; pass a model saved by "
                        f"experiments/probe.py --config.save_model=True or a released model with heads "
                        f"({', '.join(n for n in zoo.names() if zoo.entry(n)['kind'] == 'model')})")
    try:
        return model_lib.load_model(path, batch_size)
    except ECGInputError as error:
        raise UserError(f"{flag}={spec}: {error}") from None


def load(spec: str, flag: str = "--checkpoint") -> PretrainedNetwork | model_lib.TrainedModel:
    """Whatever `spec` names: a TrainedModel for a model with heads, a PretrainedNetwork otherwise."""
    kind, _ = resolve(spec, flag)
    return load_trained(spec, flag) if kind == "model" else load_pretrained(spec, flag)


def open_task_store(pretrain_config: ml_collections.ConfigDict, given: str, flag: str, source: str = ""):
    """The store a downstream command reads: `given`, else the one the network was pretrained on (the
    synthetic cohort for a run without one). An exported or released network carries no store
    (a path on another machine): then `flag` must name one."""
    if not given and not pretrain_config.data.store and source and kind_of_spec(source) == "pretrained":
        raise UserError(f"{flag} is empty: {source} carries no data of its own; pass {flag}=STORE, a store "
                        f"ingested at {float(pretrain_config.data.fs):g} Hz (python -m ecgjax.data.ingest ...)")
    return open_store(pretrain_config.data, store=given)


def kind_of_spec(spec: str) -> str | None:
    """kind_of for a zoo name (from the registry, no checksums) or a path."""
    if zoo.is_zoo(spec):
        return {"encoder": "pretrained", "model": "model"}[zoo.entry(spec)["kind"]]
    return kind_of(pathlib.Path(os.path.expanduser(spec)))


def export_pretrained(network: PretrainedNetwork, folder) -> pathlib.Path:
    """Writes `network` as pretrained.json (config, pretraining loss) + variables.msgpack."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PRETRAINED_FILE).write_text(json.dumps(
        {"config": json.loads(network.config.to_json_best_effort()), "last_logged": network.last_logged},
        indent=1))
    state = serialization.to_state_dict(jax.device_get(network.variables))
    (folder / VARIABLES_FILE).write_bytes(serialization.msgpack_serialize(state))
    return folder


def _read_variables(folder: pathlib.Path) -> dict:
    path = folder / VARIABLES_FILE
    try:
        return serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the folder holds no weights") from None
    except Exception as error:  # msgpack's own errors on a truncated or corrupt file
        raise UserError(f"{path}: unreadable weights ({type(error).__name__}); save or export it again") from None


def last_logged(run) -> dict:
    """The last line of a run's metrics.jsonl (its loss terms, lr, ...; {} if none)."""
    path = pathlib.Path(run) / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}
