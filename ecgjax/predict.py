"""A model's predictions for every record of a folder, store or array file: one CSV row per record.

    summary = predict(ecgjax.load("zoo:ptbxl-superclass"), "path/to/wfdb_folder", "out/")

Input (what experiments/predict.py --input takes):
  - an ingested store (store.json) or WFDB records (a folder, a RECORDS file or one .hea): read and
    prepared as ingest does (ecgjax.eval.embed.open_source) at the model's rate;
  - a NumPy file .npy ([records, time, leads] or one [time, leads]) or a CSV file (one record:
    a header row of lead names, then one row per sample), with `fs` and, for .npy, `leads` given:
    prepared by ecgjax.api.Model.prepare.
output_dir receives predictions.csv (record, path, then each output's probability and, where the
model has thresholds, `<output>_label`), rejected.csv (record, path, reason) and predict.json.
Records are scored in chunks (sliding windows averaged per record, as the probe scores them), so
memory is bounded by a chunk, not the input.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time

import numpy as np
import pandas as pd
import tqdm

from ecgjax.api import Model
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.errors import UserError
from ecgjax.eval.embed import REJECTED_COLUMNS, open_source

logger = logging.getLogger("ecgjax")

PREDICTIONS_FILE = "predictions.csv"
REJECTED_FILE = "rejected.csv"
SUMMARY_FILE = "predict.json"
CHUNK_RECORDS = 64


def array_records(path: pathlib.Path, leads) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(records [time, leads], their names, lead names) of a .npy or .csv file."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise UserError(f"--input={path}: not a readable .npy array ({error})") from None
        if not leads:
            raise UserError(f"--input={path}: a .npy file has no lead names; pass --leads=I,II,...")
        records = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else None
        if records is None:
            raise UserError(f"--input={path}: shape {array.shape}; expected [records, time, leads] or [time, leads]")
        return records, [f"{path.stem}[{i}]" for i in range(len(records))], list(leads)
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as error:
        raise UserError(f"--input={path}: not a readable CSV file ({error})") from None
    names = list(leads) if leads else [str(c) for c in table.columns]
    if len(names) != table.shape[1]:
        raise UserError(f"--input={path}: {table.shape[1]} columns but --leads names {len(names)}")
    return [table.to_numpy(np.float32)], [path.stem], names


def predict(model: Model, input_path: str, output_dir: str, *, fs: float | None = None, leads=None,
            progress: bool = True) -> dict:
    """Writes predictions.csv / rejected.csv / predict.json; returns the summary."""
    started = time.perf_counter()
    model.require_heads("predict")
    root = pathlib.Path(os.path.expanduser(input_path))
    if not root.exists():
        raise UserError(f"--input={input_path}: no such file or directory")
    output = pathlib.Path(os.path.expanduser(output_dir))
    if output.exists() and not output.is_dir():
        raise UserError(f"--output={output_dir}: exists and is not a directory; pass a directory")
    if root.is_file() and root.suffix in (".npy", ".csv"):
        if fs is None:
            raise UserError(f"--input={input_path}: an array file has no sampling rate; pass --fs=HZ")
        records, names, lead_names = array_records(root, leads)
        items = [(name, str(root), (lambda r=r: model.prepare([r], fs, lead_names)[0])) for r, name in
                 zip(records, names)]
    else:
        source = open_source(input_path, model.fs)
        columns = [CANONICAL_LEADS.index(lead) for lead in model.leads]

        def prepared(item):
            _, signal = source.load(item)
            signal = signal[:, columns]
            absent = [lead for lead, column in zip(model.leads, signal.T) if not np.any(column)]
            if absent:
                raise ECGInputError(source.describe(item)[1], f"lacks leads {absent} that the model reads")
            return model.filter(signal)

        items = [(*source.describe(item), (lambda item=item: prepared(item))) for item in source.items]
    output.mkdir(parents=True, exist_ok=True)
    rows, rejected, chunk = [], [], []

    def flush():
        predictions = model.predict_prepared([signal for _, _, signal in chunk])
        labels = model.labels(predictions) if model.trained.thresholds else {}
        for i, (name, path, _) in enumerate(chunk):
            row = {"record": name, "path": path}
            row.update({key: float(np.asarray(v)[i]) for key, v in predictions.items() if np.ndim(v) == 1})
            row.update({f"{key}_label": np.asarray(v)[i].item() for key, v in labels.items() if np.ndim(v) == 1})
            rows.append(row)
        chunk.clear()

    window = int(round(model.window_s * model.fs))
    for name, path, load in tqdm.tqdm(items, unit="rec", desc="predict", disable=not progress):
        try:
            signal = load()
            if len(signal) < window:
                raise ECGInputError(path, f"{len(signal) / model.fs:g} s, shorter than the model's "
                                          f"{model.window_s:g} s window")
        except (ECGInputError, UserError) as error:
            reason = getattr(error, "problem", None) or str(error)
            logger.warning("skipped %s: %s", name, reason)
            rejected.append({"record": name, "path": path, "reason": reason})
            continue
        chunk.append((name, path, signal))
        if len(chunk) == CHUNK_RECORDS:
            flush()
    if chunk:
        flush()
    pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).to_csv(output / REJECTED_FILE, index=False)
    if not rows:
        raise UserError(f"--input={input_path}: no usable records ({len(rejected)} rejected, reasons in "
                        f"{output / REJECTED_FILE})")
    pd.DataFrame(rows).to_csv(output / PREDICTIONS_FILE, index=False)
    summary = {"model": model.spec, "input": str(input_path), "records": len(rows), "rejected": len(rejected),
               "outputs": list(model.output_names), "thresholds": model.trained.thresholds,
               "seconds": round(time.perf_counter() - started, 2)}
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    logger.info("predictions for %d records (%d rejected) -> %s", len(rows), len(rejected), output)
    return summary
