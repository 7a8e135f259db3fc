"""AF and heart-rate tracks on the MIT-BIH records: train (or load) the heads, annotate, score, report.

    python benchmarks/telemetry.py --workdir=/tmp/ecgjax_telemetry [--retrain] [--steps=400] \
        [--report=benchmarks/telemetry.md]

--ptbxl and --mitdb default to ../shared/data/{ptbxl,mitdb} beside the repository (or under
$ECGJAX_SHARED_DATA); the report goes to <workdir>/telemetry.md unless --report names another file.

1. Training windows: PTB-XL lead II (10 s, 100 Hz -> 250 Hz), folds 1-7 train / 8 validation,
   every AFIB record plus a random sample of the others; heart-rate labels from QRS detection
   (001's 4 classes and bpm), plus synthetic no-ECG windows for the noise class.
2. One small encoder (ResNet18, chan_start 8, random init) fine-tuned with the AF, heart-rate
   class and bpm heads (ecgjax.annotate.train_heads); saved in <workdir>/model (reused unless --retrain).
3. Every record of --mitdb annotated through the same code path as experiments/annotate.py.
4. Window-level scores against the reference annotations (.atr): AUROC of the AF track (AFIB
   covering > half the window vs the rest) per record and pooled; MAE of the heart-rate tracks
   against the heart rate of the reference beats. Writes the report (markdown).
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
import pandas as pd
from absl import flags
from sklearn.metrics import roc_auc_score

from ecgjax import cli, markdown
from ecgjax.annotate import apply, reference, train_heads
from ecgjax.annotate.heart_rate import HEART_RATE_CLASSES, heart_rate_class
from ecgjax.annotate.run import record_paths
from ecgjax.data import readers
from ecgjax.downstream.model import is_saved
from ecgjax.machine import cpu_model

# The shared data beside the checkout (as in tests/conftest.py), wherever the repository lives.
SHARED_DATA = pathlib.Path(os.environ.get("ECGJAX_SHARED_DATA",
                                          pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/ecgjax_telemetry", "Model, annotations and scores go here.")
_PTBXL = flags.DEFINE_string("ptbxl", str(SHARED_DATA / "ptbxl"), "PTB-XL root (100 Hz records).")
_MITDB = flags.DEFINE_string("mitdb", str(SHARED_DATA / "mitdb"), "Folder of MIT-BIH records with .atr.")
_REPORT = flags.DEFINE_string("report", None, "Markdown report to write (default <workdir>/telemetry.md; "
                                              "pass benchmarks/telemetry.md to update the tracked one).")
_RETRAIN = flags.DEFINE_bool("retrain", False, "Train even if <workdir>/model exists.")
_STEPS = flags.DEFINE_integer("steps", 400, "Fine-tuning steps (batch 64).")
_OTHERS = flags.DEFINE_integer("non_af_train", 1500, "Non-AFIB PTB-XL training records (all AFIB ones are used).")
_AF_TRAIN = flags.DEFINE_integer("af_train", 0, "AFIB PTB-XL training records (0: all of them).")
_CHAN_START = flags.DEFINE_integer("chan_start", 8, "ResNet18 width.")
_FS = flags.DEFINE_float("fs", 250.0, "Model sampling rate.")
_WINDOW_S = flags.DEFINE_float("window_s", 10.0, "Annotation window (s).")
_STRIDE_S = flags.DEFINE_float("stride_s", 10.0, "Annotation stride (s).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling and initialisation seed.")

TRAIN_FOLDS, VAL_FOLDS = range(1, 8), (8,)  # this copy of PTB-XL has folds 1-9 (data README)


def _select(table: pd.DataFrame, folds, num_others: int, rng, num_af: int = 0) -> pd.DataFrame:
    rows = table[table["strat_fold"].isin(list(folds))]
    af, others = rows[rows["AFIB"] == 1], rows[rows["AFIB"] != 1]
    af = af.iloc[rng.permutation(len(af))[:num_af]] if num_af else af
    others = others.iloc[rng.permutation(len(others))[:num_others]]
    return pd.concat([af, others])


def _ptbxl_windows(table: pd.DataFrame, root: str, fs: float) -> tuple[train_heads.HeadData, pd.DataFrame]:
    records = list(readers.read_ptbxl(root, ecg_ids=table["ecg_id"].values, table=table))
    signals = np.stack([r.signal[:, [r.lead_names.index("II")]] for r in records])
    af = np.array([r.metadata["AFIB"] for r in records], np.float32)
    codes = pd.DataFrame({"ecg_id": [int(r.record_id) for r in records],
                          "scp_codes": [r.metadata["scp_codes"] for r in records]})
    return train_heads.label_windows(signals, records[0].fs, fs, af=af), codes


def _label_agreement(data: train_heads.HeadData, codes: pd.DataFrame) -> dict:
    """How the QRS-made class agrees with the cardiologists' rhythm statements SBRAD / SR / STACH."""
    result = {}
    for code in ("SBRAD", "SR", "STACH"):
        has = codes["scp_codes"].map(lambda c: code in c).values
        if has.any():
            result[code] = {"records": int(has.sum()),
                            **{name: int((data.hr_class[has] == k).sum()) for k, name in enumerate(HEART_RATE_CLASSES)}}
    return result


