"""A trained encoder with heads, what is needed to feed it, and its one save format.

    model.predict(windows)        # windows [N, window_s * fs, len(leads)] f32 mV at model.fs
                                  # -> {prediction key: [N] or [N, K]}
    model.record_scores(x, lengths)   # whole records [N, T, leads]: sliding windows, aggregated
    model.save("models/af")       # classifier.json + variables.msgpack
    model = load_model("models/af")

On disk, a directory: classifier.json {encoder (registry config), heads [Head fields], fs, leads,
window_s, band_hz, output_names, history} and variables.msgpack (flax msgpack of
{'params': {'encoder', 'heads'}, ['batch_stats']}).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import jax
import numpy as np
from flax import serialization

from ecgjax.data.errors import ECGInputError
from ecgjax.downstream import network, windows as windows_lib
from ecgjax.downstream.batches import batched_apply
from ecgjax.downstream.heads import Head, head_scores, named_predictions

CONFIG_FILE = "classifier.json"
VARIABLES_FILE = "variables.msgpack"
_RETRAIN = "saved by an earlier ecgjax in another format: train it again"


@dataclasses.dataclass
class TrainedModel:
    """encoder_config: registry config; heads: the Head of each output; variables: see network.

    fs, leads, window_s: its input, windows [N, window_s * fs, len(leads)] mV; band_hz: the
    (low, high) band-pass its training input went through (None: none), for annotate.run;
    history: what training recorded (free-form dicts); batch_size: rows per compiled batch;
    thresholds: {head name: [one per output]} decision thresholds chosen on validation records
    (eval.thresholds.tune; a multiclass head's are score offsets), {} when none were chosen.
    """

    encoder_config: dict
    heads: tuple[Head, ...]
    variables: Any
    fs: float
    leads: tuple[str, ...]
    window_s: float
    band_hz: tuple[float, float] | None = None
    history: list = dataclasses.field(default_factory=list)
    batch_size: int = 64
    thresholds: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.encoder_config = network.config_dict(self.encoder_config)
        self.heads = tuple(self.heads)
        self.leads = tuple(self.leads)
        self.fs, self.window_s = float(self.fs), float(self.window_s)
        self.band_hz = tuple(self.band_hz) if self.band_hz else None
        self._logits = network.compiled_logits(self.encoder_config, self.heads)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The keys of `predict`."""
        return tuple(key for head in self.heads for key in head.prediction_keys)

    @property
    def output_classes(self) -> dict[str, tuple[str, ...]]:
        """{prediction key: names of its columns} for predictions [N, K]."""
        return {head.output_key: head.classes for head in self.heads if head.output_key and head.classes}

    def _windows(self, windows) -> np.ndarray:
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 3 or windows.shape[2] != len(self.leads):
            raise ValueError(f"windows must be [N, T, {len(self.leads)}] (leads {self.leads}), "
                             f"got {windows.shape}")
        return windows

    def logits(self, windows) -> dict[str, np.ndarray]:
        """[N, T, leads] -> {head name: [N, k]}, in fixed-size batches (one compilation)."""
        windows = self._windows(windows)
        return batched_apply(lambda x: self._logits(self.variables, x), windows,
                             min(self.batch_size, len(windows)))

    def features(self, windows) -> np.ndarray:
        """[N, T, leads] -> [N, D] pooled encoder features."""
        windows = self._windows(windows)
        return network.encoder_features(self.encoder_config, network.encoder_part(self.variables), windows,
                                        batch_size=self.batch_size)

    def scores(self, windows) -> dict[str, np.ndarray]:
        """{head name: scores in target units} (heads.head_scores), for metrics."""
        logits = self.logits(windows)
        return {head.name: head_scores(head, logits[head.name]) for head in self.heads}

    def window_logits(self, x, lengths=None, stride_s: float | None = None):
        """Sliding windows of records x [N, T, leads] (lengths [N] samples of signal; None: all T),
        `stride_s` apart (default half a window) -> ({head name: [M, k] logits}, owner [M])."""
        x = self._windows(x)
        lengths = np.full(len(x), x.shape[1]) if lengths is None else np.asarray(lengths, np.int64)
        window = int(round(self.window_s * self.fs))
        stride = max(int(round((stride_s or self.window_s / 2) * self.fs)), 1)
        logits, owner = windows_lib.apply_sliding(lambda chunk: self._logits(self.variables, chunk), x, lengths,
                                                  window, stride, self.batch_size)
        return logits, owner

    def record_scores(self, x, lengths=None, *, stride_s: float | None = None,
                      aggregation: str = "mean") -> dict[str, np.ndarray]:
        """{head name: per-record scores}: the scores (heads.head_scores) of the sliding windows of
        each record (window_logits), aggregated by 'mean' or 'max' (rhythm events)."""
        logits, owner = self.window_logits(x, lengths, stride_s)
        return {head.name: windows_lib.aggregate(head_scores(head, logits[head.name]), owner, len(x), aggregation)
                for head in self.heads}

    def predict(self, windows) -> dict[str, np.ndarray]:
        """{prediction key: [N] or [N, K]}: probabilities (sigmoid, softmax) or values (regression)."""
        scores = self.scores(windows)
        return {key: value for head in self.heads for key, value in named_predictions(head, scores[head.name]).items()}

    def save(self, directory) -> pathlib.Path:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"encoder": self.encoder_config, "heads": [head.to_dict() for head in self.heads],
                  "fs": self.fs, "leads": list(self.leads), "window_s": self.window_s,
                  "band_hz": list(self.band_hz) if self.band_hz else None,
                  "output_names": list(self.output_names), "history": self.history,
                  "thresholds": {name: [float(v) for v in values] for name, values in self.thresholds.items()}}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        state = serialization.to_state_dict(jax.device_get(self.variables))
        (directory / VARIABLES_FILE).write_bytes(serialization.msgpack_serialize(state))
        return directory


