"""Where the time of one compiled pretraining step goes on this machine, and what XLA options change it.

    python benchmarks/step_profile.py --config=configs/generative.py:patch=125,depth=4,width=256,batch=128
    python benchmarks/step_profile.py --config=configs/generative.py:patch=125,depth=4,width=256,batch=128 \
        --variants='xla_cpu_prefer_vector_width=512' --variants='xla_cpu_use_onednn=true' --profile=False

--profile: the step compiled with XLA's per-thunk trace events on (xla_cpu_enable_xprof_traceme),
run under jax.profiler.trace; every thunk's wall time summed over --steps steps and grouped by what
it computes (the jax operation its HLO metadata names: attention, layer norm, the patch embedding,
the optimiser, the augmentation, ...), as a share of the step.

--variants: the same step compiled once per set of XLA debug options (`name=value[;name=value]`,
passed as jax's compiler_options, so each variant is set for this step alone and the project's
defaults are unchanged) and timed interleaved with the default compilation in one process,
--repeats blocks of --steps steps each: on a loaded machine the ratio within a run holds when the
absolute times do not.
"""
from __future__ import annotations

import collections
import os
import re
import statistics
import tempfile
import time

import jax
from absl import flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.machine import describe as describe_machine
from ecgjax.train import cost as cost_lib, loop, mesh as mesh_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed block / profiled steps.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per variant (interleaved).")
_PROFILE = flags.DEFINE_bool("profile", True, "Print the per-operation breakdown of the default step.")
_TOP = flags.DEFINE_integer("top", 25, "Rows of the breakdown.")
_VARIANTS = flags.DEFINE_multi_string("variants", [], "XLA options to time against the default, "
                                      "'name=value[;name=value]' per variant.")
flags.mark_flag_as_required("config")


def parse_options(text: str) -> dict:
    options = {}
    for item in filter(None, text.split(";")):
        name, _, value = item.partition("=")
        options[name.strip()] = _value(value.strip())
    return options


def _value(text: str):
    """'true' / 'false' -> bool, an integer -> int, else the string (XLA's option types)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if re.fullmatch(r"-?\d+", text) else text


class Compiled:
    """The trainer's step compiled with `options`, with a state of its own (the step donates it)."""

    def __init__(self, trainer, batch, options: dict):
        self.state = trainer.new_state()
        self.batch = batch
        self.executable = trainer.train_step.lower(self.state, batch).compile(compiler_options=options or None)
        self.metrics = None

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.state, self.metrics = self.executable(self.state, self.batch)
        jax.block_until_ready(self.metrics)
        return (time.perf_counter() - start) / steps


def _op_names(hlo_text: str) -> dict:
    """HLO instruction name -> the jax operation (op_name metadata) of the computation it runs."""
    names = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if m:
            names[m[1]] = m[2]
    return names


def _group(op_name: str) -> str:
    """A readable bucket from an op_name path like jit(step)/transpose(jvp(PretrainModel))/.../dot_general."""
    parts = op_name.split("/")
    backward = any(p.startswith("transpose(") for p in parts)
    modules = [p for p in parts[1:-1] if not p.startswith(("jvp(", "transpose(", "jit(", "vmap(", "pjit"))]
    leaf = re.sub(r"\[.*", "", parts[-1])
    where = "/".join(modules[-2:]) if modules else (parts[1] if len(parts) > 2 else "")
    where = re.sub(r"block\d+", "block*", where)
    return f"{'bwd ' if backward else ''}{where}:{leaf}" if where else f"{'bwd ' if backward else ''}{leaf}"


def profile(trainer, batch, steps: int, top: int) -> None:
    step = Compiled(trainer, batch, {"xla_cpu_enable_xprof_traceme": True})
    step.run(2)
    names = _op_names(step.executable.as_text())
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir):
            wall = step.run(steps) * steps
        path = next(os.path.join(d, f) for d, _, fs in os.walk(logdir) for f in fs if f.endswith(".xplane.pb"))
        from jax._src.lib import _profile_data

        data = _profile_data.ProfileData.from_file(path)
    by_thunk = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in names or event.name.split(":")[0] in names:
                    by_thunk[event.name.split(":")[0]] += event.duration_ns / 1e9
    total = sum(by_thunk.values())
    groups = collections.Counter()
    for thunk, seconds in by_thunk.items():
        groups[_group(names[thunk])] += seconds
    print(f"profiled {steps} steps: {wall / steps * 1e3:.0f} ms a step wall, thunk time {total / steps * 1e3:.0f} ms "
          f"a step (threads overlap: shares are of thunk time)")
    print("| share | ms / step | where:operation |\n|---|---|---|")
    for group, seconds in groups.most_common(top):
        print(f"| {seconds / total:.1%} | {seconds / steps * 1e3:.1f} | {group} |")
    print("| share | ms / step | HLO thunk (op_name) |\n|---|---|---|")
    for thunk, seconds in by_thunk.most_common(top):
        print(f"| {seconds / total:.1%} | {seconds / steps * 1e3:.1f} | {thunk} ({names[thunk][-90:]}) |")


def compare_variants(trainer, batch, variants: list[str], steps: int, repeats: int) -> None:
    runs = {"default": Compiled(trainer, batch, {})}
    for text in variants:
        runs[text] = Compiled(trainer, batch, parse_options(text))
    for run in runs.values():
        run.run(1)
    load = os.getloadavg()[0]
    times = {k: [] for k in runs}
    order = list(runs)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            time.sleep(0.2)
            times[k].append(runs[k].run(steps))
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; {repeats} x {steps} steps each, interleaved")
    print("| XLA options | ms / step (median) | default / this (median, range) | loss |\n|---|---|---|---|")
    for k, t in times.items():
        ratios = [d / x for d, x in zip(times["default"], t)]
        print(f"| {k} | {statistics.median(t) * 1e3:.0f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) | {float(runs[k].metrics['loss']):.5f} |")


def main(argv):
    del argv
    config = _CONFIG.value
    print("machine:", describe_machine())
    trainer = loop.Trainer(config)
    batch = mesh_lib.shard_batch(cost_lib.random_host_batch(config, config.train.batch_size), trainer.mesh)
    if _PROFILE.value:
        profile(trainer, batch, _STEPS.value, _TOP.value)
    if _VARIANTS.value:
        compare_variants(trainer, batch, _VARIANTS.value, _STEPS.value, _REPEATS.value)
    print("machine:", describe_machine())


if __name__ == "__main__":
    cli.run(main)
