"""Probe / fine-tune driver: encoder from a checkpoint (or a baseline) -> task data -> runs -> JSON.

    runs = run_probe(config, output_dir)      # config: configs/probe.py

The recipe (ecgjax.eval.recipe.Recipe.from_config: config.recipe's stages, or config.mode's) is
checked first, with every setting, in one error. For each seed: the training split is thinned at
patient level (protocols: data fraction, case ratio; validation and test untouched), the recipe
trains a model (Recipe.train: linear head, fine-tune on random window crops, WiSE-FT,
self-distillation, as listed), every test record is scored by aggregating its
sliding windows, test metrics (metrics.compute_metrics) and patient-level bootstrap CIs are
computed, F1 is also reported with per-class thresholds chosen on the validation records
(thresholds.tuned_metrics), and one run JSON is written (runs.write_run_json). The mean ± std over seeds goes to
output_dir/summary_<task>_<mode>.json.

Report modes: a pretrained encoder -> 'linear' or 'finetune' (whether a stage trains its
weights); random init -> 'random_init' (linear probe on random weights, 003 Table 4 baseline) or
'supervised' (all weights from scratch, Table 5 baseline, as init 'supervised').
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import pathlib
import time
import warnings

import ml_collections
import numpy as np

from ecgjax import loader
from ecgjax.data.store import ECGStore
from ecgjax.downstream.network import adapt_encoder
from ecgjax.errors import UserError
from ecgjax.eval import folds as folds_lib, metrics as metrics_lib, protocols, runs as runs_lib, thresholds
from ecgjax.eval.recipe import Recipe
from ecgjax.eval.task_data import TaskArrays, concatenate, load_task_arrays, load_unlabelled_arrays
from ecgjax.eval.tasks import Task, get_task

logger = logging.getLogger("ecgjax")


def _macro_auprc(y_true, y_score) -> float:
    values = [metrics_lib.auprc(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# Metrics with bootstrap CIs, per task type (names as in compute_metrics).
CI_METRICS = {
    "binary": {"auroc": metrics_lib.auroc, "auprc": metrics_lib.auprc},
    "multilabel": {"macro_auroc": metrics_lib.macro_auroc, "macro_auprc": _macro_auprc},
    "multiclass": {"macro_f1": metrics_lib.macro_f1},
    "regression": {"mae": metrics_lib.mae, "r2": metrics_lib.r2},
}


@dataclasses.dataclass
class EncoderSource:
    """Where the encoder comes from: its config, weights (None = random) and pretraining facts."""

    config: dict
    variables: dict | None
    pretrain_config: ml_collections.ConfigDict
    method: str | None
    pretrain_loss: dict
    checkpoint: str


def load_pretrain_config_file(spec: str) -> ml_collections.ConfigDict:
    """'configs/hybrid.py[:arg]' -> that file's get_config(arg)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_pretrain_config", path)
    if module_spec is None or not os.path.isfile(path):
        raise UserError(f"--config.encoder_config={spec}: pretraining config file {path} not found; "
                        f"pass one of configs/*.py[:arg]")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def recipe_for_leads(recipe: Recipe, source: EncoderSource, input_leads) -> Recipe:
    """The recipe with layer_decay_new_leads as its fine-tune stages' layer decay when a pretrained
    encoder's first layer was cut (or widened) to other leads than it was trained on."""
    trained_leads = int(source.config.get("in_leads") or 12)
    if source.variables is None or trained_leads == len(input_leads):
        return recipe
    logger.info("leads %d -> %d: layer-wise lr decay of optim.layer_decay_new_leads", trained_leads, len(input_leads))
    return recipe.for_new_leads()


def load_encoder(config: ml_collections.ConfigDict) -> EncoderSource:
    """The checkpoint's encoder (a pretraining run, an exported or a released encoder; weights only
    for init 'pretrained'), or the architecture of config.encoder_config when no checkpoint is
    given (baselines only)."""
    if config.checkpoint:
        network = loader.load_pretrained(config.checkpoint, "--config.checkpoint")
        pretrained = config.init == "pretrained"
        return EncoderSource(network.encoder_config, network.encoder_variables if pretrained else None,
                             network.config, network.method if pretrained else None,
                             {k: float(v) for k, v in network.last_logged.items() if k in runs_lib.LOSS_PARTS}
                             if pretrained else {}, network.source)
    if config.init == "pretrained":
        raise UserError("--config.checkpoint is empty, but --config.init=pretrained needs it: pass the "
                        "--workdir of a pretraining run or a released encoder (zoo:NAME), or "
                        "--config.init=random / supervised for a baseline")
    pretrain_config = load_pretrain_config_file(config.encoder_config)
    return EncoderSource(pretrain_config.model.encoder.to_dict(), None, pretrain_config, None, {}, "")


