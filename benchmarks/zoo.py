r"""Builds the released models (ecgjax/zoo/NAME: weights, config, card, checksums) and re-checks
every card's figures.

    # an encoder, from a pretraining run (+ the probe workdirs whose run JSONs the card tabulates)
    python benchmarks/zoo.py --name=cl-resnet18-ptbxl --source=runs/cl-resnet18 --store=stores/ptbxl \
        --probes=runs/zoo-cl-ft-f1,runs/zoo-cl-linear-f1
    # the classifier, from a probe's saved model: evaluated here on the test fold (bootstrap CIs)
    python benchmarks/zoo.py --name=ptbxl-superclass \
        --source=runs/zoo-superclass/models/superclass_finetune_seed0 --store=stores/ptbxl
    # the annotator, from benchmarks/telemetry.py's workdir: evaluated here on the MIT-BIH records
    python benchmarks/zoo.py --name=telemetry-af-hr --source=runs/telemetry/model
    # every released card's figures computed again from the shipped files, and the differences
    python benchmarks/zoo.py --check --store=stores/ptbxl

Each entry holds `figures.json` (what its card reports, with how it was computed) and `card.md`
written from it; `--check` recomputes the classifier's and the annotator's figures from the
shipped weights on the full test fold / the MIT-BIH records and lists every figure that moved by
more than --tolerance (encoder figures come from probe runs, whose commands the card names). The
cards were computed with float32 products, and `--check` computes them so too (JAX's "float32"
precision): what it lists is a change of files or code. With the default products of a CPU with AMX
(one bf16 pass, ecgjax.models.products) figures move by up to ~0.02 (heart-rate MAE in bpm), 0.005
elsewhere (benchmarks/RESULTS.md).
Stores: PTB-XL ingested at 250 Hz (python -m ecgjax.data.ingest --source=ptbxl ...).
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import shlex
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags

from ecgjax import api, cli, loader, zoo
from ecgjax.errors import UserError
from ecgjax.annotate import apply, train_heads
from ecgjax.data.store import ECGStore
from ecgjax.eval import runs as runs_lib
from ecgjax.machine import describe
from ecgjax.train import state as state_lib
from ecgjax.zoo.evaluation import (SUPERCLASSES, classifier_figures, reference_embedding,
                                    subset_figures)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ECGJAX_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "benchmarks"))
import telemetry  # noqa: E402  (its annotation scoring, and its flags --mitdb / --ptbxl)

_NAME = flags.DEFINE_string("name", None, "Released model to build (ecgjax/zoo/NAME).")
_SOURCE = flags.DEFINE_string("source", None, "Pretraining run, or saved model folder, to release.")
_STORE = flags.DEFINE_string("store", "stores/ptbxl", "PTB-XL store (250 Hz) for the classifier's figures.")
_PROBES = flags.DEFINE_list("probes", [], "Probe workdirs whose run JSONs an encoder's card tabulates.")
_CHECK = flags.DEFINE_bool("check", False, "Recompute every released card's figures and list the differences.")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.002, "--check: largest difference that is not reported.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Patient-level bootstrap resamples for the CIs.")
_BUILD_COMMAND = flags.DEFINE_string("build_command", "", "The command that trained --source (for the card).")
_BUILD_TIME = flags.DEFINE_string("build_time", "", "Its wall time and machine (for the card).")

FOLDS = {"train": "1-7", "val": "8", "test": "9"}
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")  # the ../shared copy's protocol (its data README)
PTBXL_DATA = ("PTB-XL v1.0.3 as in ../shared: training folds 1-7 (a patient-level subset of ~60% of those "
              "folds' patients), validation fold 8, test fold 9")
PTBXL_LICENCE = ("PTB-XL v1.0.3 (Wagner et al., Scientific Data 7, 154, 2020; PhysioNet), CC BY 4.0: "
                 "records of folds 1-7 of the copy in ../shared (a patient-level subset of ~60% of those "
                 "folds), validation fold 8, test fold 9")
MITDB_LICENCE = ("MIT-BIH Arrhythmia Database (Moody & Mark, IEEE EMB 20(3), 2001; PhysioNet), ODC-By 1.0: "
                 "the 8 records in ../shared")
CINC_LICENCE = ("PhysioNet/CinC Challenge 2017 training set (Clifford et al., Computing in Cardiology 44, 2017; "
                "PhysioNet), ODC-By 1.0: the train split of the half in ../shared")
INTENDED = ("Research on ECG representation learning and its evaluation. Not a medical device: not "
            "validated for diagnosis, triage or monitoring of patients.")


# ------------------------------------------------------------------------------------ figures

def annotator_figures(model: api.Model, mitdb: str) -> dict:
    """benchmarks/telemetry.py's window-level scores of the MIT-BIH records (per record and pooled)."""
    with tempfile.TemporaryDirectory() as out:
        window_s = model.window_s
        apply.annotate_with_model(model.trained, mitdb, out, window_s=window_s, stride_s=window_s, batch_size=128,
                                  plot=False)
        scores = telemetry.score_records(out, mitdb, window_s, window_s, apply.af_threshold(model.trained))
    figures = {"window_s": window_s, "af_threshold": apply.af_threshold(model.trained),
               "per_record": _rows(telemetry.summarise(scores)), "by_rhythm": _rows(telemetry.by_rhythm(scores))}
    if telemetry._CINC.value:
        figures["cinc_test"] = telemetry.cinc_test_scores(model.trained)
    return figures