def train_or_load(workdir: str, log=print):
    model_dir = os.path.join(workdir, "model")
    trained = is_saved(model_dir) and os.path.isfile(os.path.join(workdir, "training.json"))
    if trained and not _RETRAIN.value:
        log(f"loading {model_dir}")
        with open(os.path.join(workdir, "training.json")) as f:
            return apply.load_model(model_dir), {**json.load(f), "reused": True}
    rng = np.random.default_rng(_SEED.value)
    began = time.perf_counter()
    table = readers.load_ptbxl_table(_PTBXL.value)
    train, train_codes = _ptbxl_windows(_select(table, TRAIN_FOLDS, _OTHERS.value, rng, _AF_TRAIN.value), _PTBXL.value, _FS.value)
    agreement = _label_agreement(train, train_codes)
    val, _ = _ptbxl_windows(_select(table, VAL_FOLDS, _OTHERS.value // 4, rng, _AF_TRAIN.value // 4), _PTBXL.value, _FS.value)
    length, leads = train.windows.shape[1:]
    train = train_heads.HeadData.concatenate(
        [train, train_heads.noise_windows(max(len(train) // 25, 8), length, leads, _FS.value, rng)])
    val = train_heads.HeadData.concatenate(
        [val, train_heads.noise_windows(max(len(val) // 25, 8), length, leads, _FS.value, rng)])
    labelled = time.perf_counter() - began
    log(f"{len(train)} train / {len(val)} val windows labelled in {labelled:.0f}s; "
        f"classes {np.bincount(train.hr_class, minlength=4).tolist()}, AF {int(np.nansum(train.af))}")
    encoder_config = {"name": "resnet18", "chan_start": _CHAN_START.value, "in_leads": 1,
                      "num_samples": int(round(_WINDOW_S.value * _FS.value))}
    model = train_heads.train_heads(train, val, encoder_config=encoder_config, fs=_FS.value, leads=("II",),
                                    window_s=_WINDOW_S.value, steps=_STEPS.value, seed=_SEED.value, log=log)
    model.save(model_dir)
    info = {"train_windows": len(train), "val_windows": len(val),
            "train_hr_classes": dict(zip(HEART_RATE_CLASSES, np.bincount(train.hr_class, minlength=4).tolist())),
            "train_af": int(np.nansum(train.af)), "label_agreement": agreement,
            "labelling_s": labelled, "training_s": time.perf_counter() - began - labelled,
            "steps": _STEPS.value, "encoder": encoder_config, "val": model.history[-1].get("val", {})}
    with open(os.path.join(workdir, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
    return model, info


def score_records(annotation_dir: str, mitdb: str, window_s: float, stride_s: float) -> pd.DataFrame:
    """One row per window of every record: predicted tracks next to the reference tracks."""
    frames = []
    for path in record_paths(mitdb):
        name = os.path.basename(path)
        csv = os.path.join(annotation_dir, f"{name}.csv")
        if not os.path.isfile(csv):
            continue
        tracks = pd.read_csv(csv)
        ref = reference.reference_tracks(path, window_s, stride_s)
        if len(ref["af"]) != len(tracks):
            raise RuntimeError(f"{name}: {len(tracks)} annotated windows but {len(ref['af'])} reference windows")
        tracks["record"] = name
        tracks["ref_af"] = ref["af"]
        tracks["ref_hr_bpm"] = ref["hr_bpm"]
        frames.append(tracks)
    return pd.concat(frames, ignore_index=True)


def _auroc(frame):
    ok = frame["valid"].astype(bool) & frame["af_prob"].notna()
    y, p = frame.loc[ok, "ref_af"], frame.loc[ok, "af_prob"]
    return float(roc_auc_score(y, p)) if y.nunique() == 2 else float("nan")


def _rate_at_half(frame, positive: int):
    """Share of valid windows of reference class `positive` whose AF probability is on the correct side of 0.5."""
    ok = frame["valid"].astype(bool) & frame["af_prob"].notna() & (frame["ref_af"] == positive)
    return float(np.mean((frame.loc[ok, "af_prob"] >= 0.5) == bool(positive))) if ok.any() else float("nan")


def _mae(frame, key):
    ok = frame["valid"].astype(bool) & frame[key].notna() & frame["ref_hr_bpm"].notna()
    return float(np.mean(np.abs(frame.loc[ok, key] - frame.loc[ok, "ref_hr_bpm"]))) if ok.any() else float("nan")


def _class_accuracy(frame):
    probs = frame[[f"hr_class_prob_{k}" for k in range(len(HEART_RATE_CLASSES))]].values
    ok = frame["valid"].astype(bool).values & np.isfinite(probs).all(1) & frame["ref_hr_bpm"].notna().values
    truth = heart_rate_class(frame["ref_hr_bpm"].values[ok])
    return float(np.mean(probs[ok].argmax(1) == truth)) if ok.any() else float("nan")


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, frame in [*scores.groupby("record", sort=True), ("pooled", scores)]:
        rows.append({"record": name, "windows": len(frame), "invalid": int((~frame["valid"].astype(bool)).sum()),
                     "AF windows": int(frame["ref_af"].sum()), "AF AUROC": _auroc(frame),
                     "AF sens@0.5": _rate_at_half(frame, 1), "AF spec@0.5": _rate_at_half(frame, 0),
                     "HR MAE model (bpm)": _mae(frame, "heart_rate"), "HR MAE QRS (bpm)": _mae(frame, "qrs_hr_bpm"),
                     "HR class acc.": _class_accuracy(frame)})
    return pd.DataFrame(rows)


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(path, summary, info, annotate_s, total_s, command):
    cpu = cpu_model()
    agreement = "\n".join(f"- {code} ({v['records']} records): " +
                          ", ".join(f"{k} {v[k]}" for k in HEART_RATE_CLASSES)
                          for code, v in info.get("label_agreement", {}).items())
    text = f"""# Continuous annotation of MIT-BIH telemetry: AF and heart-rate tracks

Command: `{command}`

Hardware: {cpu.strip()} ({os.cpu_count()} cores, shared with other jobs; CPU only), {platform.python_version()}.
Wall time: labelling {info.get('labelling_s', 0):.0f} s, training {info.get('training_s', 0):.0f} s
({info.get('steps')} steps of 64), annotation of {summary.iloc[-1]['windows']} windows
({summary.iloc[-1]['windows'] * float(info.get('window_s', 10)) / 3600:.1f} h of 2-lead 360 Hz ECG) {annotate_s:.0f} s,
script total {total_s:.0f} s ({'model loaded from --workdir, trained by an earlier run of the same command' if info.get('reused') else 'labelling + training + annotation'}).

## Model

{info.get('encoder')} (random init, no pretraining), lead II at 250 Hz, 0.5-40 Hz band-pass, 10 s windows;
three linear heads on one encoder (ecgjax.annotate.train_heads): AF (PTB-XL AFIB statement),
heart-rate class (001: bradycardia < 60, normal, tachycardia > 100 bpm, noise) and bpm, the latter two
labelled by QRS detection (wfdb XQRS on the resampled lead II, no human labels), plus synthetic
no-ECG windows for the noise class. Training: PTB-XL folds 1-7, every AFIB record plus a random
sample of the others ({info.get('train_windows')} windows, {info.get('train_af')} AF; classes
{info.get('train_hr_classes')}); validation on fold 8: {json.dumps(info.get('val', {}))}.

Automatic heart-rate labels against the cardiologists' PTB-XL rhythm statements (training records):
{agreement}

## MIT-BIH records (window {info.get('window_s')} s, stride {info.get('stride_s')} s, MLII = lead II, 360 -> 250 Hz)

AF reference: AFIB covers more than half of the window (rhythm annotations of the .atr file);
AUROC of the AF probability, undefined (nan) for records without AF; sensitivity and specificity
of the AF track thresholded at 0.5. Heart-rate reference: mean
instantaneous rate (60 / RR) of the reference beats inside the window. "HR MAE model" is the
network's bpm head, "HR MAE QRS" the detector track (qrs_hr_bpm); "HR class acc." the 4-class head
against the class of the reference rate. Windows flagged invalid (gap, flat lead, saturation) are
excluded and counted.

{markdown.table(summary.columns, summary.itertuples(index=False), _cell)}

Notes: one training seed, no pretrained encoder, no confidence intervals (window-level scores of
consecutive windows are correlated; 3 AF records). Rhythms other than AFIB count as AF-negative,
so 222's atrial flutter, nodal and SVTA episodes are the false positives behind its low specificity.
None of these records has a gap, flat lead or clipped stretch in MLII long enough to be flagged;
tests/test_annotate_cli.py checks that such windows are marked and get NaN outputs.
"""
    with open(path, "w") as f:
        f.write(text)


def main(argv):
    del argv
    began = time.perf_counter()
    os.makedirs(_WORKDIR.value, exist_ok=True)
    model, info = train_or_load(_WORKDIR.value)
    info.update(window_s=_WINDOW_S.value, stride_s=_STRIDE_S.value)
    annotation_dir = os.path.join(_WORKDIR.value, "annotations")
    t = time.perf_counter()
    status = apply.annotate_with_model(model, _MITDB.value, annotation_dir, window_s=_WINDOW_S.value,
                                       stride_s=_STRIDE_S.value, batch_size=128)
    annotate_s = time.perf_counter() - t
    print(status)
    summary = summarise(score_records(annotation_dir, _MITDB.value, _WINDOW_S.value, _STRIDE_S.value))
    print(summary.to_string())
    report = _REPORT.value or os.path.join(_WORKDIR.value, "telemetry.md")
    write_report(report, summary, info, annotate_s, time.perf_counter() - began, "python " + " ".join(sys.argv))
    print(f"report: {report}")


if __name__ == "__main__":
    cli.run(main)
