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
from ecgjax.annotate import apply, reference, rhythm_records, sampling, train_heads, training_records
from ecgjax.annotate.operating_point import rates_at_threshold, threshold_at_sensitivity
from ecgjax.annotate.run import record_paths
from ecgjax.data import splits
from ecgjax.data.sources import ptbxl
from ecgjax.data.sources.cinc2017 import CINC2017_SPLIT, cinc2017_items
from ecgjax.downstream.model import is_saved
from ecgjax.errors import UserError
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
_CINC = flags.DEFINE_string("cinc", str(SHARED_DATA / "cinc2017"), "CinC 2017 folder (official layout): its "
                            "train split's records join the training crops, its val split the validation "
                            "windows, its test split is scored (AF against other rhythms); '' for none.")
_SHARES = flags.DEFINE_list("source_shares", ["0.6", "0.4"], "Batch shares of PTB-XL and CinC crops (base model).")
_MITDB_STEPS = flags.DEFINE_integer("mitdb_steps", 400, "Steps fine-tuning the base model with crops of the "
                                                        "MIT-BIH records beside PTB-XL / CinC: left out one record "
                                                        "at a time for the scores, all for the saved model; 0: none.")
_MITDB_SHARES = flags.DEFINE_list("mitdb_shares", ["0.4", "0.3", "0.3"],
                                  "Batch shares of PTB-XL, CinC and MIT-BIH crops while fine-tuning.")
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


def _cache(workdir: str | None, name: str) -> str | None:
    """Where labelled records of `name` are cached in `workdir` (None: not cached)."""
    others = None if _OTHERS.value < 0 else _OTHERS.value
    return (os.path.join(workdir, f"records_{name}_{_FS.value:g}hz_{others}_{_SEED.value}_{'-'.join(_LEADS.value)}.npz")
            if _CACHE.value and workdir else None)


@functools.lru_cache(maxsize=4)
def cinc_split(root: str) -> dict[str, list[str]]:
    """CinC 2017 record ids per split, as a store of it splits them (sources.cinc2017.CINC2017_SPLIT;
    each record its own patient)."""
    ids = [item["record_id"] for item in cinc2017_items(root)]
    names = splits.assign_splits(pd.DataFrame({"patient_id": ids}), CINC2017_SPLIT)
    return {split: [i for i, n in zip(ids, names) if n == split] for split in ("train", "val", "test")}


def _cinc_records(workdir: str | None, split: str) -> training_records.RecordSet:
    ids = cinc_split(_CINC.value)[split]
    records, _ = training_records.cached_records(
        _cache(workdir, f"cinc_{split}"), lambda: rhythm_records.load_cinc_records(_CINC.value, ids, fs=_FS.value))
    return records


def _crops(records: training_records.RecordSet) -> sampling.CropSampler:
    return sampling.CropSampler(records, _WINDOW_S.value, group_fractions=tuple(map(float, _GROUPS.value)))


