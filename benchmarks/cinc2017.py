"""001's PhysioNet/CinC 2017 figure: the tables of benchmarks/cinc2017.md from the probe's runs.

    python experiments/probe.py --config=configs/cinc2017.py --config.data.store=stores/cinc2017 \
        --workdir=runs/cinc2017/scratch
    python experiments/probe.py --config=configs/cinc2017.py --config.data.store=stores/cinc2017 \
        --config.init=pretrained --config.checkpoint=runs/cl-resnet --workdir=runs/cinc2017/pretrained
    python benchmarks/cinc2017.py --arms=scratch=runs/cinc2017/scratch,pretrained=runs/cinc2017/pretrained \
        --variants=w10=runs/cinc2017/w10,... --output=benchmarks/cinc2017.md

An arm (NAME=probe workdir) is reported on the test split: macro F1 over N, A, O, ~ (001's figure)
and the challenge's F1 over N, A, O, with record-level (= patient-level) bootstrap 95% CIs, each
class's F1, and the same with class offsets tuned on validation. A variant (NAME=probe workdir) is
reported on the validation split alone (its best epoch's macro F1): what picked configs/cinc2017.py's
settings. The tables go between this script's markers in the Markdown (the hand-written protocol,
commands and findings around them stay); `<output stem>.json` gets the same figures.
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ecgjax import markdown  # noqa: E402
from ecgjax.data.sources.cinc2017 import CINC2017_CLASSES  # noqa: E402
from ecgjax.errors import UserError  # noqa: E402
from ecgjax.eval.runs import read_runs  # noqa: E402
from ecgjax.machine import describe as describe_machine  # noqa: E402
from ecgjax import cli  # noqa: E402

_ARMS = flags.DEFINE_list("arms", [], "NAME=probe workdir of each arm reported on the test split.")
_VARIANTS = flags.DEFINE_list("variants", [], "NAME=probe workdir of each variant compared on validation.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/cinc2017.md", "Markdown written here (JSON beside it).")

HEADLINE = ("macro_f1", "challenge_f1", "macro_f1_tuned", "challenge_f1_tuned")
MARKERS = ("<!-- tables: written by benchmarks/cinc2017.py -->", "<!-- /tables -->")


def named_runs(pairs: list[str], flag: str) -> dict[str, list[dict]]:
    """{name: the CinC 2017 run JSONs under its workdir} of 'NAME=DIR' items."""
    out = {}
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise UserError(f"--{flag}={pair}: expected NAME=probe workdir")
        runs = [r.to_json() for r in read_runs(directory) if r.task == "cinc2017"]
        if not runs:
            raise UserError(f"--{flag}={pair}: no cinc2017 run JSON under {directory}; run experiments/probe.py "
                            f"--config=configs/cinc2017.py --workdir={directory} first")
        out[name] = runs
    return out


def summarise(runs: list[dict], key: str) -> str:
    """mean (± std over seeds) [bootstrap 95% CI, averaged over seeds] of one metric."""
    values = [r["metrics"][key] for r in runs]
    text = f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")
    cis = [r["ci"][key] for r in runs if key in r.get("ci", {})]
    if cis:
        text += f" [{np.mean([c[0] for c in cis]):.3f}, {np.mean([c[1] for c in cis]):.3f}]"
    return text


def validation_score(run: dict) -> float:
    """The best epoch's validation macro F1 (what picked the epoch)."""
    return max(max(scores) for scores in run["extra"]["val_scores"].values())


def facts(runs: list[dict]) -> dict:
    extra = runs[0]["extra"]
    return dict(seeds=len(runs), window_s=extra["window_s"], checkpoint=extra["checkpoint"], store=extra["store"],
                n_train=extra["n_train"], n_val=extra["n_val"], n_test=extra["n_test"],
                epochs_run=[r["extra"]["epochs_run"] for r in runs],
                best_epoch=[r["extra"]["best_epoch"] for r in runs],
                validation_macro_f1=[validation_score(r) for r in runs],
                seconds=[r["extra"]["seconds"] for r in runs])


def tables(arms: dict, variants: dict, machine: str) -> str:
    begin, end = MARKERS
    lines = [begin, f"Tables: `python {' '.join(sys.argv)}`", "", f"Machine: {machine}.", ""]
    if variants:
        lines += ["Variants on the validation split (the best epoch's macro F1 over N, A, O, ~: the only "
                  "figure the choice used):", "",
                  markdown.table(["variant", "window", "epochs run", "best epoch", "validation macro F1",
                                  "wall time"],
                                 [[name, f"{runs[0]['extra']['window_s']:g} s",
                                   ", ".join(str(sum(r["extra"]["epochs_run"].values())) for r in runs),
                                   ", ".join(str(r["extra"]["best_epoch"]["epoch"]) for r in runs),
                                   ", ".join(f"{validation_score(r):.3f}" for r in runs),
                                   f"{sum(r['extra']['seconds'] for r in runs) / 60:.0f} min"]
                                  for name, runs in variants.items()]), ""]
    if arms:
        n_test = next(iter(arms.values()))[0]["extra"]["n_test"]
        lines += [f"Test split ({n_test} records): mean over seeds [record-level bootstrap 95% CI].", "",
                  markdown.table(["arm", "seeds", "macro F1 (N, A, O, ~)", "challenge F1 (N, A, O)",
                                  "macro F1, tuned offsets", "challenge F1, tuned", "wall time"],
                                 [[name, len(runs), *(summarise(runs, key) for key in HEADLINE),
                                   f"{sum(r['extra']['seconds'] for r in runs) / 60:.0f} min"]
                                  for name, runs in arms.items()]),
                  "", "F1 per class on the test split (argmax; mean over seeds):", "",
                  markdown.table(["arm", *CINC2017_CLASSES, "validation macro F1"],
                                 [[name, *(f"{np.mean([r['metrics'][f'f1/{c}'] for r in runs]):.3f}"
                                           for c in CINC2017_CLASSES),
                                   ", ".join(f"{validation_score(r):.3f}" for r in runs)]
                                  for name, runs in arms.items()]), ""]
    return "\n".join(lines + [end])


def write(arms: dict, variants: dict) -> None:
    machine = describe_machine(with_load=False)
    begin, end = MARKERS
    path = pathlib.Path(_OUTPUT.value)
    text = path.read_text() if path.is_file() else "# PhysioNet/CinC 2017 (001's protocol)\n\n"
    block = tables(arms, variants, machine)
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    summary = {"arms": {name: {**{key: float(np.mean([r["metrics"][key] for r in runs]))
                                  for key in (*HEADLINE, *(f"f1/{c}" for c in CINC2017_CLASSES))},
                               "ci": {key: [r["ci"].get(key) for r in runs] for key in ("macro_f1", "challenge_f1")},
                               **facts(runs)} for name, runs in arms.items()},
               "variants": {name: facts(runs) for name, runs in variants.items()},
               "command": f"python {' '.join(sys.argv)}", "machine": machine}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _ARMS.value and not _VARIANTS.value:
        raise UserError("--arms and --variants are both empty: pass NAME=probe workdir for at least one")
    write(named_runs(_ARMS.value, "arms"), named_runs(_VARIANTS.value, "variants"))


if __name__ == "__main__":
    cli.run(main)
