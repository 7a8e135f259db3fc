"""AF and heart-rate tracks on the MIT-BIH records: train (or load) the heads, annotate, score, report.

    python benchmarks/telemetry.py --workdir=/tmp/ecgjax_telemetry [--retrain] [--steps=3000] \
        [--report=benchmarks/telemetry.md]

--ptbxl and --mitdb default to ../shared/data/{ptbxl,mitdb} beside the repository (or under
$ECGJAX_SHARED_DATA); the report goes to <workdir>/telemetry.md unless --report names another file.

1. Training records: every PTB-XL record of folds 1-7 (AF, the rhythms mistaken for AF, the rest),
   leads I, II, III, aVF, V1, V2, V5 at 100 Hz, beats by QRS detection on lead II
   (ecgjax.annotate.training_records; cached in <workdir>/records_*.npz). Validation: fold 8, lead II.
2. One small encoder (ResNet18, chan_start 8, random init) fine-tuned with the AF, heart-rate class
   and bpm heads on random single-lead crops drawn afresh every step, amplitude-augmented, each
   labelled from the beats inside it (ecgjax.annotate.sampling); the AF threshold for sensitivity 0.9
   is chosen on the validation fold. Saved in <workdir>/model (reused unless --retrain).
3. Every record of --mitdb annotated through the same code path as experiments/annotate.py.
4. Window-level scores against the reference annotations (.atr): AUROC of the AF track (AFIB
   covering > half the window vs the rest), specificity at sensitivity 0.9, sensitivity and
   specificity at the PTB-XL threshold, per record and pooled; MAE of the heart-rate tracks against
   the heart rate of the reference beats. Writes the report (markdown).
"""
from __future__ import annotations

import functools
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

from ecgjax import cli, loader, markdown
from ecgjax.annotate import apply, reference, sampling, train_heads, training_records
from ecgjax.annotate.operating_point import rates_at_threshold, threshold_at_sensitivity
from ecgjax.annotate.run import record_paths
from ecgjax.data.sources import ptbxl
from ecgjax.downstream.model import is_saved
from ecgjax.machine import cpu_model
from ecgjax.signal.heart_rate import HEART_RATE_CLASSES, heart_rate_class, heart_rate_from_beats