def check_rate(store: ECGStore, pretrain_config, checkpoint: str = "") -> None:
    """A UserError unless the store is at the rate the pretrained weights saw (an architecture
    trained from scratch takes any rate)."""
    if abs(store.fs - float(pretrain_config.data.fs)) > 1e-6:
        encoder = f"the encoder of {checkpoint}" if checkpoint else "the encoder"
        raise UserError(f"{store.path}: store at {store.fs:g} Hz but {encoder} was pretrained at "
                        f"{pretrain_config.data.fs:g} Hz; ingest with "
                        f"--target_fs={pretrain_config.data.fs:g} to match")


def teacher_encoders(checkpoints, store: ECGStore, input_leads) -> list[tuple[dict, dict]]:
    """(encoder config, pretrained weights fitted to input_leads) of each of self-distillation's
    teacher checkpoints: where the other members of an ensemble teacher start, in turn."""
    starts = []
    for path in checkpoints:
        network = loader.load_pretrained(path, "--config.distill.teachers.checkpoints")
        check_rate(store, network.config, network.source)
        encoder_config, weights, _ = adapt_encoder(network.encoder_config, network.encoder_variables, input_leads)
        starts.append((encoder_config, weights))
    return starts


def unlabelled_store(path: str, store: ECGStore) -> ECGStore | None:
    """Self-distillation's pool store (--config.distill.pool.store) opened and checked against the
    task's store, or None."""
    if not path:
        return None
    pool = ECGStore(os.path.expanduser(path))
    flag = f"--config.distill.pool.store={path}"
    if pool.path.resolve() == store.path.resolve():
        raise UserError(f"{flag}: is the task's own store, whose validation and test records must stay unseen; "
                        f"its unlabelled training records are the pool already")
    if abs(pool.fs - store.fs) > 1e-6:
        raise UserError(f"{flag}: store at {pool.fs:g} Hz but the task's store {store.path} is at {store.fs:g} Hz; "
                        f"ingest it with --target_fs={store.fs:g}")
    return pool


def zero_fill_leads(arrays: TaskArrays, leads, to_leads) -> TaskArrays:
    """x [N, T, len(leads)] -> [N, T, len(to_leads)] with zeros in the leads not in `leads`."""
    if tuple(leads) == tuple(to_leads):
        return arrays
    x = np.zeros((*arrays.x.shape[:2], len(to_leads)), np.float32)
    for k, lead in enumerate(leads):
        x[:, :, list(to_leads).index(lead)] = arrays.x[:, :, k]
    return dataclasses.replace(arrays, x=x)


def report_mode(init: str, recipe: Recipe) -> str:
    """The report's arm: 'linear' / 'finetune' for a pretrained encoder, 'random_init' / 'supervised'
    without one, by whether a stage trains the encoder's weights."""
    if init == "pretrained":
        return "finetune" if recipe.trains_encoder else "linear"
    return "supervised" if recipe.trains_encoder else "random_init"


def configured_cell(config) -> dict | None:
    """config.cell when set (a sweep's grid cell), else None."""
    cell = config.get("cell")
    return dict(cell) if cell is not None and cell.get("method") else None


def cell_of(encoder_config: dict, method: str | None) -> dict:
    if str(encoder_config.get("name")) == "vit1d":
        return {"patch": encoder_config.get("patch"), "depth": encoder_config.get("depth"),
                "width": encoder_config.get("width"), "method": method}
    return {"patch": None, "depth": encoder_config.get("name"), "width": encoder_config.get("chan_start"),
            "method": method}


