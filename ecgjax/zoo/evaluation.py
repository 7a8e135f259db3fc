"""The figures a released model's card reports that tests and `benchmarks/zoo.py --check` recompute.

    classifier_figures(model, store)      # per-class AUROC / AUPRC / F1 at thresholds on test fold 9
    subset_figures(model, ptbxl_root)     # macro AUROC on a fixed fold-9 subset, read from WFDB files
    reference_embedding(model, ptbxl_root)  # the first features of one shared record's embedding

Evaluation code, imported only where figures are made (benchmarks/zoo.py, tests/test_zoo.py).
"""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pandas as pd
import wfdb

from ecgjax import api
from ecgjax.data.store import ECGStore
from ecgjax.eval import folds as folds_lib, metrics as metrics_lib, probe as probe_lib, tasks, thresholds
from ecgjax.eval.task_data import load_task_arrays

FOLDS = {"train": "1-7", "val": "8", "test": "9"}  # the ../shared copy's protocol (its data README)
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")


def classifier_figures(model: api.Model, store: ECGStore, n_bootstrap: int, seed: int = 0) -> dict:
    """Per-class AUROC / AUPRC and F1 at the model's thresholds on test fold 9, patient-level CIs."""
    head = model.trained.heads[0]
    task = tasks.get_task("superclass", list(store.metadata.columns), window_s=model.window_s)
    splits = folds_lib.resolve_splits(store, task, FOLDS, needed=("test",))
    test = load_task_arrays(store, task, splits["test"], record_s=0.0)
    columns = [list(task.leads).index(lead) for lead in model.leads]
    scores = model.trained.record_scores(test.x[:, :, columns], test.lengths)[head.name]
    values, ci = probe_lib.test_metrics(task, test.y, scores, test.patient, n_bootstrap, seed)
    cutoffs = np.asarray(model.trained.thresholds[head.name])
    values.update(thresholds.tuned_metrics(task.type, test.y, scores, cutoffs, task.output_names))
    decided = thresholds.decisions(task.type, scores, cutoffs)
    for c, name in enumerate(task.output_names):
        fn = lambda y, d, c=c: thresholds.tuned_metrics("binary", y[:, c], d[:, c], np.array([0.5]))["f1_tuned"]  # noqa: E731
        interval = metrics_lib.bootstrap_ci(fn, test.y, decided, n=n_bootstrap, seed=seed,
                                                      patient_ids=test.patient)
        ci[f"f1_tuned/{name}"] = [interval["lower"], interval["upper"]]
    return {"records": len(test), "patients": int(len(np.unique(test.patient))), "metrics": values, "ci": ci,
            "thresholds": dict(zip(task.output_names, map(float, cutoffs)))}


SUBSET_RECORDS = 300        # the first fold-9 records by ecg_id: tests/test_zoo.py's fixed subset
REFERENCE_RECORD = "records100/00000/00001_lr"  # whose embedding tests/test_zoo.py reproduces


def read_ptbxl_records(root, filenames) -> tuple[list[np.ndarray], list[str]]:
    """Signals [time, 12] mV of PTB-XL records read with wfdb, and their lead names."""
    signals, names = [], None
    for filename in filenames:
        signal, fields = wfdb.rdsamp(str(pathlib.Path(root) / filename))
        signals.append(signal.astype(np.float32))
        names = fields["sig_name"]
    return signals, names


def fold9_subset(root) -> tuple[list[str], np.ndarray]:
    """(filenames, y [records, 5] superclass targets) of the fixed subset of test fold 9."""
    table = pd.read_csv(pathlib.Path(root) / "ptbxl_database.csv").sort_values("ecg_id")
    statements = pd.read_csv(pathlib.Path(root) / "scp_statements.csv", index_col=0)
    classes = statements.loc[statements["diagnostic"] == 1, "diagnostic_class"].to_dict()
    rows = table[table["strat_fold"] == 9].head(SUBSET_RECORDS)
    y = np.array([[any(classes.get(code) == c for code in ast.literal_eval(codes)) for c in SUPERCLASSES]
                  for codes in rows["scp_codes"]], np.float32)
    return list(rows["filename_lr"]), y


def subset_figures(model: api.Model, root) -> dict:
    """Macro AUROC of the classifier on the fixed fold-9 subset, read from the WFDB files through
    the Python API (what tests/test_zoo.py recomputes)."""
    filenames, y = fold9_subset(root)
    signals, leads = read_ptbxl_records(root, filenames)
    p = model.predict(signals, fs=100, leads=leads)
    scores = np.stack([p[c] for c in SUPERCLASSES], axis=1)
    return {"records": len(filenames), "macro_auroc": metrics_lib.macro_auroc(y, scores)}


def reference_embedding(model: api.Model, root) -> dict:
    """The first 16 features of REFERENCE_RECORD's embedding (tests/test_zoo.py reproduces them)."""
    signals, leads = read_ptbxl_records(root, [REFERENCE_RECORD])
    return {"record": REFERENCE_RECORD, "features": model.embed(signals, fs=100, leads=leads)[0, :16].tolist()}