def training_data(workdir: str, log=print):
    """({'ptbxl': sampler, 'cinc': sampler or absent}, validation windows, what they hold): PTB-XL
    folds 1-7 (+ CinC's train split) to train on, fold 8 lead II (+ CinC's val split) to choose the
    AF threshold on; labelled once and cached in <workdir>/records_*.npz."""
    rng = np.random.default_rng(_SEED.value)
    began = time.perf_counter()
    table = ptbxl.load_ptbxl_table(_PTBXL.value)
    others = None if _OTHERS.value < 0 else _OTHERS.value
    load = functools.partial(training_records.load_records, _PTBXL.value, fs=_FS.value, workers=_WORKERS.value)
    train, cached = training_records.cached_records(_cache(workdir, "train"), lambda: load(
        training_records.select_records(table, TRAIN_FOLDS, others, rng), leads=_LEADS.value))
    val_records, _ = training_records.cached_records(_cache(workdir, "val"), lambda: load(
        training_records.select_records(table, VAL_FOLDS, None, rng), leads=("II",)))
    samplers = {"ptbxl": _crops(train)}
    val = [sampling.fixed_crops(val_records, "II", _WINDOW_S.value)]
    info = {"train": _group_counts(train), "val_records": len(val_records), "val_af": int(val_records.af.sum()),
            "leads": list(train.leads), "group_fractions": list(samplers["ptbxl"].group_fractions),
            "label_agreement": _label_agreement(train), "labels_cached": cached}
    if _CINC.value:
        cinc_train, cinc_val = _cinc_records(workdir, "train"), _cinc_records(workdir, "val")
        samplers["cinc"] = _crops(cinc_train)
        val.append(sampling.fixed_crops(cinc_val, "I", _WINDOW_S.value))
        info.update(cinc_train=_group_counts(cinc_train), cinc_val_pieces=len(cinc_val))
    length = val[0].windows.shape[1]
    val = train_heads.HeadData.concatenate(val)
    val = train_heads.HeadData.concatenate([val, train_heads.noise_windows(len(val) // 25, length, 1, _FS.value, rng)])
    info["labelling_s"] = time.perf_counter() - began
    log(f"{len(train)} PTB-XL train records, {len(val)} validation windows labelled in {info['labelling_s']:.0f}s; "
        f"{_group_counts(train)}" + (f"; CinC {info['cinc_train']}" if "cinc" in samplers else ""))
    return samplers, val, info


def _mixed(samplers: dict, mitdb=None, shares=None) -> sampling.MixedSampler:
    """The PTB-XL (+ CinC) samplers, and a `mitdb` one, at `shares` of ptbxl, cinc, mitdb in that
    order (default --source_shares)."""
    chosen = {**samplers, **({"mitdb": mitdb} if mitdb else {})}
    given = dict(zip(["ptbxl", "cinc", "mitdb"], map(float, shares or _SHARES.value)))
    return sampling.MixedSampler(tuple(chosen.values()), tuple(given.get(name, 0.0) for name in chosen))


def train_or_load(workdir: str, samplers: dict, val, info: dict, log=print):
    """The base model (PTB-XL, + CinC): <workdir>/base (before MIT-BIH fine-tuning), trained unless
    it is there and --retrain is not given."""
    model_dir = os.path.join(workdir, "base")
    trained = is_saved(model_dir) and os.path.isfile(os.path.join(workdir, "training.json"))
    if trained and not _RETRAIN.value:
        log(f"loading {model_dir}")
        with open(os.path.join(workdir, "training.json")) as f:
            return loader.load_trained(str(model_dir)), {**json.load(f), "reused": True}
    began = time.perf_counter()
    length = val.windows.shape[1]
    encoder_config = {"name": "resnet18", "chan_start": _CHAN_START.value, "in_leads": 1, "num_samples": length}
    model = train_heads.train_heads(_mixed(samplers), val, encoder_config=encoder_config, fs=_FS.value,
                                    leads=("II",), window_s=_WINDOW_S.value, steps=_STEPS.value,
                                    batch_size=_BATCH.value, learning_rate=_LR.value, seed=_SEED.value,
                                    log_every=250, log=log)
    model.save(model_dir)
    info = {**info, "training_s": time.perf_counter() - began, "steps": _STEPS.value, "batch_size": _BATCH.value,
            "encoder": encoder_config, "fs": _FS.value, "workers": _WORKERS.value, "crop_s": _WINDOW_S.value,
            "source_shares": list(map(float, _SHARES.value)), "cinc": _CINC.value,
            "val": model.history[-1].get("val", {})}
    with open(os.path.join(workdir, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
    return model, info


def finetune_on_records(base, samplers: dict, pieces: training_records.RecordSet, val, seed: int, log=print):
    """`base` trained --mitdb_steps further on crops of `pieces` (MIT-BIH) beside PTB-XL / CinC, at a
    quarter of the base learning rate; the AF threshold chosen again on the validation windows."""
    return train_heads.train_heads(_mixed(samplers, _crops(pieces), _MITDB_SHARES.value), val,
                                   encoder_config=base.encoder_config, fs=base.fs, leads=base.leads,
                                   window_s=base.window_s, steps=_MITDB_STEPS.value, batch_size=_BATCH.value,
                                   learning_rate=_LR.value / 4, seed=seed, log_every=_MITDB_STEPS.value, log=log,
                                   start=base)


def leave_one_record_out(base, samplers: dict, val, pieces, annotation_dir: str, window_s: float,
                         log=print) -> tuple[dict, int]:
    """For each MIT-BIH record: the base fine-tuned on the pieces of the other records annotates it
    (into `annotation_dir`); returns ({record name: that model's AF threshold}, models fine-tuned
    by this call). Records already
    annotated there (thresholds.json) are kept: a killed run goes on where it stopped."""
    paths = record_paths(_MITDB.value)
    done_file = os.path.join(annotation_dir, "thresholds.json")
    thresholds = json.loads(pathlib.Path(done_file).read_text()) if os.path.isfile(done_file) else {}
    trained = 0
    for index, path in enumerate(paths):
        name = os.path.basename(path)
        if name in thresholds and os.path.isfile(os.path.join(annotation_dir, f"{name}.csv")):
            continue
        log(f"leave-one-record-out: fine-tuning without {name}")
        model = finetune_on_records(base, samplers, pieces.subset(pieces.ecg_ids != index), val,
                                    _SEED.value + 1 + index, log)
        apply.annotate_with_model(model, path, annotation_dir, window_s=window_s, stride_s=window_s,
                                  batch_size=128, plot=False)
        thresholds[name] = apply.af_threshold(model)
        pathlib.Path(done_file).write_text(json.dumps(thresholds, indent=1))
        trained += 1
    log(f"leave-one-record-out: {trained} models fine-tuned, {len(paths) - trained} records' annotations reused")
    return thresholds, trained


def cinc_test_scores(model, workdir: str | None = None) -> dict:
    """AF AUROC on CinC 2017's test split (records no model here trained on): one centred crop per
    10 s piece of lead I, AF pieces against those of other rhythms (O), of normal rhythm (N), of
    both; and per record (mean over its pieces)."""
    pieces = _cinc_records(workdir, "test")
    af = model.predict(sampling.fixed_crops(pieces, "I", model.window_s).windows)[train_heads.AF_KEY]
    labels = np.array(["A" if g == training_records.AF else "O" if g == training_records.CONFOUNDER else "N"
                       for g in pieces.group])
    frame = pd.DataFrame({"record": pieces.ecg_ids, "label": labels, "af": af})
    records = frame.groupby("record").agg(label=("label", "first"), af=("af", "mean"))
    out = {"pieces": len(frame), "records": len(records)}
    for level, table in (("piece", frame), ("record", records)):
        positive = table.loc[table["label"] == "A", "af"].values
        for against, chosen in (("O", ["O"]), ("N", ["N"]), ("N+O", ["N", "O"])):
            out[f"{level} AUROC A vs {against}"] = _auroc(positive, table.loc[table["label"].isin(chosen), "af"].values)
    out["A / O / N pieces"] = [int((labels == c).sum()) for c in "AON"]
    return out


def score_records(annotation_dir: str, mitdb: str, window_s: float, stride_s: float,
                  af_threshold: float | dict = 0.5) -> pd.DataFrame:
    """One row per window of every record: predicted tracks next to the reference tracks, and the AF
    threshold of the model that annotated it (`af_threshold`: one, or {record name: threshold})."""
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
        tracks["rhythm_group"] = ref["rhythm_group"]
        tracks["af_threshold"] = af_threshold[name] if isinstance(af_threshold, dict) else af_threshold
        frames.append(tracks)
    return pd.concat(frames, ignore_index=True)


def _af_scores(frame) -> dict:
    """AUROC of the AF track, the specificity at sensitivity AF_SENSITIVITY read off this frame's own ROC
    (a property of the ranking, no threshold carried), and sensitivity / specificity at each window's
    'af_threshold' (chosen on validation windows by the model that annotated it)."""
    ok = frame["valid"].astype(bool) & frame["af_prob"].notna()
    y, p = frame.loc[ok, "ref_af"].values, frame.loc[ok, "af_prob"].values
    both = len(np.unique(y)) == 2
    own = rates_at_threshold(y, p, threshold_at_sensitivity(y, p, train_heads.AF_SENSITIVITY))
    carried = rates_at_threshold(y, p - frame.loc[ok, "af_threshold"].values, 0.0)
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


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, frame in [*scores.groupby("record", sort=True), ("pooled", scores)]:
        rows.append({"record": name, "windows": len(frame), "invalid": int((~frame["valid"].astype(bool)).sum()),
                     "AF windows": int(frame["ref_af"].sum()), **_af_scores(frame),
                     "HR MAE model (bpm)": _mae(frame, "heart_rate"), "HR MAE QRS (bpm)": _mae(frame, "qrs_hr_bpm"),
                     "HR class acc.": _class_accuracy(frame)})
    return pd.DataFrame(rows)


HARD_RECORD = "119"  # MIT-BIH's ectopy-heavy record in ../shared (bigeminy, trigeminy, no AF)


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    if not (positive.size and negative.size):
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(positive.size), np.zeros(negative.size)], np.r_[positive, negative]))


def by_rhythm(scores: pd.DataFrame) -> pd.DataFrame:
    """AF AUROC of every AF window against the non-AF windows of each reference rhythm group (and
    of record 119), with the share of those windows flagged AF at their model's threshold."""
    ok = scores[scores["valid"].astype(bool) & scores["af_prob"].notna()]
    positive = ok.loc[ok["ref_af"] == 1, "af_prob"].values
    negative = ok[ok["ref_af"] == 0]
    groups = [(g, negative[negative["rhythm_group"] == g]) for g in reference.RHYTHM_GROUPS[1:]]
    groups.append((f"record {HARD_RECORD}, all", negative[negative["record"].astype(str) == HARD_RECORD]))
    return pd.DataFrame([{"non-AF windows": name, "windows": len(frame),
                          "AUROC against all AF windows": _auroc(positive, frame["af_prob"].values),
                          "flagged AF at thr.": (float(np.mean(frame["af_prob"] >= frame["af_threshold"]))
                                                 if len(frame) else float("nan"))}
                         for name, frame in groups])


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


ABLATION = "## Ablation"  # hand-written section (runs of this script with other flags), kept across reruns


def _kept_ablation(path) -> str:
    """The report's existing ablation section, verbatim, or ''."""
    if not os.path.isfile(path):
        return ""
    text = pathlib.Path(path).read_text()
    return text[text.index(ABLATION):].rstrip() + "\n" if ABLATION in text else ""


RUN_TITLES = {
    "leave-one-record-out": "the base model fine-tuned on the other seven MIT-BIH records (leave-one-record-out): "
                            "how the saved model (fine-tuned on all eight) does on a record it never saw",
    "base": "the base model (PTB-XL + CinC 2017, no MIT-BIH)",
}


def _mitdb_tables(runs: dict) -> str:
    parts = []
    for name, scores in runs.items():
        summary, groups = summarise(scores), by_rhythm(scores)
        parts += [f"### {RUN_TITLES.get(name, name)}", "",
                  markdown.table(summary.columns, summary.itertuples(index=False), _cell), "",
                  "Non-AF windows by reference rhythm, each against every AF window of the eight records:", "",
                  markdown.table(groups.columns, groups.itertuples(index=False), _cell), ""]
    return "\n".join(parts)


def _cinc_table(cinc: dict, crop_s: float) -> str:
    if not cinc:
        return "(not run: --cinc='')"
    keys = [k for k in next(iter(cinc.values())) if "AUROC" in k]
    rows = [[name, *[cinc[name][k] for k in keys]] for name in cinc]
    counts = next(iter(cinc.values()))
    return (f"{counts['records']} records, {counts['pieces']} pieces of 10 s (A / O / N: {counts['A / O / N pieces']}); "
            f"one centred {crop_s:g} s crop per piece; per record: mean over its pieces.\n\n"
            + markdown.table(["model", *keys], rows, _cell))


def write_report(path, runs, info, annotate_s, total_s, command, af_threshold):
    cpu = cpu_model()
    agreement = "\n".join(f"- {code} ({v['records']} records): " +
                          ", ".join(f"{k} {v[k]}" for k in HEART_RATE_CLASSES)
                          for code, v in info.get("label_agreement", {}).items())
    train, sens = info.get("train", {}), train_heads.AF_SENSITIVITY
    windows = len(next(iter(runs.values())))
    cinc_train = info.get("cinc_train")
    text = f"""# Continuous annotation of MIT-BIH telemetry: AF and heart-rate tracks

Command: `{command}`

Hardware: {cpu.strip()} ({os.cpu_count()} cores, shared with other jobs; CPU only), Python {platform.python_version()}.
Wall time: labelling {info.get('labelling_s', 0):.0f} s ({'read from the records cache of an earlier run' if info.get('labels_cached') else f"reading PTB-XL, QRS detection in {info.get('workers')} processes"}), training
{info.get('training_s', 0):.0f} s ({info.get('steps')} steps of {info.get('batch_size')} crops, sampled and augmented
on the fly), MIT-BIH fine-tuning ({info.get('mitdb_models', 0)} models{'' if info.get('mitdb_models', 0) == 9 else
", the other left-out records' annotations reused from an earlier run"}) {info.get('mitdb_s', 0):.0f} s, annotation by the base model of {windows} windows ({windows * float(info.get('annotate_window_s', 10)) / 3600:.1f} h of
2-lead 360 Hz ECG) {annotate_s:.0f} s, script total {total_s:.0f} s
({'base model loaded from --workdir, trained by an earlier run of the same command' if info.get('reused') else 'labelling + training + fine-tuning + annotation'}).

## Model and training data

{info.get('encoder')} (random init, no pretraining), one lead at {info.get('fs'):g} Hz, 0.5-40 Hz band-pass,
{info.get('crop_s'):g} s input; three linear heads on one encoder (ecgjax.annotate.train_heads): AF (PTB-XL
AFIB statement), heart-rate class (001: bradycardia < 60, normal, tachycardia > 100 bpm, noise) and bpm
(Huber loss), the latter two labelled by QRS detection (wfdb XQRS on lead II at 250 Hz, no human labels).

Training records: PTB-XL folds 1-7, all of them ({train.get('records')}: {train.get('af')} AF,
{train.get('confounder_records')} AF-negative records with a rhythm AF is mistaken for, by code
{train.get('confounder_codes')}; atrial flutter is a negative, as MIT-BIH's reference keeps '(AFL' apart
from '(AFIB'), and {f"CinC 2017's train split (10 s pieces of the hand-held lead: {cinc_train['records']}, {cinc_train['af']} AF, {cinc_train['confounder_records']} of other rhythms 'O'; '~' left out)" if cinc_train else "no CinC records"},
at batch shares {info.get('source_shares')} (ecgjax.annotate.rhythm_records, sampling.MixedSampler).
Every step draws a fresh batch (ecgjax.annotate.sampling.CropSampler): shares
{info.get('group_fractions')} of other / confounder / AF records (rare confounder codes drawn more often),
one random {info.get('crop_s'):g} s crop of one random lead of {info.get('leads')} (II a third of the time)
or of CinC's one lead, gain 0.4-2.5x, baseline wander, white noise, then the band-pass; the crop's bpm
and class are recomputed from the beats inside the crop; 3 % synthetic no-ECG windows for the noise class.

MIT-BIH fine-tuning ({info.get('mitdb_steps')} steps, a quarter of the learning rate, batch shares
{info.get('mitdb_shares')} of PTB-XL / CinC / MIT-BIH crops): the MIT-BIH records cut into 10 s pieces of
MLII, a piece AF when '(AFIB' covers all of it, AF-negative when no AF touches it (with the codes of
its rhythm and beats: bigeminy, flutter, nodal, ventricular beats ...), left out otherwise:
{info.get('mitdb_pieces')}. The saved model is fine-tuned on all eight records; its figures below are
those of eight models each fine-tuned without the record it annotates.

Validation (PTB-XL fold 8, all {info.get('val_records')} records, {info.get('val_af')} AF, lead II,
centred crop{f", and CinC's val split, {info.get('cinc_val_pieces')} pieces" if cinc_train else ""}): {json.dumps({k: round(v, 4) for k, v in info.get('val', {}).items()})}.
The AF threshold (base model: {af_threshold:.4f}) is the one giving sensitivity {sens:g} on these
validation windows, chosen again after each fine-tuning; it is carried unchanged to MIT-BIH (and
into the model's history, where annotate.apply reads it for the '(AFIB' labels of the WFDB output).

Automatic heart-rate labels of whole training records against the cardiologists' rhythm statements:
{agreement}

## MIT-BIH records (window {info.get('annotate_window_s'):g} s, stride {info.get('annotate_window_s'):g} s, MLII = lead II, 360 -> {info.get('fs'):g} Hz)

AF reference: '(AFIB' covers more than half of the window (rhythm annotations of the .atr file;
'(AFL' flutter, '(SVTA', '(NOD', bigeminy ... count as AF-negative). "AF AUROC" is undefined (nan)
for records without AF; "spec@sens{sens:g}" is the specificity at sensitivity {sens:g} on the pooled (or
the record's) own ROC, a property of the ranking; "AF sens@thr" / "AF spec@thr" use the threshold
chosen on the validation windows. Heart-rate reference: mean instantaneous rate (60 / RR) of the
reference beats inside the window. "HR MAE model" is the network's bpm head, "HR MAE QRS" the
detector track (qrs_hr_bpm); "HR class acc." the 4-class head against the class of the reference
rate. Windows flagged invalid (gap, flat lead, saturation) are excluded and counted. Rhythm groups
of the non-AF windows (ecgjax.annotate.reference.rhythm_groups): flutter, SVT, nodal when '(AFL',
'(SVTA', '(NOD' or '(AB' touches the window; else ventricular ectopy when bigeminy, trigeminy, VT or a
ventricular beat is in it; else sinus ('(N' only); other: AF in less than half of the window.

{_mitdb_tables(runs)}

Notes: one training seed, no confidence intervals (window-level scores of consecutive windows are
correlated; 3 AF records). None of these records has a gap, flat lead or clipped stretch in MLII long
enough to be flagged; tests/test_annotate_cli.py checks that such windows are marked and get NaN
outputs.

## CinC 2017 test split: AF against other rhythms on records no model here trained on

{_cinc_table(info.get('cinc_test', {}), info.get('crop_s', 0.0))}

{_kept_ablation(path)}"""
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")


def check_flags() -> None:
    """Bad shares or an unreadable --cinc fail in one line before any record is labelled."""
    for flag, expected in ((_SHARES, 2), (_MITDB_SHARES, 3)):
        try:
            values = [float(v) for v in flag.value]
        except ValueError:
            values = []
        if len(values) != expected or min(values) < 0 or not sum(values) > 0:
            raise UserError(f"--{flag.name}={','.join(flag.value)}: expected {expected} shares >= 0 with a "
                            f"positive sum (ptbxl, cinc{', mitdb' if expected == 3 else ''})")
    if _CINC.value:
        cinc_split(_CINC.value)  # reads REFERENCE.csv: a wrong folder is named now, not after PTB-XL's labelling


def main(argv):
    del argv
    check_flags()
    began = time.perf_counter()
    workdir = _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    samplers, val, info = training_data(workdir)
    base, info = train_or_load(workdir, samplers, val, info)
    window_s = _ANNOTATE_S.value or base.window_s
    info.update(annotate_window_s=window_s, mitdb_steps=_MITDB_STEPS.value,
                mitdb_shares=list(map(float, _MITDB_SHARES.value)))
    t = time.perf_counter()
    base_dir = os.path.join(workdir, "annotations_base")
    print(apply.annotate_with_model(base, _MITDB.value, base_dir, window_s=window_s, stride_s=window_s,
                                    batch_size=128, plot=False))
    annotate_s = time.perf_counter() - t
    runs = {"base": score_records(base_dir, _MITDB.value, window_s, window_s, apply.af_threshold(base))}
    final = base
    if _MITDB_STEPS.value:
        t = time.perf_counter()
        pieces = rhythm_records.load_annotated_records(record_paths(_MITDB.value), fs=base.fs, piece_s=10.0)
        info["mitdb_pieces"] = _group_counts(pieces)
        loro_dir = os.path.join(workdir, "annotations_loro")
        thresholds, info["mitdb_models"] = leave_one_record_out(base, samplers, val, pieces, loro_dir, window_s)
        runs = {"leave-one-record-out": score_records(loro_dir, _MITDB.value, window_s, window_s, thresholds), **runs}
        final = finetune_on_records(base, samplers, pieces, val, _SEED.value)
        info["mitdb_models"] += 1
        info["mitdb_s"] = time.perf_counter() - t
    final.save(os.path.join(workdir, "model"))
    for name, scores in runs.items():
        scores.to_csv(os.path.join(workdir, f"scores_{name}.csv"), index=False)
    cinc = {name: cinc_test_scores(m, workdir) for name, m in (("base", base), ("model", final))} if _CINC.value else {}
    info["cinc_test"] = cinc
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)
    for name, scores in runs.items():
        print(name, summarise(scores).to_string(), by_rhythm(scores).to_string(), sep="\n")
    print(json.dumps(cinc, indent=1))
    report = _REPORT.value or os.path.join(workdir, "telemetry.md")
    write_report(report, runs, info, annotate_s, time.perf_counter() - began, "python " + " ".join(sys.argv),
                 apply.af_threshold(base))
    print(f"report: {report}")


if __name__ == "__main__":
    cli.run(main)
