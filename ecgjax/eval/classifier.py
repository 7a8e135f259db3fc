"""An encoder plus a linear head, trained on one task and saved for later use (annotation tool).

    clf, history = train_classifier(encoder_config, encoder_vars, train, val, task, mode="finetune")
    clf.save("models/af")
    clf = load_classifier("models/af")
    probs = clf.predict(windows)            # windows [N, T, len(clf.leads)] mV at clf.fs
                                            # -> {output name: [N] probabilities / values}

Training (000 §4.2, 003 §4.2): the pretraining projection head is dropped and a new
`heads.LinearHead` is trained on frozen encoder features (the embeddings are computed once);
mode 'finetune' then updates all weights at a slow rate (003: AdamW lr 1e-4, weight decay 1e-5)
with BatchNorm statistics updated in training mode; 'supervised' trains all weights from the
start. After every epoch the validation score (AUROC / macro AUROC / macro F1 / -MAE by task
type; -loss where undefined) picks the best epoch, whose weights are kept.

Regression targets are standardised with the training mean and std for the loss; predictions
are returned in the original units.

On disk: classifier.json (encoder config, head config, task, fs, leads, window_s) and
variables.msgpack (flax.serialization msgpack of {'params': {'encoder', 'head'}, ['batch_stats']}).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval.tasks import Task
from ecgjax.models import heads, registry

MODES = ("linear", "finetune", "supervised")
CONFIG_FILE = "classifier.json"
VARIABLES_FILE = "variables.msgpack"


def default_optim() -> ml_collections.ConfigDict:
    """Optimisation settings of `train_classifier` (003: lr 1e-4, wd 1e-5 for fine-tuning)."""
    return ml_collections.ConfigDict(dict(
        batch_size=64, linear_epochs=30, linear_lr=1e-3, linear_weight_decay=0.0,
        epochs=20, lr=1e-4, weight_decay=1e-5, eval_batch_size=256))


class ClassifierModel(nn.Module):
    """encoder (x [B, T, leads] -> [B, D]) then LinearHead -> logits [B, num_outputs]."""

    encoder: nn.Module
    num_outputs: int

    def setup(self):
        self.head = heads.LinearHead(self.num_outputs)

    def features(self, x, *, train: bool = False):
        return self.encoder(x, train=train)

    def classify(self, features):
        return self.head(features)

    def __call__(self, x, *, train: bool = False):
        return self.head(self.encoder(x, train=train))


def _config_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def build_model(encoder_config, num_outputs: int) -> ClassifierModel:
    return ClassifierModel(registry.build_encoder(_config_dict(encoder_config)), num_outputs)


@functools.lru_cache(maxsize=64)
def _compiled(config_json: str, num_outputs: int, kind: str):
    """Jitted logits / features of one architecture, shared by every seed and classifier
    (a fresh jax.jit per call would recompile each time)."""
    model = build_model(json.loads(config_json), num_outputs)
    if kind == "features":
        return jax.jit(lambda v, x: model.apply(v, x, train=False, method=ClassifierModel.features))
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def compiled(encoder_config, num_outputs: int, kind: str = "logits"):
    return _compiled(json.dumps(_config_dict(encoder_config), sort_keys=True), num_outputs, kind)


# ---------------------------------------------------------------------------- outputs / scores

def to_outputs(task: Task, logits: np.ndarray, target_scale=(0.0, 1.0)) -> np.ndarray:
    """Logits [N, K] -> scores in the form compute_metrics takes: binary [N] probability,
    multilabel [N, C] probabilities, multiclass [N, K] softmax, regression [N] in target units."""
    logits = np.asarray(logits, np.float64)
    if task.type == "binary":
        return 1.0 / (1.0 + np.exp(-logits[:, 0]))
    if task.type == "multilabel":
        return 1.0 / (1.0 + np.exp(-logits))
    if task.type == "multiclass":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    mean, std = target_scale
    return logits[:, 0] * std + mean


def selection_score(task: Task, y_true, scores) -> float:
    """The validation score that picks the best epoch (higher is better; NaN if undefined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics_lib.DegenerateMetricWarning)
        if task.type == "binary":
            return metrics_lib.auroc(y_true, scores)
        if task.type == "multilabel":
            return metrics_lib.macro_auroc(y_true, scores)
        if task.type == "multiclass":
            return metrics_lib.macro_f1(y_true, scores, labels=list(range(task.num_outputs)))
        return -metrics_lib.mae(y_true, scores)