# The shared data beside the checkout (as in tests/conftest.py), wherever the repository lives.
SHARED_DATA = pathlib.Path(os.environ.get("ECGJAX_SHARED_DATA",
                                          pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/ecgjax_telemetry", "Model, annotations and scores go here.")
_PTBXL = flags.DEFINE_string("ptbxl", str(SHARED_DATA / "ptbxl"), "PTB-XL root (100 Hz records).")
_MITDB = flags.DEFINE_string("mitdb", str(SHARED_DATA / "mitdb"), "Folder of MIT-BIH records with .atr.")
_REPORT = flags.DEFINE_string("report", None, "Markdown report to write (default <workdir>/telemetry.md; "
                                              "pass benchmarks/telemetry.md to update the tracked one).")
_RETRAIN = flags.DEFINE_bool("retrain", False, "Train even if <workdir>/model exists.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Fine-tuning steps.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Windows per step.")
_LR = flags.DEFINE_float("learning_rate", 2e-3, "Peak AdamW learning rate (cosine decay).")
_OTHERS = flags.DEFINE_integer("non_af_train", -1, "Other (neither AF nor confounder) PTB-XL training records; "
                                                   "-1: all (every AF and confounder record is always used).")
_LEADS = flags.DEFINE_list("leads", list(training_records.TRAIN_LEADS), "Leads the single-lead crops are cut from.")
_GROUPS = flags.DEFINE_list("group_fractions", ["0.4", "0.3", "0.3"], "Batch shares of other / confounder / AF records.")
_CHAN_START = flags.DEFINE_integer("chan_start", 8, "ResNet18 width.")
_FS = flags.DEFINE_float("fs", 100.0, "Model sampling rate (PTB-XL's own 100 Hz).")
_WINDOW_S = flags.DEFINE_float("window_s", 8.0, "Training crop (s), cut at random from PTB-XL's 10 s records.")
_ANNOTATE_S = flags.DEFINE_float("annotate_window_s", None, "Annotation window and stride on MIT-BIH (s); default "
                                                            "the model's input length (a ResNet takes others, but "
                                                            "its bpm and AF outputs shift with the length).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling and initialisation seed.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Processes for QRS detection of the training records.")
_CACHE = flags.DEFINE_bool("cache_records", True, "Keep the labelled PTB-XL records in <workdir>/records_*.npz "
                                                  "and reuse them (labelling runs once per set of flags).")

TRAIN_FOLDS, VAL_FOLDS = range(1, 8), (8,)  # this copy of PTB-XL has folds 1-9 (data README)


def _label_agreement(records: training_records.RecordSet) -> dict:
    """How the QRS-made class of whole records agrees with the cardiologists' SBRAD / SR / STACH."""
    length = records.signals.shape[1] * records.beat_fs / records.fs
    bpm = np.array([heart_rate_from_beats(b, records.beat_fs, np.array([0]), int(length))[0] for b in records.beats])
    classes = heart_rate_class(bpm)
    result = {}
    for code in ("SBRAD", "SR", "STACH"):
        has = np.array([code in c for c in records.codes])
        if has.any():
            result[code] = {"records": int(has.sum()),
                            **{name: int((classes[has] == k).sum()) for k, name in enumerate(HEART_RATE_CLASSES)}}
    return result


def _group_counts(records: training_records.RecordSet) -> dict:
    confounders = {code: sum(code in c and "AFIB" not in c for c in records.codes)
                   for code in training_records.CONFOUNDER_CODES}
    return {"records": len(records), "af": int(records.af.sum()),
            "confounder_records": int((records.group == training_records.CONFOUNDER).sum()),
            "confounder_codes": confounders}


def train_or_load(workdir: str, log=print):
    model_dir = os.path.join(workdir, "model")
    trained = is_saved(model_dir) and os.path.isfile(os.path.join(workdir, "training.json"))
    if trained and not _RETRAIN.value:
        log(f"loading {model_dir}")
        with open(os.path.join(workdir, "training.json")) as f:
            return loader.load_trained(str(model_dir)), {**json.load(f), "reused": True}
    rng = np.random.default_rng(_SEED.value)
    began = time.perf_counter()
    table = ptbxl.load_ptbxl_table(_PTBXL.value)
    others = None if _OTHERS.value < 0 else _OTHERS.value
    load = functools.partial(training_records.load_records, _PTBXL.value, fs=_FS.value, workers=_WORKERS.value)
    cache = lambda name: (os.path.join(workdir, f"records_{name}_{_FS.value:g}hz_{others}_{_SEED.value}_"  # noqa: E731
                                       f"{'-'.join(_LEADS.value)}.npz") if _CACHE.value else None)
    train, cached = training_records.cached_records(cache("train"), lambda: load(
        training_records.select_records(table, TRAIN_FOLDS, others, rng), leads=_LEADS.value))
    val_records, _ = training_records.cached_records(cache("val"), lambda: load(
        training_records.select_records(table, VAL_FOLDS, None, rng), leads=("II",)))
    labelled = time.perf_counter() - began
    val = sampling.fixed_crops(val_records, "II", _WINDOW_S.value)
    length = val.windows.shape[1]
    val = train_heads.HeadData.concatenate([val, train_heads.noise_windows(len(val) // 25, length, 1, _FS.value, rng)])
    log(f"{len(train)} train / {len(val)} val records labelled in {labelled:.0f}s; {_group_counts(train)}")
    sampler = sampling.CropSampler(train, _WINDOW_S.value, group_fractions=tuple(map(float, _GROUPS.value)))
    encoder_config = {"name": "resnet18", "chan_start": _CHAN_START.value, "in_leads": 1, "num_samples": length}
    model = train_heads.train_heads(sampler, val, encoder_config=encoder_config, fs=_FS.value, leads=("II",),
                                    window_s=_WINDOW_S.value, steps=_STEPS.value, batch_size=_BATCH.value,
                                    learning_rate=_LR.value, seed=_SEED.value, log_every=250, log=log)
    model.save(model_dir)
    info = {"train": _group_counts(train), "val_records": len(val_records), "val_af": int(val_records.af.sum()),
            "leads": list(train.leads), "group_fractions": list(sampler.group_fractions),
            "label_agreement": _label_agreement(train), "labelling_s": labelled, "labels_cached": cached,
            "training_s": time.perf_counter() - began - labelled, "steps": _STEPS.value, "batch_size": _BATCH.value,
            "encoder": encoder_config, "fs": _FS.value, "workers": _WORKERS.value, "crop_s": _WINDOW_S.value,
            "val": model.history[-1].get("val", {})}
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


def _af_scores(frame, threshold: float) -> dict:
    """AUROC of the AF track, the specificity at sensitivity AF_SENSITIVITY read off this frame's own ROC
    (a property of the ranking, no threshold carried), and sensitivity / specificity at `threshold`
    (chosen on PTB-XL validation)."""
    ok = frame["valid"].astype(bool) & frame["af_prob"].notna()
    y, p = frame.loc[ok, "ref_af"].values, frame.loc[ok, "af_prob"].values
    both = len(np.unique(y)) == 2
    own = rates_at_threshold(y, p, threshold_at_sensitivity(y, p, train_heads.AF_SENSITIVITY))
    carried = rates_at_threshold(y, p, threshold)
    return {"AF AUROC": float(roc_auc_score(y, p)) if both else float("nan"),
            f"spec@sens{train_heads.AF_SENSITIVITY:g}": own["specificity"] if both else float("nan"),
            "AF sens@thr": carried["sensitivity"], "AF spec@thr": carried["specificity"]}


def _mae(frame, key):
    ok = frame["valid"].astype(bool) & frame[key].notna() & frame["ref_hr_bpm"].notna()
    return float(np.mean(np.abs(frame.loc[ok, key] - frame.loc[ok, "ref_hr_bpm"]))) if ok.any() else float("nan")


def _class_accuracy(frame):
    probs = frame[[f"hr_class_prob_{k}" for k in range(len(HEART_RATE_CLASSES))]].values
    ok = frame["valid"].astype(bool).values & np.isfinite(probs).all(1) & frame["ref_hr_bpm"].notna().values
    truth = heart_rate_class(frame["ref_hr_bpm"].values[ok])
    return float(np.mean(probs[ok].argmax(1) == truth)) if ok.any() else float("nan")


def summarise(scores: pd.DataFrame, af_threshold: float) -> pd.DataFrame:
    rows = []
    for name, frame in [*scores.groupby("record", sort=True), ("pooled", scores)]:
        rows.append({"record": name, "windows": len(frame), "invalid": int((~frame["valid"].astype(bool)).sum()),
                     "AF windows": int(frame["ref_af"].sum()), **_af_scores(frame, af_threshold),
                     "HR MAE model (bpm)": _mae(frame, "heart_rate"), "HR MAE QRS (bpm)": _mae(frame, "qrs_hr_bpm"),
                     "HR class acc.": _class_accuracy(frame)})
    return pd.DataFrame(rows)


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


ABLATION = "## Ablation"  # hand-written section (runs of this script with other flags), kept across reruns


def _kept_ablation(path) -> str:
    """The report's existing ablation section, verbatim, or ''."""
    if not os.path.isfile(path):
        return ""
    text = pathlib.Path(path).read_text()
    return text[text.index(ABLATION):].rstrip() + "\n" if ABLATION in text else ""


def write_report(path, summary, info, annotate_s, total_s, command, af_threshold):
    cpu = cpu_model()
    agreement = "\n".join(f"- {code} ({v['records']} records): " +
                          ", ".join(f"{k} {v[k]}" for k in HEART_RATE_CLASSES)
                          for code, v in info.get("label_agreement", {}).items())
    train, sens = info.get("train", {}), train_heads.AF_SENSITIVITY
    windows = summary.iloc[-1]["windows"]
    text = f"""# Continuous annotation of MIT-BIH telemetry: AF and heart-rate tracks

Command: `{command}`

Hardware: {cpu.strip()} ({os.cpu_count()} cores, shared with other jobs; CPU only), Python {platform.python_version()}.
Wall time: labelling {info.get('labelling_s', 0):.0f} s ({'read from the records cache of an earlier run' if info.get('labels_cached') else f"reading PTB-XL, QRS detection in {info.get('workers')} processes"}), training
{info.get('training_s', 0):.0f} s ({info.get('steps')} steps of {info.get('batch_size')} crops, sampled and augmented
on the fly), annotation of {windows} windows ({windows * float(info.get('annotate_window_s', 10)) / 3600:.1f} h of
2-lead 360 Hz ECG) {annotate_s:.0f} s, script total {total_s:.0f} s
({'model loaded from --workdir, trained by an earlier run of the same command' if info.get('reused') else 'labelling + training + annotation'}).

## Model and training data

{info.get('encoder')} (random init, no pretraining), one lead at {info.get('fs'):g} Hz, 0.5-40 Hz band-pass,
{info.get('crop_s'):g} s input; three linear heads on one encoder (ecgjax.annotate.train_heads): AF (PTB-XL
AFIB statement), heart-rate class (001: bradycardia < 60, normal, tachycardia > 100 bpm, noise) and bpm
(Huber loss), the latter two labelled by QRS detection (wfdb XQRS on lead II at 250 Hz, no human labels).

Training records: PTB-XL folds 1-7, all of them ({train.get('records')}: {train.get('af')} AF,
{train.get('confounder_records')} AF-negative records with a rhythm AF is mistaken for, by code
{train.get('confounder_codes')}; atrial flutter is a negative, as MIT-BIH's reference keeps '(AFL' apart
from '(AFIB'). Every step draws a fresh batch (ecgjax.annotate.sampling.CropSampler): shares
{info.get('group_fractions')} of other / confounder / AF records (rare confounder codes drawn more often),
one random {info.get('crop_s'):g} s crop of one random lead of {info.get('leads')} (II a third of the time),
gain 0.4-2.5x, baseline wander, white noise, then the band-pass; the crop's bpm and class are
recomputed from the beats inside the crop; 3 % synthetic no-ECG windows for the noise class.

Validation (PTB-XL fold 8, all {info.get('val_records')} records, {info.get('val_af')} AF, lead II,
centred crop): {json.dumps({k: round(v, 4) for k, v in info.get('val', {}).items()})}.
The AF threshold {af_threshold:.4f} is the one giving sensitivity {sens:g} on this validation fold; it is
carried unchanged to MIT-BIH (and into the model's history, where annotate.apply reads it for the
'(AFIB' labels of the WFDB output).

Automatic heart-rate labels of whole training records against the cardiologists' rhythm statements:
{agreement}

## MIT-BIH records (window {info.get('annotate_window_s'):g} s, stride {info.get('annotate_window_s'):g} s, MLII = lead II, 360 -> {info.get('fs'):g} Hz)

These records are the test: no choice above was tuned on them. AF reference: '(AFIB' covers more than
half of the window (rhythm annotations of the .atr file; '(AFL' flutter, '(SVTA', '(NOD', bigeminy
... count as AF-negative). "AF AUROC" is undefined (nan) for records without AF;
"spec@sens{sens:g}" is the specificity at sensitivity {sens:g} on the pooled (or the record's) own ROC, a
property of the ranking; "AF sens@thr" / "AF spec@thr" use the threshold chosen on PTB-XL. Heart-rate
reference: mean instantaneous rate (60 / RR) of the reference beats inside the window. "HR MAE model"
is the network's bpm head, "HR MAE QRS" the detector track (qrs_hr_bpm); "HR class acc." the 4-class
head against the class of the reference rate. Windows flagged invalid (gap, flat lead, saturation) are
excluded and counted.

{markdown.table(summary.columns, summary.itertuples(index=False), _cell)}

Notes: one training seed, no pretrained encoder, no confidence intervals (window-level scores of
consecutive windows are correlated; 3 AF records). None of these records has a gap, flat lead or
clipped stretch in MLII long enough to be flagged; tests/test_annotate_cli.py checks that such windows
are marked and get NaN outputs.

{_kept_ablation(path)}"""
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")


def main(argv):
    del argv
    began = time.perf_counter()
    os.makedirs(_WORKDIR.value, exist_ok=True)
    model, info = train_or_load(_WORKDIR.value)
    window_s = _ANNOTATE_S.value or model.window_s
    info.update(annotate_window_s=window_s)
    annotation_dir = os.path.join(_WORKDIR.value, "annotations")
    t = time.perf_counter()
    status = apply.annotate_with_model(model, _MITDB.value, annotation_dir, window_s=window_s, stride_s=window_s,
                                       batch_size=128)
    annotate_s = time.perf_counter() - t
    print(status)
    threshold = apply.af_threshold(model)
    scores = score_records(annotation_dir, _MITDB.value, window_s, window_s)
    scores.to_csv(os.path.join(_WORKDIR.value, "scores.csv"), index=False)
    summary = summarise(scores, threshold)
    print(summary.to_string())
    report = _REPORT.value or os.path.join(_WORKDIR.value, "telemetry.md")
    write_report(report, summary, info, annotate_s, time.perf_counter() - began, "python " + " ".join(sys.argv),
                 threshold)
    print(f"report: {report}")


if __name__ == "__main__":
    cli.run(main)
