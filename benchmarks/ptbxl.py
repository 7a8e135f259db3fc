"""The real-data result: does pretraining beat from-scratch encoders on PTB-XL when labels are scarce?

    python benchmarks/ptbxl.py --store=stores/ptbxl --hl=runs/ptbxl-hl --cl=runs/ptbxl-cl \
        --workdir=runs/ptbxl-eval --output=benchmarks/ptbxl.md

Arms (003 Tables 4-5): linear probe and fine-tuning of the HL and CL encoders, a linear probe
of the same architecture at random initialisation, and the same architecture trained supervised
from scratch. Every arm is trained on the 5-label diagnostic-superclass task (one model gives
MI, STTC, CD, HYP and NORM scores) at 1%, 10% and 100% of the training patients (patient-level
subsamples, nested, fixed seeds), selected on the validation fold and scored on the test fold
with patient-level bootstrap 95% CIs. Re-running skips (arm, fraction) pairs already done.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for configs/
from configs import probe as probe_configs  # noqa: E402
from ecgjax import markdown  # noqa: E402
from ecgjax.eval import probe, report  # noqa: E402
from ecgjax.eval.metrics import CRITERIA_TASKS  # noqa: E402
from ecgjax.machine import describe as describe_machine  # noqa: E402
from ecgjax.train.metrics_log import setup_console_logging  # noqa: E402

_STORE = flags.DEFINE_string("store", None, "Ingested PTB-XL store.")
_HL = flags.DEFINE_string("hl", None, "HL pretraining workdir.")
_CL = flags.DEFINE_string("cl", None, "CL pretraining workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where run JSONs go.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/ptbxl.md", "Markdown written here.")
_FOLDS = flags.DEFINE_list("folds", ["1-7", "8", "9"], "train, val, test folds (shared copy: 1-7 / 8 / 9).")
_FRACTIONS = flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Training-patient fractions.")
_SEEDS = flags.DEFINE_list("seeds", ["3", "2", "1"], "Seeds per fraction.")
_EPOCHS = flags.DEFINE_list("epochs", ["10", "8", "3"], "Fine-tuning epochs per fraction (CPU budget).")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamples for the CIs.")
flags.mark_flags_as_required(["store", "hl", "cl", "workdir"])

LABELS = CRITERIA_TASKS
# (arm name, which pretraining run gives the checkpoint / architecture, init, mode)
ARMS = (
    ("HL linear", "hl", "pretrained", "linear"),
    ("HL fine-tune", "hl", "pretrained", "finetune"),
    ("Random-init linear", "hl", "random", "linear"),
    ("Supervised from scratch", "hl", "supervised", "finetune"),
    ("CL linear", "cl", "pretrained", "linear"),
    ("CL fine-tune", "cl", "pretrained", "finetune"),
)


def arm_dir(name: str, fraction: float) -> pathlib.Path:
    slug = name.lower().replace(" ", "_").replace("-", "")
    return pathlib.Path(_WORKDIR.value) / f"{slug}_f{fraction:g}"


def run_arm(name, which, init, mode, fraction, seeds, epochs) -> list[dict]:
    directory = arm_dir(name, fraction)
    done = directory / "runs.json"
    if done.is_file():
        return json.loads(done.read_text())
    c = probe_configs.get_config()
    c.checkpoint = _HL.value if which == "hl" else _CL.value
    c.init, c.mode, c.task = init, mode, "superclass"
    c.data.store = _STORE.value
    c.folds.train, c.folds.val, c.folds.test = _FOLDS.value
    c.data_fraction = fraction
    c.seeds = seeds
    c.bootstrap = _BOOTSTRAP.value
    c.optim.epochs = epochs
    started = time.perf_counter()
    runs = probe.run_probe(c, str(directory))
    for run in runs:
        run.setdefault("extra", {})["arm_seconds"] = round(time.perf_counter() - started, 1)
    done.write_text(json.dumps(runs))
    return runs


def summarise(runs: list[dict], label: str, metric: str) -> str:
    values = [r["metrics"][f"{metric}/{label}"] for r in runs]
    cis = [r["ci"].get(f"{metric}/{label}") for r in runs if r.get("ci")]
    text = f"{np.mean(values):.3f}"
    if len(values) > 1:
        text += f" ± {np.std(values, ddof=1):.3f}"
    if cis:
        low, high = np.mean([c[0] for c in cis]), np.mean([c[1] for c in cis])
        text += f" [{low:.3f}, {high:.3f}]"
    return text



BEGIN, END = "<!-- tables: written by benchmarks/ptbxl.py -->", "<!-- /tables -->"


def write_markdown(results: dict) -> None:
    """Writes the result tables between the BEGIN/END markers of the output file, keeping the
    hand-written setup and findings around them (a new file gets the tables alone)."""
    fractions = [float(f) for f in _FRACTIONS.value]
    seconds = sum(runs[0]["extra"]["arm_seconds"] for runs in results.values() if runs)
    lines = [BEGIN, f"Machine: {describe_machine(with_load=False)}. Probing wall time (all arms, as run): "
             f"{seconds / 60:.1f} min.", ""]
    for metric in ("auroc", "auprc"):
        lines += [f"### Test {metric.upper()} (mean ± std over seeds [patient-level bootstrap 95% CI, "
                  "averaged over seeds])", ""]
        for fraction in fractions:
            rows = [[name, len(runs), *(summarise(runs, label, metric) for label in LABELS)]
                    for name, *_ in ARMS if (runs := results.get((name, fraction)))]
            lines += [f"#### {fraction:.0%} of training labels", "",
                      markdown.table(["arm", "seeds", *LABELS], rows), ""]
    lines.append(END)
    tables = "\n".join(lines)
    path = pathlib.Path(_OUTPUT.value)
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + tables + text[text.index(END) + len(END):]
    else:
        text = "# PTB-XL: pretrained vs from-scratch encoders under label scarcity\n\n" + tables + "\n"
    path.write_text(text)


def main(argv):
    del argv
    setup_console_logging()
    results = {}
    plan = list(zip([float(f) for f in _FRACTIONS.value], map(int, _SEEDS.value), map(int, _EPOCHS.value)))
    for name, which, init, mode in ARMS:
        for fraction, seeds, epochs in plan:
            print(f"== {name} at {fraction:.0%} ({seeds} seeds)", flush=True)
            results[(name, fraction)] = run_arm(name, which, init, mode, fraction, seeds, epochs)
            write_markdown(results)
    report.write_report(_WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
