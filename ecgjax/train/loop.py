"""The pretraining loop: data -> jitted step -> logs and checkpoints, resumable after a kill.

    pretrain(config, workdir)

reads batches from a Grain iterator, runs the compiled data-parallel step, writes metrics
(JSONL, TensorBoard, console) and saves Orbax checkpoints of the state together with the
iterator position. Started again on the same workdir it resumes at the last checkpoint with
the same data order. A non-finite loss stops the run before anything of that step is saved.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import ml_collections
import numpy as np

from ecgjax.data import pipeline, resolve
from ecgjax.data.store import ECGStore
from ecgjax.methods import registry
from ecgjax.train import checkpoint, mesh as mesh_lib, multihost, optim, state as state_lib, step as step_lib
from ecgjax.train.metrics_log import MetricsLog
from ecgjax.errors import UserError


logger = logging.getLogger("ecgjax")

class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Rejects absurd settings up front with a message naming the field."""
    checks = [
        (config.train.batch_size > 0, f"train.batch_size={config.train.batch_size} must be > 0"),
        (config.train.num_steps > 0, f"train.num_steps={config.train.num_steps} must be > 0"),
        (0.0 < config.objective.mask_ratio < 1.0,
         f"objective.mask_ratio={config.objective.mask_ratio} must be in (0, 1)"),
        (config.objective.temperature > 0, f"objective.temperature={config.objective.temperature} must be > 0"),
        (config.data.fs > 0, f"data.fs={config.data.fs} must be > 0"),
        (config.data.segment_s > 0, f"data.segment_s={config.data.segment_s} must be > 0"),
        (config.model.encoder.num_samples == round(config.data.fs * config.data.segment_s),
         f"model.encoder.num_samples={config.model.encoder.num_samples} must equal "
         f"data.fs * data.segment_s = {config.data.fs * config.data.segment_s:g}"),
    ]
    checks += registry.get(config.objective.method).checks(config)  # an unknown method: its own error
    for ok, message in checks:
        if not ok:
            raise UserError(f"bad config: {message}")