def scarce_training_set(train: TaskArrays, task: Task, data_fraction: float, case_ratio: float,
                        seed: int) -> TaskArrays:
    """Training records of a patient-level subsample (003 §4.5; fixed seed, nested across levels)."""
    keep = np.ones(len(train), bool)
    binary = train.y if task.type == "binary" else None
    if case_ratio:
        if task.type != "binary":
            raise ValueError(f"case_ratio needs a binary task; {task.name!r} is {task.type}")
        keep &= protocols.case_ratio_subsample(train.y, train.patient, case_ratio, seed)
    if data_fraction < 1.0:
        kept = train.subset(keep)
        inner = protocols.subsample_patients(kept.patient, data_fraction, seed, labels=binary[keep]
                                             if binary is not None else None)
        keep[np.flatnonzero(keep)[~inner]] = False
    return train.subset(keep)


def _task_for(config, store: ECGStore, window_s: float) -> Task:
    leads = [lead.strip() for lead in config.leads.split(",") if lead.strip()] if config.leads else None
    try:
        return get_task(config.task, list(store.metadata.columns), leads=leads, window_s=window_s)
    except UserError:
        raise
    except ValueError as error:  # unknown task name or leads
        given = f"--config.task={config.task}" + (f" --config.leads={config.leads}" if config.leads else "")
        raise UserError(f"{given}: {error}") from None


def test_metrics(task: Task, y_true, scores, patients, n_bootstrap: int, seed: int) -> tuple[dict, dict]:
    """(compute_metrics dict, {metric: [lower, upper]}) with a patient-level bootstrap."""
    names = task.output_names if task.type != "binary" else None
    values = metrics_lib.compute_metrics(task.type, y_true, scores, class_names=names)
    ci = {}
    if n_bootstrap:
        fns = dict(CI_METRICS[task.type])
        if task.type == "multilabel":  # per-label AUROC / AUPRC (the MI, STTC, CD, HYP of 003)
            for c, name in enumerate(task.output_names):
                fns[f"auroc/{name}"] = functools.partial(_column_metric, metrics_lib.auroc, c)
                fns[f"auprc/{name}"] = functools.partial(_column_metric, metrics_lib.auprc, c)
        if "challenge_f1" in values:  # CinC 2017's official score
            fns["challenge_f1"] = functools.partial(metrics_lib.challenge_f1, class_names=task.output_names)
        for name, fn in fns.items():
            interval = metrics_lib.bootstrap_ci(fn, y_true, scores, n=n_bootstrap, seed=seed, patient_ids=patients)
            ci[name] = [interval["lower"], interval["upper"]]
    return values, ci


def _column_metric(metric, column: int, y_true, y_score) -> float:
    return metric(np.asarray(y_true)[:, column], np.asarray(y_score)[:, column])


