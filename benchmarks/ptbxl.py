"""The real-data result: does pretraining beat the best from-scratch encoders on PTB-XL when labels are scarce?

    python benchmarks/ptbxl.py --store=stores/ptbxl --cnn_store=stores/ptbxl100 --hl=runs/hl-vit-p125 \
        --cl=runs/cl-vit --cnn=runs/cl-resnet18-100hz --workdir=runs/ptbxl-eval --output=benchmarks/ptbxl.md

Arms (003 Tables 4-5, plus the field's supervised CNN): linear probe and fine-tuning of the HL ViT,
fine-tuning of the CL ViT, a linear probe of the same ViT at random initialisation, that ViT and the
ResNet trained supervised from scratch (the published baseline's reproduction), and the pretrained
ResNet, linear probe and fine-tuned. Arms whose checkpoint flag is not given are skipped. Every
arm uses the defaults of configs/probe.py (windowed protocol and fine-tuning recipe) on the 5-label
diagnostic-superclass task at 1%, 10% and 100% of the training patients (patient-level, nested,
fixed seeds), selected on the validation fold, scored on the test fold with patient-level
bootstrap 95% CIs. Re-running skips (arm, fraction) pairs already done. Writes the Markdown tables
and `<output stem>.json`: {"arms": {arm: {"0.01": {"macro_auroc", "macro_auprc", "seeds", ...}}},
"command", "test_folds"}.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for configs/
from configs import probe as probe_configs  # noqa: E402
from ecgjax import markdown  # noqa: E402
from ecgjax.data.splits import parse_folds  # noqa: E402
from ecgjax.eval import probe, report  # noqa: E402
from ecgjax.eval.metrics import CRITERIA_TASKS  # noqa: E402
from ecgjax.machine import describe as describe_machine  # noqa: E402
from ecgjax.train.metrics_log import setup_console_logging  # noqa: E402

_STORE = flags.DEFINE_string("store", None, "Ingested PTB-XL store at the ViT checkpoints' rate.")
_CNN_STORE = flags.DEFINE_string("cnn_store", None, "Store for the ResNet arms (default --store).")
_HL = flags.DEFINE_string("hl", None, "HL ViT pretraining workdir.")
_HL_CONV = flags.DEFINE_string("hl_conv", None, "HL ViT pretraining workdir of a conv-stem ViT (stem=conv; optional).")
_CL = flags.DEFINE_string("cl", None, "CL ViT pretraining workdir (optional).")
_CNN = flags.DEFINE_string("cnn", None, "Pretrained ResNet workdir (optional).")
_CNN_ENCODER = flags.DEFINE_string("cnn_encoder", "configs/pclr_resnet.py", "ResNet of the supervised CNN arm.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where run JSONs go.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/ptbxl.md", "Markdown written here (JSON beside it).")
_FOLDS = flags.DEFINE_list("folds", ["1-7", "8", "9"], "train, val, test folds (shared copy: 1-7 / 8 / 9).")
_FRACTIONS = flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Training-patient fractions.")
_SEEDS = flags.DEFINE_list("seeds", ["3", "2", "1"], "Seeds per fraction.")
_ARMS = flags.DEFINE_list("arms", [], "Only these arms (names as in the table); default all that can run.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamples for the CIs.")
_BLOCK = flags.DEFINE_string("block", "", "Name of the tables block this run writes in the Markdown (default: the "
                             "main block). Another name adds its own block and keeps the others; the JSON "
                             "merges the arms of every block.")
flags.mark_flags_as_required(["store", "workdir"])

LABELS = CRITERIA_TASKS
SUMMARY_METRICS = ("macro_auroc", "macro_auprc", "macro_f1_tuned")


@dataclasses.dataclass(frozen=True)
class Arm:
    """name: says what it is (pretraining, encoder, init, training); checkpoint: the flag whose
    workdir gives the encoder (None: `encoder` config alone); cnn: runs on --cnn_store."""

    name: str
    checkpoint: str | None
    init: str
    mode: str
    cnn: bool = False

    @property
    def flag(self):
        return {"hl": _HL, "hl_conv": _HL_CONV, "cl": _CL, "cnn": _CNN}.get(self.checkpoint)


ARMS = (
    Arm("HL ViT linear", "hl", "pretrained", "linear"),
    Arm("HL ViT fine-tune", "hl", "pretrained", "finetune"),
    Arm("CL ViT fine-tune", "cl", "pretrained", "finetune"),
    Arm("ViT random-init linear", "hl", "random", "linear"),
    Arm("ViT supervised from scratch", "hl", "supervised", "finetune"),
    Arm("ResNet18 CNN supervised from scratch", None, "supervised", "finetune", cnn=True),
    Arm("CL ResNet18 CNN linear", "cnn", "pretrained", "linear", cnn=True),
    Arm("CL ResNet18 CNN fine-tune", "cnn", "pretrained", "finetune", cnn=True),
    Arm("HL ViT conv-stem linear", "hl_conv", "pretrained", "linear"),
    Arm("HL ViT conv-stem fine-tune", "hl_conv", "pretrained", "finetune"),
    Arm("ViT conv-stem supervised from scratch", "hl_conv", "supervised", "finetune"),
)


def arm_dir(name: str, fraction: float) -> pathlib.Path:
    slug = name.lower().replace(" ", "_").replace("-", "")
    return pathlib.Path(_WORKDIR.value) / f"{slug}_f{fraction:g}"


def run_arm(arm: Arm, fraction: float, seeds: int) -> list[dict]:
    directory = arm_dir(arm.name, fraction)
    done = directory / "runs.json"
    if done.is_file():
        return json.loads(done.read_text())
    c = probe_configs.get_config()
    c.checkpoint = arm.flag.value if arm.flag is not None else ""
    c.encoder_config = _CNN_ENCODER.value
    c.init, c.mode, c.task = arm.init, arm.mode, "superclass"
    c.data.store = (_CNN_STORE.value or _STORE.value) if arm.cnn else _STORE.value
    c.folds.train, c.folds.val, c.folds.test = _FOLDS.value
    c.data_fraction = fraction
    c.seeds = seeds
    c.bootstrap = _BOOTSTRAP.value
    started = time.perf_counter()
    runs = probe.run_probe(c, str(directory))
    for run in runs:
        run.setdefault("extra", {})["arm_seconds"] = round(time.perf_counter() - started, 1)
    done.write_text(json.dumps(runs))
    return runs


def summarise(runs: list[dict], label: str | None, metric: str) -> str:
    """mean ± std over seeds [mean bootstrap CI] of `metric/label` (or `metric` when label is None)."""
    key = metric if label is None else f"{metric}/{label}"
    values = [r["metrics"][key] for r in runs]
    cis = [r["ci"].get(key) for r in runs if r.get("ci") and r["ci"].get(key)]
    text = f"{np.mean(values):.3f}"
    if len(values) > 1:
        text += f" ± {np.std(values, ddof=1):.3f}"
    if cis:
        low, high = np.mean([c[0] for c in cis]), np.mean([c[1] for c in cis])
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def markers() -> tuple[str, str]:
    """The BEGIN/END comments around this run's tables block (--block names it)."""
    name = f" {_BLOCK.value}" if _BLOCK.value else ""
    return f"<!-- tables{name}: written by benchmarks/ptbxl.py -->", f"<!-- /tables{name} -->"