def new_model(encoder_config, heads: Sequence[Head], *, fs: float, leads: Sequence[str], window_s: float,
              encoder_variables: dict | None = None, seed: int = 0, **fields) -> TrainedModel:
    """A model with new heads (and a random encoder unless `encoder_variables` is given);
    `fields`: the other TrainedModel fields (band_hz, batch_size, ...)."""
    variables = network.init_variables(encoder_config, heads, encoder_variables, seed)
    return TrainedModel(encoder_config, tuple(heads), variables, fs, tuple(leads), window_s, **fields)


def is_saved(directory) -> bool:
    return (pathlib.Path(directory) / CONFIG_FILE).is_file()


def load_model(directory, batch_size: int = 64) -> TrainedModel:
    """A model saved with `TrainedModel.save`; ECGInputError naming the directory otherwise."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ECGInputError(directory, "no such model directory")
    if (directory / "annotation_model.json").is_file():  # the annotation heads' format before this one
        raise ECGInputError(directory, f"{_RETRAIN} (benchmarks/telemetry.py --retrain)")
    if not is_saved(directory):
        raise ECGInputError(directory, f"not a saved model (missing {CONFIG_FILE}): pass a directory written "
                                       "by probe (--config.save_model) or annotate.train_heads")
    config = json.loads((directory / CONFIG_FILE).read_text())
    if "heads" not in config:
        raise ECGInputError(directory / CONFIG_FILE, f"{_RETRAIN} (experiments/probe.py --config.save_model=True)")
    variables = serialization.msgpack_restore((directory / VARIABLES_FILE).read_bytes())
    return TrainedModel(config["encoder"], tuple(Head.from_dict(h) for h in config["heads"]), variables,
                        config["fs"], tuple(config["leads"]), config["window_s"], config.get("band_hz"),
                        config.get("history", []), batch_size, config.get("thresholds", {}))