def loader_views(objective: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The host crops the method reads (ecgjax.data.pipeline.VIEWS)."""
    return registry.get(objective.method).loader_views(objective)


def make_dataset(config: ml_collections.ConfigDict, store: ECGStore, *, seed: int | None = None,
                 shard: tuple[int, int] | None = None):
    """The Grain dataset of one process: its shard of the patients, its share of each global batch.

    shard: (index, count), by default (jax.process_index(), jax.process_count()); the global batch
    of a step is the concatenation of the count shards' batches, in shard order.
    """
    index, count = shard if shard is not None else (jax.process_index(), jax.process_count())
    if config.train.batch_size % count:
        raise UserError(f"train.batch_size={config.train.batch_size} is not divisible by the {count} processes; "
                        f"pass a multiple of {count}")
    cpc = config.objective.cpc
    try:
        return pipeline.make_pretrain_dataset(
            store, views=loader_views(config.objective), batch_size=config.train.batch_size // count,
            segment_s=config.data.segment_s, seed=config.seed if seed is None else seed,
            split=config.data.split or None,
            num_workers=config.data.num_workers, shard_index=index, shard_count=count,
            dtype=store.config["dtype"],  # stored samples as they are: the step casts them on the device
            cpc=pipeline.CPCSpec(n_context=cpc.n_context, frame_s=cpc.frame_s, offset=cpc.offset))
    except pipeline.TooFewPatients as error:
        raise UserError(too_few_patients(config, error, store.fs)) from None


def too_few_patients(config: ml_collections.ConfigDict, error: pipeline.TooFewPatients, fs: float) -> str:
    """What to change when a split cannot fill one batch: a smaller batch, or more records."""
    data = config.data
    where = (f"--config.data.store={data.store}" if data.store else
             f"the synthetic cohort (--config.data.synthetic.num_patients={data.synthetic.num_patients})")
    split = f"split {error.split!r}" if error.split else "the store"
    usable = error.patients // error.shard_count * error.shard_count
    smaller = (f"--config.train.batch_size={usable} or less" if usable else "a smaller --config.train.batch_size")
    more = ("a larger --config.data.synthetic.num_patients" if not data.store else
            "a store with more patients (ingest more records; a corpus of a few patients needs --val_fraction / "
            "--test_fraction that leave train some)")
    return (f"{where}: {split} holds {error.patients} patients with a record of at least "
            f"{error.needed / fs:g} s ({error.needed} samples), fewer than --config.train.batch_size="
            f"{config.train.batch_size} (each batch takes one segment of as many different patients). Pass {smaller}, "
            f"or {more}")


def open_store_in_turn(data: ml_collections.ConfigDict) -> ECGStore:
    """`resolve.open_store` in every process, process 0 first: it alone builds a missing synthetic
    cohort (several builders would write the same cache folder at once); the others then open it
    (or, on a host that does not share that folder, build their own identical copy)."""
    if jax.process_count() == 1:
        return resolve.open_store(data)
    store = resolve.open_store(data) if multihost.is_main() else None
    multihost.barrier("ecgjax-open-store")
    return store if store is not None else resolve.open_store(data)


class Trainer:
    """Model, optimizer, mesh and compiled step for one config (also used by the benchmark)."""

    def __init__(self, config: ml_collections.ConfigDict, num_devices: int | None = None):
        validate_config(config)
        self.config = config
        self.mesh = mesh_lib.make_mesh(num_devices or config.train.get("num_devices") or None)
        mesh_lib.check_batch_divisible(config.train.batch_size, self.mesh)
        self.model = state_lib.build_model(config)
        self.optimizer, self.schedule = optim.make_optimizer(config.optim, config.train.num_steps)
        replicated = mesh_lib.replicated_sharding(self.mesh)
        self.init_state = jax.jit(
            lambda rng: state_lib.init_state(config, self.model, self.optimizer, rng),
            out_shardings=replicated)
        step = step_lib.make_train_step(self.model, config, self.optimizer, self.schedule)
        self.train_step = step_lib.jit_train_step(step, replicated, replicated)

    def new_state(self):
        return self.init_state(jax.random.PRNGKey(self.config.seed))

    def start_from(self, state, variables: dict, source: str):
        """`state` with the parameters (and BatchNorm statistics) of another network of the same
        architecture, e.g. a released encoder (`variables` {'params', ['batch_stats']}); the
        optimiser starts fresh and the method's extra state (a momentum encoder) from them."""
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        mine = jax.tree_util.tree_structure(state.params)
        if jax.tree_util.tree_structure(params) != mine or any(
                np.shape(a) != b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params))):
            raise UserError(f"--config.init_from={source}: its network differs from the one this config builds "
                            f"(other encoder, heads or objective); pretrain with the config it was built with "
                            f"(its pretrained.json / config.json) and change only data and schedule")
        method = registry.get(self.config.objective.method)
        replicated = mesh_lib.replicated_sharding(self.mesh)
        params, batch_stats = jax.device_put((params, batch_stats), replicated)
        return state.replace(params=params, batch_stats=batch_stats or state.batch_stats,
                             opt_state=jax.jit(self.optimizer.init, out_shardings=replicated)(params),
                             moco=method.init_extra(self.config, params, batch_stats or state.batch_stats))

    def step(self, state, host_batch: dict):
        return self.train_step(state, mesh_lib.shard_batch(host_batch, self.mesh))


# Keys that may change between a run and its resumption: they alter neither the model, the
# optimizer, the objective nor the data order. `arg` and `runlocal` only describe how the config
# was built; the values they set are compared themselves. Not data.num_workers: Grain's saved
# iterator state only restores into an iterator with the same number of workers.
RESUMABLE_KEYS = frozenset({
    "arg", "runlocal", "cpu", "data.synthetic.cache_dir", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.num_devices",
})