def _rows(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def held_out_figures(workdir: pathlib.Path) -> dict:
    """benchmarks/telemetry.py's leave-one-record-out scores of the MIT-BIH records (each annotated
    by the base fine-tuned without it), when its workdir holds them; {} otherwise."""
    path = workdir / "scores_leave-one-record-out.csv"
    if not path.is_file():
        return {}
    import pandas as pd  # only here: the other figures need no frames
    scores = pd.read_csv(path, dtype={"record": str})
    return {"per_record": _rows(telemetry.summarise(scores)), "by_rhythm": _rows(telemetry.by_rhythm(scores))}


def probe_figures(workdirs) -> list[dict]:
    """One row per (mode, fraction) of the run JSONs under the probe workdirs: macro AUROC over
    seeds and the first seed's CI."""
    runs = [(w, runs_lib.RunRecord.from_json(json.loads(p.read_text())))
            for w in workdirs for p in sorted(pathlib.Path(w).glob("eval/**/*.json"))]
    rows, where = {}, {}
    for workdir, run in runs:
        rows.setdefault((run.mode, run.data_fraction), []).append(run)
        where[(run.mode, run.data_fraction)] = workdir
    out = []
    for (mode, fraction), group in sorted(rows.items()):
        group.sort(key=lambda r: r.seed)
        values = [r.metrics["macro_auroc"] for r in group]
        out.append({"mode": mode, "data_fraction": fraction, "seeds": [r.seed for r in group],
                    "workdir": where[(mode, fraction)],
                    "macro_auroc": float(np.mean(values)), "std": float(np.std(values)),
                    "ci_seed0": group[0].ci.get("macro_auroc"),
                    "per_class": {k.split("/")[1]: float(np.mean([r.metrics[k] for r in group]))
                                  for k in group[0].metrics if k.startswith("auroc/")}})
    return out


def probe_command(name: str, row: dict) -> str:
    """The probe command behind one row of an encoder card (the runs were made with exactly this)."""
    return (f"python experiments/probe.py --config=configs/probe.py --config.checkpoint=zoo:{name} "
            f"--config.task=superclass --config.data.store=stores/ptbxl --config.folds.train=1-7 "
            f"--config.folds.val=8 --config.folds.test=9 --config.mode={row['mode']} "
            f"--config.data_fraction={row['data_fraction']:g} --config.first_seed={min(row['seeds'])} "
            f"--config.seeds={len(row['seeds'])} --workdir={row['workdir']}")


def parameter_count(folder: pathlib.Path) -> dict:
    kind = loader.kind_of(folder)
    if kind == "model":
        model = loader.load_trained(str(folder))
        return {"total": state_lib.count_params(model.variables.get("params", {}))}
    network = loader.load_pretrained(str(folder))
    params = network.variables["params"]
    return {"encoder": state_lib.count_params(params["encoder"]), "total": state_lib.count_params(params)}


# ------------------------------------------------------------------------------------ cards

def _command() -> str:
    """This script's command line, quoted, without the flags that only annotate the card."""
    kept = [a for a in sys.argv[1:] if not a.startswith(("--build_command", "--build_time"))]
    return shlex.join(["python", "benchmarks/zoo.py", *kept])


def _recipe(config) -> str:
    """What a pretraining run did, in a few words (its command is in the card)."""
    return (f"{int(config.train.num_steps)} steps of {int(config.train.batch_size)} "
            f"{float(config.data.segment_s):g} s segments at {float(config.data.fs):g} Hz")


def _f(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _ci(pair) -> str:
    return f"[{_f(pair[0])}, {_f(pair[1])}]" if pair else ""


def card_text(name: str, info: dict) -> str:
    f = info["figures"]
    lines = [f"# {name}", "", info["summary"], "", "## How it was built", "",
             f"- Training data: {info['data']}.", f"- Rebuild: `{info['build_command']}`",
             f"  then `{info['release_command']}`.",
             f"- Wall time and machine: {info['build_time']}.",
             f"- Parameters: {', '.join(f'{k} {v:,}' for k, v in info['parameters'].items())}.",
             f"- Input: {info['input']}.", "", "## Results", ""]
    if info["kind"] == "encoder":
        lines += ["Superclass macro AUROC on PTB-XL test fold 9 (train folds 1-7 thinned at patient level to the "
                  "fraction, validation fold 8; `experiments/probe.py` with `configs/probe.py` defaults; the "
                  "commands are below). Mean over seeds; CI: patient-level bootstrap of the first seed.", "",
                  "| mode | labels | seeds | macro AUROC | 95% CI (seed 0) | NORM | MI | STTC | CD | HYP |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in f["probes"]:
            pc = row["per_class"]
            lines.append(f"| {row['mode']} | {row['data_fraction']:.0%} | {len(row['seeds'])} | "
                         f"{_f(row['macro_auroc'])} ± {_f(row['std'])} | {_ci(row['ci_seed0'])} | " +
                         " | ".join(_f(pc.get(c)) for c in SUPERCLASSES) + " |")
        if not f["probes"]:
            lines.append("| (no probe runs recorded for this release) | | | | | | | | | |")
        lines += ["", "Probe commands:", ""] + [f"    {c}" for c in info.get("probe_commands", [])]
    elif info["kind"] == "classifier":
        m, ci = f["metrics"], f["ci"]
        lines += [f"PTB-XL test fold 9: {f['records']} records of {f['patients']} patients; CIs: patient-level "
                  f"bootstrap ({info['bootstrap']} resamples). F1 at the thresholds chosen on validation fold 8 "
                  f"(recorded in the model, applied by `.labels()` and `experiments/predict.py`).", "",
                  "| class | AUROC | 95% CI | AUPRC | 95% CI | F1 at threshold | 95% CI | threshold |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in SUPERCLASSES:
            lines.append(f"| {c} | {_f(m[f'auroc/{c}'])} | {_ci(ci.get(f'auroc/{c}'))} | {_f(m[f'auprc/{c}'])} | "
                         f"{_ci(ci.get(f'auprc/{c}'))} | {_f(m[f'f1_tuned/{c}'])} | {_ci(ci.get(f'f1_tuned/{c}'))} | "
                         f"{f['thresholds'][c]:.3f} |")
        lines.append(f"| **macro** | **{_f(m['macro_auroc'])}** | {_ci(ci.get('macro_auroc'))} | "
                     f"{_f(m.get('macro_auprc'))} | {_ci(ci.get('macro_auprc'))} | {_f(m['macro_f1_tuned'])} | | |")
    else:
        lines += _annotator_results(f, info.get("held_out", {}))
    lines += ["", f"Figures computed by `{info['figures_command']}` on {info['figures_machine']}; "
              "`python benchmarks/zoo.py --check` recomputes them from the shipped files.", "",
              "## Intended use", "", INTENDED, "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in info["limits"]]
    lines += ["", "## Licence and citation", "", f"- {info['data_licence']}", "- ecgjax: this repository.", ""]
    return "\n".join(lines)


def _record_table(rows) -> list[str]:
    lines = ["| record | windows | AF windows | AF AUROC | spec. at sens. 0.9 | AF sens. at thr. | "
             "AF spec. at thr. | HR MAE model (bpm) | HR MAE QRS (bpm) |", "|---|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {row['record']} | {row['windows']} | {row['AF windows']} | {_f(row['AF AUROC'])} | "
                     f"{_f(row['spec@sens0.9'])} | {_f(row['AF sens@thr'])} | {_f(row['AF spec@thr'])} | "
                     f"{_f(row['HR MAE model (bpm)'])} | {_f(row['HR MAE QRS (bpm)'])} |" for row in rows]


def _rhythm_table(rows) -> list[str]:
    return (["| non-AF windows | windows | AUROC against all AF windows | flagged AF at thr. |", "|---|---|---|---|"] +
            [f"| {r['non-AF windows']} | {r['windows']} | {_f(r['AUROC against all AF windows'])} | "
             f"{_f(r['flagged AF at thr.'])} |" for r in rows])


def _annotator_results(f: dict, held_out: dict) -> list[str]:
    """An annotator's card: MIT-BIH records it never saw (leave-one-record-out, from
    benchmarks/telemetry.py), CinC 2017's test split, then the shipped weights on the MIT-BIH records."""
    lines = []
    intro = (f"MIT-BIH records in ../shared, {f['window_s']:g} s windows back to back (lead MLII), scored against "
             f"the reference rhythm and beat annotations as `benchmarks/telemetry.py` does; AF threshold chosen "
             f"for sensitivity 0.9 on the validation windows (this model's: {f['af_threshold']:.3f}).")
    if held_out:
        lines += ["**Held out** (the figures to expect on new recordings): each record annotated by the base model "
                  "fine-tuned on the other seven records, as this one was on all eight (`benchmarks/telemetry.py`, "
                  "benchmarks/telemetry.md). " + intro, "", *_record_table(held_out["per_record"]), "",
                  "Non-AF windows by reference rhythm, against every AF window:", "",
                  *_rhythm_table(held_out["by_rhythm"]), ""]
    if "cinc_test" in f:
        c = f["cinc_test"]
        lines += [f"**CinC 2017 test split** (the store's hashed 20 %; {c['records']} single-lead records this model "
                  f"never saw, {c['pieces']} pieces of 10 s, one centred crop each): AF AUROC against other rhythms "
                  f"(O) {_f(c['piece AUROC A vs O'])} per piece, {_f(c['record AUROC A vs O'])} per record; "
                  f"against normal rhythm (N) {_f(c['piece AUROC A vs N'])} / {_f(c['record AUROC A vs N'])}.", ""]
    lines += [("**The shipped weights on the same records**, which it was fine-tuned on (a check that the files "
               "are the model, not an estimate): " if held_out else "") + intro, "", *_record_table(f["per_record"])]
    if "by_rhythm" in f:
        lines += ["", *_rhythm_table(f["by_rhythm"])]
    return lines


COMMON_LIMITS = [
    "PTB-XL's 100 Hz records (resampled to the model's rate): content above 50 Hz was never seen.",
    "One hospital's population (Physikalisch-Technische Bundesanstalt, Germany, 1989-1996) and its devices.",
    "Folds 1-7 of the shared copy hold about 60% of those folds' patients; one record per patient on average.",
]


def annotator_info(model: api.Model, workdir: pathlib.Path) -> dict:
    """Figures and card text of an annotator from benchmarks/telemetry.py's workdir (its results.json
    says what it was trained on)."""
    results = workdir / "results.json"
    trained = json.loads(results.read_text()) if results.is_file() else {}
    cinc, mitdb = bool(trained.get("cinc")), bool(trained.get("mitdb_steps"))
    data = ("PTB-XL folds 1-7 of the shared copy (AFIB statements; QRS-detected heart rates)" +
            (", CinC 2017's train split of the shared half (A / O / N, 10 s pieces)" if cinc else "") +
            (", then fine-tuned with 10 s pieces of the 8 MIT-BIH records of ../shared (reference rhythm and "
             "beats)" if mitdb else ""))
    return {"kind": "annotator", "figures": annotator_figures(model, telemetry._MITDB.value),
            "held_out": held_out_figures(workdir) if mitdb else {},
            "summary": "AF probability, heart-rate class and bpm per window of a single-lead recording (a ResNet18 "
                       f"trained from scratch on PTB-XL{' and CinC 2017' if cinc else ''} crops"
                       f"{', fine-tuned with MIT-BIH records' if mitdb else ''}; the model behind "
                       "`experiments/annotate.py --checkpoint=zoo:telemetry-af-hr`).",
            "input": f"{model.window_s:g} s windows of one lead (II or similar) at {model.fs:g} Hz, "
                     f"band-passed {model.band_hz}",
            "data": data,
            "data_licence": "; ".join([PTBXL_LICENCE, *([CINC_LICENCE] if cinc else []), MITDB_LICENCE]),
            "limits": COMMON_LIMITS + [
                "One window at a time (8 s): no rhythm context beyond it. Atrial flutter and nodal rhythm are "
                "its hardest negatives (the held-out rhythm table).",
                f"Judged on 8 MIT-BIH records (3 with AF){', each by a model that did not train on it' if mitdb else ''}"
                " and CinC 2017's test split; on MIT-BIH AF records outside ../shared with runs of VT, flutter and "
                "multiform PVCs an earlier version (PTB-XL only) had a pooled AF AUROC of 0.67 (issue 28)."]}


def build(name: str, source: str, store_path: str) -> pathlib.Path:
    with tempfile.TemporaryDirectory() as staging:
        staging = pathlib.Path(staging)
        kind = loader.kind_of(pathlib.Path(source)) if os.path.isdir(source) else None
        started = time.perf_counter()
        if kind == "run":
            network = loader.load_pretrained(source, "--source")
            network.config.data.store = ""  # a path on the builder's machine: the user passes their own
            loader.export_pretrained(network, staging)
            model = api.Model(f"zoo:{name}", network)
            info = {"kind": "encoder",
                    "figures": {"probes": probe_figures(_PROBES.value)},
                    "summary": f"A {network.method} {network.encoder_config['name']} encoder pretrained on PTB-XL "
                               f"({_recipe(network.config)}), with its projection head: embed records, probe, "
                               f"fine-tune or continue pretraining (`--config.init_from=zoo:{name}`).",
                    "input": f"{model.window_s:g} s windows of 12 leads at {model.fs:g} Hz, mV (absent leads zero)",
                    "data": PTBXL_DATA + "; labels never read by pretraining",
                    "data_licence": PTBXL_LICENCE, "limits": COMMON_LIMITS}
            info["probe_commands"] = [probe_command(name, row) for row in info["figures"]["probes"]]
        elif kind == "model":
            for path in pathlib.Path(source).iterdir():
                if path.is_file():
                    (staging / path.name).write_bytes(path.read_bytes())
            model = api.Model(f"zoo:{name}", loader.load_trained(source, "--source"))
            if train_heads.AF_KEY in model.output_names:  # the annotation heads (annotate.train_heads)
                info = annotator_info(model, pathlib.Path(source).parent)
            else:
                figures = classifier_figures(model, ECGStore(store_path), _BOOTSTRAP.value)
                figures["subset"] = subset_figures(model, telemetry._PTBXL.value)
                info = {"kind": "classifier", "figures": figures, "bootstrap": _BOOTSTRAP.value,
                        "summary": "Probabilities of the five PTB-XL diagnostic superclasses (NORM, MI, STTC, CD, "
                                   "HYP) per record, and labels at thresholds chosen on validation.",
                        "input": f"12 leads at {model.fs:g} Hz (any rate and lead order through ecgjax.load), "
                                 f"{model.window_s:g} s windows half a window apart, averaged per record",
                        "data": PTBXL_DATA + "; fine-tuned on every training record's labels",
                        "data_licence": PTBXL_LICENCE, "limits": COMMON_LIMITS + [
                            "Superclasses from cardiologists' SCP statements; likelihoods were not available in "
                            "the shared copy (every statement counted)."]}
        else:
            raise UserError(f"--source={source}: pass a pretraining run or a saved model folder")
        if info["kind"] != "annotator":
            info["reference_embedding"] = reference_embedding(model, telemetry._PTBXL.value)
        info.update(parameters=parameter_count(staging), build_command=_BUILD_COMMAND.value or "(not recorded)",
                    build_time=_BUILD_TIME.value or "(not recorded)",
                    release_command=_command(), figures_command=_command(), figures_machine=describe(),
                    figures_seconds=round(time.perf_counter() - started, 1))
        (staging / "figures.json").write_text(json.dumps(info, indent=1))
        return zoo.release(name, staging, "encoder" if info["kind"] == "encoder" else "model",
                           info["summary"], card_text(name, info))


def _flat(tree, prefix="") -> dict:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(tree, list) and tree and isinstance(tree[0], dict):
        for i, v in enumerate(tree):
            out.update(_flat(v, f"{prefix}{v.get('record', i)}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix.rstrip(".")] = float(tree)
    return out


def check(store_path: str, tolerance: float) -> int:
    """Recomputes the figures of every released classifier and annotator; returns how many differ."""
    differing = 0
    for name in zoo.names():
        folder = zoo.verified_path(name)
        info = json.loads((folder / "figures.json").read_text())
        if info["kind"] == "encoder":
            print(f"{name}: encoder; its figures come from the probe runs its card names (not recomputed)")
            continue
        model = api.load(f"zoo:{name}")
        if info["kind"] == "annotator":
            now = annotator_figures(model, telemetry._MITDB.value)
        else:  # the whole test fold, and the fixed subset tests/test_zoo.py reads
            now = classifier_figures(model, ECGStore(store_path), info.get("bootstrap", _BOOTSTRAP.value))
            now["subset"] = subset_figures(model, telemetry._PTBXL.value)
        before, after = _flat(info["figures"]), _flat(now)
        moved = {k: (before[k], after.get(k)) for k in before
                 if not (after.get(k) is not None and (abs(before[k] - after[k]) <= tolerance or
                                                       (np.isnan(before[k]) and np.isnan(after[k]))))}
        differing += len(moved)
        print(f"{name}: {len(before)} figures, {len(moved)} differ by more than {tolerance:g} "
              f"({describe()}, Python {platform.python_version()})")
        for key, (a, b) in sorted(moved.items()):
            print(f"  {key}: card {a:.4f}, now {b if b is None else round(b, 4)}")
    return differing


def main(argv):
    del argv
    if _CHECK.value:
        with jax.default_matmul_precision("float32"):  # as the cards were computed
            return 1 if check(_STORE.value, _TOLERANCE.value) else 0
    if not _NAME.value or not _SOURCE.value:
        raise UserError("pass --name and --source to build a release, or --check")
    folder = build(_NAME.value, _SOURCE.value, _STORE.value)
    print(f"released {_NAME.value}: {folder} ({sum(p.stat().st_size for p in folder.iterdir()) / 1e6:.1f} MB)")
    print((folder / zoo.CARD).read_text())
    return 0


if __name__ == "__main__":
    cli.run(main)