def command_line() -> str:
    return "python " + " ".join(sys.argv)


def write_json(results: dict) -> pathlib.Path:
    """<output>.json: per arm and fraction the mean test metrics over seeds, for tools. Arms of
    other blocks (earlier runs with another --block) are kept; each entry names its command."""
    path = pathlib.Path(_OUTPUT.value).with_suffix(".json")
    previous = json.loads(path.read_text()) if path.is_file() else {}
    command = command_line()
    arms: dict = previous.get("arms", {})
    for (name, fraction), runs in results.items():
        if not runs:
            continue
        entry = {metric: float(np.mean([r["metrics"][metric] for r in runs]))
                 for metric in SUMMARY_METRICS if all(metric in r["metrics"] for r in runs)}
        entry.update({f"auroc/{label}": float(np.mean([r["metrics"][f"auroc/{label}"] for r in runs]))
                      for label in LABELS})
        entry.update(seeds=len(runs), seconds=runs[0]["extra"]["arm_seconds"],
                     epochs_run=[r["extra"].get("epochs_run") for r in runs], command=command)
        arms.setdefault(name, {})[f"{fraction:g}" if fraction < 1 else "1.0"] = entry
    main_command = command if not _BLOCK.value else previous.get("command", command)
    path.write_text(json.dumps({"arms": arms, "command": main_command, "test_folds": list(parse_folds(_FOLDS.value[2])),
                                "machine": describe_machine(with_load=False)}, indent=1) + "\n")
    return path


def write_markdown(results: dict) -> None:
    """Writes the result tables between the BEGIN/END markers of the output file, keeping the
    hand-written setup and findings around them (a new file gets the tables alone)."""
    fractions = [float(f) for f in _FRACTIONS.value]
    seconds = sum(runs[0]["extra"]["arm_seconds"] for runs in results.values() if runs)
    names = [arm.name for arm in ARMS]
    begin, end = markers()
    lines = [begin, f"Command: `{command_line()}`", "",
             f"Machine: {describe_machine(with_load=False)}. Probing wall time (all arms, as run): "
             f"{seconds / 60:.1f} min.", "", "### Macro AUROC / AUPRC over the 5 superclasses (mean over seeds)", ""]
    rows = [[name, *(summarise(runs, None, metric) if (runs := results.get((name, fraction))) else "—"
                     for fraction in fractions for metric in ("macro_auroc", "macro_auprc"))]
            for name in names if any(results.get((name, f)) for f in fractions)]
    header = [f"{metric} {fraction:.0%}" for fraction in fractions for metric in ("AUROC", "AUPRC")]
    lines += [markdown.table(["arm", *header], rows), ""]
    for metric in ("auroc", "auprc"):
        lines += [f"### Test {metric.upper()} per label (mean ± std over seeds [patient-level bootstrap 95% CI, "
                  "averaged over seeds])", ""]
        for fraction in fractions:
            rows = [[name, len(runs), *(summarise(runs, label, metric) for label in ("NORM", *LABELS))]
                    for name in names if (runs := results.get((name, fraction)))]
            lines += [f"#### {fraction:.0%} of training labels", "",
                      markdown.table(["arm", "seeds", "NORM", *LABELS], rows), ""]
    lines.append(end)
    tables = "\n".join(lines)
    path = pathlib.Path(_OUTPUT.value)
    text = path.read_text() if path.is_file() else "# PTB-XL: pretrained vs from-scratch encoders under label scarcity\n\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + tables + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + tables + "\n"
    path.write_text(text)
    write_json(results)


def main(argv):
    del argv
    setup_console_logging()
    results = {}
    plan = list(zip([float(f) for f in _FRACTIONS.value], map(int, _SEEDS.value)))
    for arm in ARMS:
        if (_ARMS.value and arm.name not in _ARMS.value) or (arm.flag is not None and not arm.flag.value):
            continue
        for fraction, seeds in plan:
            print(f"== {arm.name} at {fraction:.0%} ({seeds} seeds)", flush=True)
            results[(arm.name, fraction)] = run_arm(arm, fraction, seeds)
            write_markdown(results)
    report.write_report(_WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