def _loss(task_type: str, logits, y):
    if task_type == "binary":
        return optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()
    if task_type == "multilabel":
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()
    if task_type == "multiclass":
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return jnp.mean((logits[:, 0] - y) ** 2)


# --------------------------------------------------------------------------------- classifier

@dataclasses.dataclass
class Classifier:
    """A trained encoder + head with what is needed to feed it.

    predict(windows [N, T, len(leads)] f32 mV at fs) -> {output name: [N] float}: sigmoid
    probabilities (binary, multilabel), softmax probabilities (multiclass), raw values (regression).
    """

    encoder_config: dict
    task: Task
    variables: Any
    fs: float
    window_s: float
    target_scale: tuple[float, float] = (0.0, 1.0)
    batch_size: int = 64

    def __post_init__(self):
        self.encoder_config = _config_dict(self.encoder_config)
        self.model = build_model(self.encoder_config, self.task.num_outputs)
        self._logits = compiled(self.encoder_config, self.task.num_outputs)

    @property
    def leads(self) -> tuple[str, ...]:
        return tuple(self.task.leads)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.task.output_names

    def logits(self, windows) -> np.ndarray:
        """[N, T, leads] -> [N, num_outputs], in fixed-size batches (one compilation)."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 3 or windows.shape[2] != len(self.leads):
            raise ValueError(f"windows must be [N, T, {len(self.leads)}] (leads {self.leads}), "
                             f"got {windows.shape}")
        return batched_apply(lambda x: self._logits(self.variables, x), windows, self.batch_size)

    def predict(self, windows) -> dict[str, np.ndarray]:
        scores = to_outputs(self.task, self.logits(windows), self.target_scale)
        if scores.ndim == 1:
            scores = scores[:, None]
        if self.task.type == "binary":
            return {self.output_names[0]: scores[:, 0]}
        return {name: scores[:, k] for k, name in enumerate(self.output_names)}

    def save(self, directory) -> pathlib.Path:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"encoder": self.encoder_config, "head": {"kind": "linear", "num_outputs": self.task.num_outputs},
                  "task": self.task.to_dict(), "fs": self.fs, "leads": list(self.leads),
                  "window_s": self.window_s, "target_scale": list(self.target_scale),
                  "output_names": list(self.output_names)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        state = serialization.to_state_dict(jax.device_get(self.variables))
        (directory / VARIABLES_FILE).write_bytes(serialization.msgpack_serialize(state))
        return directory


def load_classifier(directory, batch_size: int = 64) -> Classifier:
    """A Classifier saved with `Classifier.save`."""
    from ecgjax.data.errors import ECGInputError

    directory = pathlib.Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ECGInputError(config_path, "not a saved classifier (missing classifier.json)")
    config = json.loads(config_path.read_text())
    variables = serialization.msgpack_restore((directory / VARIABLES_FILE).read_bytes())
    return Classifier(encoder_config=config["encoder"], task=Task.from_dict(config["task"]),
                      variables=variables, fs=float(config["fs"]), window_s=float(config["window_s"]),
                      target_scale=tuple(config.get("target_scale", (0.0, 1.0))), batch_size=batch_size)


def batched_apply(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """fn over x in batches of exactly batch_size (the last one zero-padded), concatenated."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("no windows to process")
    batch_size = min(batch_size, n)
    outputs = []
    for start in range(0, n, batch_size):
        chunk = x[start:start + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        outputs.append(np.asarray(fn(chunk))[:batch_size - pad])
    return np.concatenate(outputs)


# ----------------------------------------------------------------------------------- training

def init_variables(encoder_config, task: Task, encoder_variables: dict | None, seed: int) -> dict:
    """Variables of a ClassifierModel: a new head; the encoder from `encoder_variables`
    ({'params', ['batch_stats']} of the encoder alone) or random when None."""
    model = build_model(encoder_config, task.num_outputs)
    example = registry.example_input(_config_dict(encoder_config), batch=2)
    variables = jax.jit(lambda k: model.init(k, example, train=False))(jax.random.PRNGKey(seed))
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    if encoder_variables is not None:
        for kind, tree in encoder_variables.items():
            variables.setdefault(kind, {})
            variables[kind] = {**variables[kind], "encoder": tree}
    return variables


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches of exactly batch_size (the short tail dropped unless it is all)."""
    order = rng.permutation(n)
    batch_size = min(batch_size, n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _train_head(task, head_model, head_params, features_train, y_train, features_val, y_val_true,
                target_scale, optim, rng, history) -> Any:
    """Linear probe on fixed features; returns the head params of the best validation epoch."""
    tx = optax.adamw(optim.linear_lr, weight_decay=optim.linear_weight_decay)
    opt_state = tx.init(head_params)

    @jax.jit
    def step(params, opt_state, f, y):
        loss, grads = jax.value_and_grad(lambda p: _loss(task.type, head_model.apply({"params": p}, f), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    evaluate = jax.jit(lambda p, f: head_model.apply({"params": p}, f))
    best = (-math.inf, head_params)
    for epoch in range(optim.linear_epochs):
        losses = []
        for idx in _epoch_batches(len(y_train), optim.batch_size, rng):
            head_params, opt_state, loss = step(head_params, opt_state, features_train[idx], y_train[idx])
            losses.append(float(loss))
        scores = to_outputs(task, evaluate(head_params, features_val), target_scale)
        score = selection_score(task, y_val_true, scores)
        history.append({"stage": "linear", "epoch": epoch, "train_loss": float(np.mean(losses)), "val_score": score})
        if _better(score, best[0]):
            best = (score, head_params)
    return best[1]


def _better(score: float, best: float) -> bool:
    if not math.isfinite(score):
        return best == -math.inf  # keep at least one epoch when the score is undefined
    return score > best


@functools.lru_cache(maxsize=16)
def _finetune_step(config_json: str, num_outputs: int, task_type: str, lr: float, weight_decay: float,
                   with_batch_stats: bool):
    """(optimizer, jitted step) for fine-tuning one architecture, compiled once per setting."""
    model = build_model(json.loads(config_json), num_outputs)
    tx = optax.adamw(lr, weight_decay=weight_decay)
    mutable = ["batch_stats"] if with_batch_stats else False

    @jax.jit
    def step(params, batch_stats, opt_state, x, y, key):
        def loss_fn(p):
            v = {"params": p, **({"batch_stats": batch_stats} if with_batch_stats else {})}
            out = model.apply(v, x, train=True, mutable=mutable, rngs={"dropout": key})
            logits, updates = out if mutable else (out, {})
            return _loss(task_type, logits, y), updates.get("batch_stats", batch_stats)
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return tx, step


def _finetune(task, model_config, variables, train, y_train, val_x, y_val_true, target_scale, optim, rng,
              history, seed) -> dict:
    """All weights, AdamW (lr, weight_decay); BatchNorm statistics updated while training."""
    tx, step = _finetune_step(json.dumps(_config_dict(model_config), sort_keys=True), task.num_outputs,
                              task.type, float(optim.lr), float(optim.weight_decay),
                              bool(variables.get("batch_stats")))
    params = variables["params"]
    batch_stats = variables.get("batch_stats")
    opt_state = tx.init(params)

    logits_fn = compiled(model_config, task.num_outputs)
    key = jax.random.PRNGKey(seed)
    best = (-math.inf, variables)
    for epoch in range(optim.epochs):
        losses = []
        for idx in _epoch_batches(len(y_train), optim.batch_size, rng):
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, train[idx], y_train[idx], sub)
            losses.append(float(loss))
        current = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        logits = batched_apply(lambda x: logits_fn(current, x), val_x, optim.eval_batch_size)
        score = selection_score(task, y_val_true, to_outputs(task, logits, target_scale))
        history.append({"stage": "finetune", "epoch": epoch, "train_loss": float(np.mean(losses)), "val_score": score})
        if _better(score, best[0]):
            best = (score, jax.device_get(current))
    return best[1]


def train_classifier(encoder_config, encoder_variables: dict | None, train, val, task: Task,
                     mode: str = "finetune", optim=None, seed: int = 0, *, fs: float = 250.0):
    """Trains a new linear head (and, by mode, the encoder) on one task.

    Args:
      encoder_config: registry.build_encoder config (dict / ConfigDict); its leads must match
        task.leads (see probe.adapt_encoder for lead surgery).
      encoder_variables: {'params', ['batch_stats']} of the encoder alone, or None (random init).
      train, val: (x [N, T, len(task.leads)] f32 mV, y) pairs or objects with .x and .y
        (y as in Task.targets: binary [N] 0/1, multilabel [N, C], multiclass [N] int, regression [N]).
      mode: 'linear' (frozen encoder, embeddings computed once), 'finetune' (head first, then all
        weights), 'supervised' (all weights from the start).
      optim: ConfigDict/dict overriding `default_optim()` fields.
    Returns:
      (Classifier with the weights of the best validation epoch, history: list of per-epoch dicts
      {stage, epoch, train_loss, val_score}).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings = default_optim()
    settings.update(dict(optim or {}))
    x_train, y_train = (train.x, train.y) if hasattr(train, "x") else train
    x_val, y_val = (val.x, val.y) if hasattr(val, "x") else val
    if len(y_train) == 0 or len(y_val) == 0:
        raise ValueError(f"task {task.name!r}: empty training ({len(y_train)}) or validation ({len(y_val)}) set")
    target_scale = (0.0, 1.0)
    y_fit = np.asarray(y_train)
    if task.type == "regression":
        target_scale = (float(np.mean(y_fit)), float(np.std(y_fit)) or 1.0)
        y_fit = ((y_fit - target_scale[0]) / target_scale[1]).astype(np.float32)
    rng = np.random.default_rng(seed)
    variables = init_variables(encoder_config, task, encoder_variables, seed)
    history: list[dict] = []

    if mode in ("linear", "finetune"):
        embed = compiled(encoder_config, task.num_outputs, "features")
        f_train = batched_apply(lambda x: embed(variables, x), np.asarray(x_train, np.float32),
                                settings.eval_batch_size)
        f_val = batched_apply(lambda x: embed(variables, x), np.asarray(x_val, np.float32),
                              settings.eval_batch_size)
        head_model = heads.LinearHead(task.num_outputs)
        head_params = _train_head(task, head_model, variables["params"]["head"], f_train, y_fit, f_val,
                                  np.asarray(y_val), target_scale, settings, rng, history)
        variables["params"] = {**variables["params"], "head": head_params}
    if mode in ("finetune", "supervised"):
        variables = _finetune(task, encoder_config, variables, np.asarray(x_train, np.float32), y_fit,
                              np.asarray(x_val, np.float32), np.asarray(y_val), target_scale, settings, rng,
                              history, seed)
    classifier = Classifier(encoder_config=_config_dict(encoder_config), task=task,
                            variables=jax.device_get(variables), fs=fs,
                            window_s=float(np.asarray(x_train).shape[1]) / fs, target_scale=target_scale,
                            batch_size=settings.eval_batch_size)
    return classifier, history