def run_probe(config: ml_collections.ConfigDict, output_dir) -> list[dict]:
    """Trains and evaluates one (encoder, task, mode, fraction, ratio) over config.seeds seeds.

    Returns the run records (report schema dicts), also written as JSON under output_dir.
    """
    output_dir = pathlib.Path(output_dir)
    recipe = Recipe.from_config(config)
    run_mode = report_mode(config.init, recipe)
    distill = recipe.stage("distill")
    source = load_encoder(config)
    store = loader.open_task_store(source.pretrain_config, config.data.store, "--config.data.store",
                                   config.checkpoint)
    window_s = int(source.config.get("num_samples", 2500)) / store.fs
    if source.variables is not None:
        check_rate(store, source.pretrain_config)
    task = _task_for(config, store, window_s)
    encoder_config, encoder_vars, input_leads = adapt_encoder(source.config, source.variables, task.leads,
                                                              config.lead_adaptation)
    # Self-distillation's inputs, before any data is read: bad paths stop here.
    members = teacher_encoders(distill.teachers.checkpoints, store, input_leads) if distill else []
    pool_store = unlabelled_store(distill.pool.store, store) if distill else None
    folds = config.folds.to_dict() if config.folds else None
    splits = folds_lib.resolve_splits(store, task, folds, flag="--config.folds",
                                      standard=folds_lib.is_standard(folds))
    record_s = float(config.protocol.record_s)
    data = {split: load_task_arrays(store, task, records, record_s=record_s) for split, records in splits.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    if pool_store is not None:
        data["pool"] = load_unlabelled_arrays(pool_store, task, data["train"].x.shape[1], data["train"].y,
                                              max_records=distill.pool.records)
        if not len(data["pool"]):
            raise UserError(f"--config.distill.pool.store={distill.pool.store}: no record of "
                            f"{pool_store.path} has every lead of the task ({', '.join(task.leads)})")
        logger.info("self-distillation pool: %d records of %s", len(data["pool"]), pool_store.path)
    data = {split: zero_fill_leads(arrays, task.leads, input_leads) for split, arrays in data.items()}
    task = dataclasses.replace(task, leads=input_leads)
    recipe = recipe_for_leads(recipe, source, input_leads)
    logger.info("probe %s on %s (%s): train %d, val %d, test %d records", run_mode, task.name, task.type,
                len(data["train"]), len(data["val"]), len(data["test"]))
    case_ratio = float(config.case_ratio) or None
    runs = []
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        started = time.perf_counter()
        train = scarce_training_set(data["train"], task, float(config.data_fraction), case_ratio or 0.0, seed)
        # Self-distillation's pool: the training records the subset left out, labels withheld, and
        # the records of --config.distill.pool.store.
        unlabelled = None
        if distill:
            left_out = data["train"].subset(~np.isin(data["train"].record_index, train.record_index))
            unlabelled = concatenate([left_out, data["pool"]]) if "pool" in data else left_out
        model, history = recipe.train(encoder_config, encoder_vars, train, data["val"], task, seed, fs=store.fs,
                                      pool=unlabelled, teacher_starts=members)
        val, test = data["val"], data["test"]
        score_records = functools.partial(model.record_scores, stride_s=float(config.protocol.stride_s) or None,
                                          aggregation=config.protocol.aggregation)
        scores = score_records(test.x, test.lengths)[task.name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics_lib.DegenerateMetricWarning)
            values, ci = test_metrics(task, test.y, scores, test.patient, int(config.bootstrap), seed)
        if task.type != "regression":
            cutoffs = thresholds.tune(task.type, val.y, score_records(val.x, val.lengths)[task.name])
            values.update(thresholds.tuned_metrics(task.type, test.y, scores, cutoffs,
                                                   task.output_names if task.type != "binary" else ()))
            model.thresholds = {task.name: [float(v) for v in cutoffs]}  # saved with the model
        if config.save_model:
            model.save(output_dir / "models" / f"{task.name}_{run_mode}_seed{seed}")
        best = max((h for h in history), key=lambda h: (np.nan_to_num(h["val_score"], nan=-np.inf)))
        record = runs_lib.RunRecord(
            cell=configured_cell(config) or cell_of(source.config, source.method), mode=run_mode, task=task.name, seed=seed,
            metrics=values, task_type=task.type, data_fraction=float(config.data_fraction),
            case_ratio=case_ratio, pretrain_loss=source.pretrain_loss, ci=ci,
            extra={"checkpoint": source.checkpoint, "store": str(store.path), "leads": list(task.leads),
                   "recipe": list(recipe.names),
                   "teacher_checkpoints": ",".join(distill.teachers.checkpoints) if distill else "",
                   "unlabelled_store": distill.pool.store if distill else "",
                   "n_train": len(train), "n_val": len(data["val"]), "n_test": len(test),
                   "n_pool": len(unlabelled) if unlabelled is not None else 0,
                   "best_epoch": {"stage": best["stage"], "epoch": best["epoch"]},
                   "epochs_run": {stage: sum(h["stage"] == stage for h in history)
                                  for stage in dict.fromkeys(h["stage"] for h in history)},
                   "val_scores": {stage: [round(float(h["val_score"]), 4) for h in history if h["stage"] == stage]
                                  for stage in dict.fromkeys(h["stage"] for h in history)},
                   "window_s": model.window_s, "fs": store.fs,
                   "seconds": round(time.perf_counter() - started, 2)})
        path = runs_lib.write_run_json(output_dir, record)
        logger.info("seed %d: %s -> %s", seed, {k: round(v, 4) for k, v in values.items()}, path)
        runs.append(record.to_json())
    summary = metrics_lib.aggregate_runs([r["metrics"] for r in runs])
    (output_dir / f"summary_{task.name}_{run_mode}.json").write_text(json.dumps(summary, indent=2))
    return runs

