"""ecgjax for people who hold arrays, not stores.

    import ecgjax
    m = ecgjax.load("zoo:ptbxl-superclass")        # or a run directory / saved model folder
    p = m.predict(x, fs=500, leads=["I", "II", ...])   # {output: [records, classes]} probabilities
    y = m.labels(p)                                 # {output: 0/1 [records, classes]} at its thresholds
    e = m.embed(x, fs=500, leads=[...])             # [records, features]

x is [records, time, leads] or a list of [time, leads] arrays (records of different lengths), in
millivolts, at any rate `fs` and with any subset and order of the 12 standard leads (names as
ingest accepts them: 'MLII', 'AVR', 'D1', ...). Each record is prepared as ingest prepares a
stored one (ecgjax.data.preprocess.preprocess_record: the ±60 mV rule, anti-aliased resampling to
the model's rate, canonical lead order with absent leads zero, then the model's band-pass), so an
array gives what the same record gives through a store, `embed.py` and `probe.py`:
  - embed: the record's mean encoder features over windows of the encoder's input length, back
    to back, the last one aligned to the record's end (ecgjax.eval.embed.embed_records);
  - predict: the model's outputs over sliding windows half a window apart, averaged
    (TrainedModel.record_scores, as the probe scores test records).
A model with heads reads only its own leads: those must be given; a pretrained encoder reads the
12 leads, absent ones zero (as ingest stores them). Mistakes raise ecgjax.errors.UserError with
one line naming the record and the problem.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ecgjax import loader
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS, canonical_lead_name
from ecgjax.data.preprocess import bandpass, preprocess_record
from ecgjax.data.record import ECGRecord
from ecgjax.downstream import network
from ecgjax.downstream.heads import named_predictions
from ecgjax.downstream.model import TrainedModel
from ecgjax.errors import UserError
from ecgjax.eval import thresholds as thresholds_lib
from ecgjax.eval.embed import FrozenEncoder, Source, embed_records

MIN_FS, MAX_FS = 50.0, 20_000.0  # a rate outside this is a mistake (a period, ms for s), not an ECG


class Model:
    """A loaded model: `embed` for any, `predict` / `labels` for a model with heads.

    fs, leads, window_s: what the network reads (the arrays given are brought to it);
    output_names / output_classes: the keys of `predict` and the names of their columns.
    """

    def __init__(self, spec: str, loaded):
        self.spec = spec
        if isinstance(loaded, TrainedModel):
            self.trained = loaded
            self.fs, self.leads, self.window_s = loaded.fs, loaded.leads, loaded.window_s
            self.band_hz = loaded.band_hz
            self._encoder = FrozenEncoder(spec, loaded.fs, int(round(loaded.window_s * loaded.fs)),
                                          network.encoder_part(loaded.variables),
                                          network.compiled_encoder(loaded.encoder_config), loaded.leads)
        else:
            self.trained = None
            self.fs, self.leads, self.band_hz = loaded.fs, CANONICAL_LEADS, None
            self._encoder = FrozenEncoder(spec, loaded.fs, loaded.num_samples, loaded.encoder_variables,
                                          network.compiled_encoder(loaded.encoder_config))
            self.window_s = loaded.num_samples / loaded.fs
        self.pretrained = None if self.trained else loaded

    def __repr__(self) -> str:
        outputs = f", outputs {list(self.output_names)}" if self.trained else ""
        return f"ecgjax.Model({self.spec!r}: {self.fs:g} Hz, leads {list(self.leads)}, {self.window_s:g} s windows{outputs})"

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.trained.output_names if self.trained else ()

    @property
    def output_classes(self) -> dict[str, tuple[str, ...]]:
        return self.trained.output_classes if self.trained else {}

    # ------------------------------------------------------------------------------- input

    def prepare(self, x, fs: float, leads: Sequence[str]) -> list[np.ndarray]:
        """Each record as the network reads it: [time at self.fs, len(self.leads)] float32 mV."""
        records = _as_records(x, len(leads))
        fs = _check_fs(fs)
        names = _lead_names(leads)
        missing = [lead for lead in self.leads if lead not in names] if self.trained else []
        if missing:
            raise UserError(f"{self.spec} reads leads {list(self.leads)}; the arrays lack {missing} "
                            f"(given {list(leads)})")
        columns = [CANONICAL_LEADS.index(lead) for lead in self.leads]
        window = int(round(self.window_s * fs))
        prepared = []
        for i, signal in enumerate(records):
            where = f"record {i}"
            if signal.shape[0] < window:
                raise UserError(f"{where}: {signal.shape[0]} samples at {fs:g} Hz, shorter than one "
                                f"{self.window_s:g} s window of {self.spec}")
            if not np.isfinite(signal).all():
                raise UserError(f"{where}: {int((~np.isfinite(signal)).sum())} samples are NaN or infinite; "
                                f"fill or cut the gaps first")
            record = ECGRecord(signal, fs, tuple(names), str(i), str(i), "array", path=where)
            try:
                canonical, _ = preprocess_record(record, target_fs=self.fs, allow_flat_leads=True)
            except ECGInputError as error:
                raise UserError(f"{where}: {error.problem}") from None
            prepared.append(self.filter(canonical[:, columns]))
        return prepared

    def filter(self, signal: np.ndarray) -> np.ndarray:
        """The band-pass the model was trained with (none for most) on [time, leads] at self.fs."""
        return bandpass(signal, self.fs, *self.band_hz) if self.band_hz else signal

    # ------------------------------------------------------------------------------- outputs

    def embed(self, x, fs: float, leads: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[records, features] float32: each record's mean encoder features over its windows."""
        prepared = self.prepare(x, fs, leads)
        source = Source("array", range(len(prepared)),
                        lambda i: ({"record_id": str(i), "patient_id": str(i)}, prepared[i]),
                        lambda i: (str(i), "array"))
        embeddings, _, _ = embed_records(self._encoder, source, batch_size=batch_size, progress=False)
        return embeddings

    def predict(self, x, fs: float, leads: Sequence[str]) -> dict[str, np.ndarray]:
        """{output: [records] or [records, classes]}: probabilities (or values) per record."""
        self.require_heads("predict")
        return self.predict_prepared(self.prepare(x, fs, leads))

    def predict_prepared(self, prepared: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """`predict` for records already as the network reads them ([time, leads] at self.fs)."""
        model = self.require_heads("predict")
        lengths = np.array([len(r) for r in prepared])
        padded = np.zeros((len(prepared), lengths.max(), len(self.leads)), np.float32)
        for i, record in enumerate(prepared):
            padded[i, :len(record)] = record
        scores = model.record_scores(padded, lengths)
        out = {}
        for head in model.heads:
            out.update(named_predictions(head, scores[head.name]))
        return out

    def labels(self, predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`predict`'s output thresholded at the model's validation-chosen thresholds, under the same
        keys: 0/1 per class (binary, multilabel), the class name (multiclass)."""
        model = self.require_heads("labels")
        out = {}
        for head in model.heads:
            if head.name not in model.thresholds:
                continue
            chosen = thresholds_lib.decisions(head.kind, _stack(head, predictions),
                                              np.asarray(model.thresholds[head.name]))
            if head.kind == "multiclass":
                out[head.output_key or head.name] = np.asarray(head.classes)[chosen]
            else:
                out.update(named_predictions(head, chosen))
        if not out:
            raise UserError(f"{self.spec}: no thresholds were chosen for it (a model saved before they were "
                            f"recorded, or a regression model)")
        return out

    def require_heads(self, what: str) -> TrainedModel:
        """The model's heads, or a UserError saying that an encoder alone cannot `what` (predict, labels)."""
        if self.trained is None:
            raise UserError(f"{self.spec}: a pretrained encoder has no heads to {what} with; use .embed(), "
                            f"or load a model with heads (ecgjax.zoo: zoo:ptbxl-superclass)")
        return self.trained


def load(spec: str) -> Model:
    """A run directory, saved model folder or released model (zoo:NAME) as a `Model`."""
    return Model(str(spec), loader.load(str(spec), "ecgjax.load"))


# ------------------------------------------------------------------------------- helpers

def _as_records(x, num_leads: int) -> list[np.ndarray]:
    if isinstance(x, np.ndarray) or hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        array = np.asarray(x)
        if array.ndim == 2:
            raise UserError(f"x is one record {array.shape}; pass [records, time, leads] (x[None]) or a list")
        if array.ndim != 3:
            raise UserError(f"x must be [records, time, leads] or a list of [time, leads], got shape {array.shape}")
        records = list(array)
    elif isinstance(x, (list, tuple)) and x:
        records = [np.asarray(r) for r in x]
    else:
        raise UserError("x must be [records, time, leads] or a non-empty list of [time, leads] arrays")
    for i, record in enumerate(records):
        if record.ndim != 2 or record.shape[1] != num_leads:
            raise UserError(f"record {i}: shape {record.shape}, expected [time, {num_leads}] (one column per "
                            f"name in leads)")
        if not np.issubdtype(record.dtype, np.number):
            raise UserError(f"record {i}: dtype {record.dtype} is not numeric")
    return [np.asarray(r, np.float32) for r in records]


def _check_fs(fs) -> float:
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise UserError(f"fs={fs!r}: the sampling rate in Hz, a number") from None
    if not MIN_FS <= fs <= MAX_FS:
        raise UserError(f"fs={fs:g} Hz: not an ECG sampling rate ({MIN_FS:g}-{MAX_FS:g} Hz); pass samples "
                        f"per second")
    return fs


def _lead_names(leads) -> list[str]:
    if isinstance(leads, str) or not leads:
        raise UserError(f"leads={leads!r}: a list with one name per column, e.g. ['I', 'II', 'V1']")
    try:
        names = [canonical_lead_name(str(lead), "leads") for lead in leads]
    except ECGInputError as error:
        raise UserError(f"leads: {error.problem}") from None
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UserError(f"leads: {doubled} given twice")
    return names


def _stack(head, predictions: dict) -> np.ndarray:
    """A head's scores [N] or [N, K] back from `predict`'s keys."""
    if head.output_key:
        return np.asarray(predictions[head.output_key])
    columns = [np.asarray(predictions[name]) for name in head.output_names]
    return columns[0] if head.kind == "binary" else np.stack(columns, axis=1)