def _flat(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """'key: saved X, now Y' for every key of a run's saved config.json that `config` changes,
    apart from RESUMABLE_KEYS (and train.num_steps under a constant schedule, which ignores it)."""
    now = _flat(json.loads(config.to_json_best_effort()))  # same JSON types as the saved file
    before = _flat(saved)
    allowed = set(RESUMABLE_KEYS)
    if now.get("optim.schedule") == before.get("optim.schedule") == "constant":
        allowed.add("train.num_steps")  # training longer under a constant lr is the same run
    absent = object()
    before.setdefault("init_from", "")  # runs saved before the key existed started from scratch

    def show(value) -> str:
        return "(absent)" if value is absent else json.dumps(value)

    return [f"{key}: saved {show(before.get(key, absent))}, now {show(now.get(key, absent))}"
            for key in sorted(set(before) | set(now))
            if key not in allowed and before.get(key, absent) != now.get(key, absent)]


def _checkpoint_steps(workdir: str) -> list[int]:
    """Saved checkpoint steps in workdir/checkpoints, read without creating anything."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to resume a run in `workdir` under a config that changes what it trains.

    Checked before anything is written: a mismatch would overwrite config.json and then fail to
    restore (or silently mix two runs). No checkpoint yet means nothing to protect.
    """
    path = os.path.join(workdir, "config.json")
    steps = _checkpoint_steps(workdir)
    if not steps or not os.path.isfile(path):
        return
    with open(path) as f:
        differences = config_differences(json.load(f), config)
    if differences:
        lines = "\n".join(f"  {line}" for line in differences)
        raise UserError(
            f"--workdir={workdir} holds a run (checkpoints up to step {steps[-1]}) of another config; "
            f"resuming it would mix two runs. Differing keys:\n{lines}\n"
            f"Use a new --workdir for this config, or resume with the same flags as before "
            f"(saved in {path}).")


def resolve_run_dir(path: str, flag: str | None = None) -> str:
    """The absolute pretraining workdir at `path`, checked before anything is loaded from it.

    A UserError names the path (as `flag=path` when `flag` is given) and what to pass instead when
    it is missing, empty, not a run, a run's checkpoints/ folder (or a step in it), or a run that
    has saved no checkpoint yet.
    """
    name = f"{flag}={path}" if flag else str(path)
    want = "pass the --workdir of a pretraining run (experiments/pretrain.py)"
    if not path:
        raise UserError(f"{flag or 'checkpoint'} is empty; {want}")
    run = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(run):
        problem = "no such directory" if not os.path.exists(run) else "a file, not a directory"
        raise UserError(f"{name}: {problem}; {want}")
    for folder in (run, os.path.dirname(run)):  # RUN/checkpoints or RUN/checkpoints/STEP
        parent = os.path.dirname(folder)
        if os.path.basename(folder) == "checkpoints" and os.path.isfile(os.path.join(parent, "config.json")):
            instead = f"{flag}={parent}" if flag else parent
            raise UserError(f"{name}: this is the run's checkpoints folder, not the run; pass {instead}")
    if not os.path.isfile(os.path.join(run, "config.json")):
        problem = "an empty directory" if not os.listdir(run) else "not a pretraining run (no config.json)"
        raise UserError(f"{name}: {problem}; {want}")
    if not _checkpoint_steps(run):
        raise UserError(f"{name}: the run has saved no checkpoint yet (none in {os.path.join(run, 'checkpoints')}); "
                        f"let it run past train.checkpoint_every steps, or {want} that has one")
    return run


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


def check_init_from(config: ml_collections.ConfigDict, initial) -> None:
    """--config.init_from (`initial`, an ecgjax.loader.PretrainedNetwork) must be a network this
    config builds, pretrained at the config's rate."""
    if config.model.to_dict() != initial.config.model.to_dict() or \
            config.objective.method != initial.config.objective.method:
        raise UserError(f"--config.init_from={config.init_from}: a {initial.method} "
                        f"{initial.encoder_config['name']} network that this config does not build; start from "
                        f"the config it was built with ({initial.config.arg or 'its pretrained.json'}), changing "
                        f"only data and schedule")
    if abs(float(config.data.fs) - initial.fs) > 1e-6:
        raise UserError(f"--config.init_from={config.init_from}: pretrained at {initial.fs:g} Hz, this config "
                        f"reads {float(config.data.fs):g} Hz; ingest at --target_fs={initial.fs:g}")


def pretrain(config: ml_collections.ConfigDict, workdir: str, initial=None) -> dict:
    """Runs (or resumes) pretraining in `workdir`; returns the last step's metrics.

    initial: a network (ecgjax.loader.PretrainedNetwork, from config.init_from) whose weights a
    new run starts from; a resumed run continues from its own checkpoint instead.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    check_resumable(config, workdir)
    if initial is not None:
        check_init_from(config, initial)
    trainer = Trainer(config)
    store = open_store_in_turn(config.data)
    labels = {c: f"{store.metadata[c].mean():.1%}" for c in store.label_columns()}
    logger.info("data %s: %d records of %d patients at %g Hz (%d patients in split %r); label "
                "prevalence %s", store.path, len(store), store.num_patients, store.fs,
                len(store.split_patients(config.data.split)) if config.data.split else store.num_patients,
                config.data.split, labels)
    data_iter = iter(make_dataset(config, store))  # refuses a split smaller than a batch
    os.makedirs(workdir, exist_ok=True)  # after the checks above, so a mistake leaves no empty workdir
    if jax.process_count() > 1:
        logger.info("%d processes, %d devices each: every process reads its own shard of the patients "
                    "and %d segments of each batch", jax.process_count(), jax.local_device_count(),
                    config.train.batch_size // jax.process_count())
    is_main = multihost.is_main()
    if is_main:
        save_config(config, workdir)

    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   keep=config.train.keep_checkpoints,
                                   save_every=config.train.checkpoint_every)
    state = trainer.new_state()
    if ckpt.latest_step() is not None:
        state, data_iter = ckpt.restore(state, data_iter)
    elif initial is not None:
        state = trainer.start_from(state, initial.variables, config.init_from)
        logger.info("starting from the weights of %s", config.init_from)
    start = int(state.step)
    total = config.train.num_steps
    log = MetricsLog(workdir, total, enabled=is_main, start_step=start)
    logger.info("pretraining %s/%s: %d parameters, %d devices, batch %d, steps %d..%d, data %s",
                 config.objective.method, config.model.encoder.name,
                 state_lib.count_params(state.params), trainer.mesh.size, config.train.batch_size,
                 start, total, config.data.store or "synthetic cohort")
    metrics = {}
    pending = []  # (step, device metrics) not read back yet
    try:
        last = time.perf_counter()
        for step in range(start + 1, total + 1):
            batch = next(data_iter)
            state, device_metrics = trainer.step(state, batch)
            pending.append((step, device_metrics))
            # Metrics come back to the host only at log steps and before a save: reading them every
            # step would make the host wait for each step and serialise dispatch on an accelerator.
            logging_now = step % config.train.log_every == 0 or step == total
            if logging_now or ckpt.manager.should_save(step):
                metrics, last = read_back(pending, config.train.batch_size, last, log, ckpt)
                pending = []
                if logging_now:
                    log.console(step, metrics)
            ckpt.save(step, state, data_iter, force=(step == total))
    finally:
        ckpt.close()
        log.close()
    return metrics


def read_back(pending: list, batch_size: int, since: float, log: MetricsLog,
              ckpt: checkpoint.Checkpointer) -> tuple[dict, float]:
    """Writes the metrics of the pending steps (one transfer, in step order); returns the last
    step's metrics and the time they arrived.

    A non-finite loss raises NonFiniteLossError at the first step that has one, before the caller
    can save: the state it would save already holds that step's update. segments_per_s is the rate
    of the pending steps since `since` (the previous read-back), logged with each of them.
    """
    values = jax.device_get([m for _, m in pending])  # waits for the last pending step
    now = time.perf_counter()
    segments_per_s = batch_size * len(pending) / (now - since)
    metrics = {}
    for (step, _), step_values in zip(pending, values):
        metrics = {k: float(v) for k, v in step_values.items()}
        if not math.isfinite(metrics["loss"]):
            raise NonFiniteLossError(
                f"loss is {metrics['loss']} at step {step} ({metrics}); stopping. The last good "
                f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is left intact.")
        metrics["segments_per_s"] = segments_per_s
        log.write(step, metrics)
    return metrics, now


def restore_pretrained(workdir: str, step: int | None = None):
    """(config, PretrainModel, variables) of a pretraining run's checkpoint, for evaluation."""
    workdir = resolve_run_dir(workdir)
    config = load_config(workdir)
    model = state_lib.build_model(config)
    optimizer, _ = optim.make_optimizer(config.optim, config.train.num_steps)
    template = jax.eval_shape(
        lambda: state_lib.init_state(config, model, optimizer, jax.random.PRNGKey(0)))
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        state = ckpt.restore_state_only(template, step)
    finally:
        ckpt.close()
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return config, model, variables


def encoder_variables(variables: dict) -> dict:
    """The encoder's own variables out of a PretrainModel's (projection head etc. dropped)."""
    return {kind: tree["encoder"] for kind, tree in variables.items() if "encoder" in tree}
