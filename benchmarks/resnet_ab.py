"""A/B of the ResNet's fast-path candidates in the real CL + interlead ResNet18 pretraining step (issue 27).

    nice -n 10 python benchmarks/resnet_ab.py                  # configs/cl_resnet.py, batch 128
    python benchmarks/resnet_ab.py --variants=reference,fused_bn --steps=2 --repeats=30

The project's compiled step (`loop.Trainer`: augmentation, forward, backward, clip, AdamW) is built
once per variant of ecgjax/models/resnet1d.py's layer factories `norm` and `conv` and timed
interleaved in one process: `--repeats` blocks of `--steps` steps per variant, the order rotated
every block, so a load that changes during the run moves every variant alike. Reported per variant:
the median step time, the median and range of reference / variant over the blocks (above 1: the
variant is faster), how many blocks it won, and the load average before and after. Variants:

  reference  resnet1d.norm, resnet1d.conv: flax.linen.BatchNorm + nn.relu, nn.Conv
  fused_bn   resnet1d.fused_norm: ecgjax.models.batchnorm.BatchNorm (custom VJP, ReLU fused)
  s2d_conv   resnet1d.strided_conv: stride-2 convolutions as stride-1 ones over pairs of samples
"""
from __future__ import annotations

import os
import statistics
import time
from unittest import mock

import jax
from absl import flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.machine import describe as describe_machine
from ecgjax.models import resnet1d
from ecgjax.train import cost as cost_lib, loop, mesh as mesh_lib

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "cl_resnet.py")
_CONFIG = config_flags.DEFINE_config_file("config", CONFIG, "Config file (configs/*.py[:arg]) with a ResNet encoder.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per variant (interleaved).")


VARIANTS = {"reference": (resnet1d.norm, resnet1d.conv), "fused_bn": (resnet1d.fused_norm, resnet1d.conv),
            "s2d_conv": (resnet1d.norm, resnet1d.strided_conv)}
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Which of {', '.join(VARIANTS)}.")


class Variant:
    """The trainer's step compiled with resnet1d's `norm` and `conv` replaced, its state and batch."""

    def __init__(self, config, host_batch, norm, conv):
        with mock.patch.object(resnet1d, "norm", norm), mock.patch.object(resnet1d, "conv", conv):
            trainer = loop.Trainer(config)  # a new jit, traced (below) with these factories
            self.state = trainer.new_state()
            self.batch = mesh_lib.shard_batch(host_batch, trainer.mesh)
            self.executable = trainer.train_step.lower(self.state, self.batch).compile()
        self.metrics = None

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.state, self.metrics = self.executable(self.state, self.batch)
        jax.block_until_ready(self.metrics)
        return (time.perf_counter() - start) / steps


def main(argv):
    del argv
    config = _CONFIG.value
    print("machine:", describe_machine())
    host_batch = cost_lib.random_host_batch(config, config.train.batch_size)
    runs = {}
    for name in _VARIANTS.value:
        start = time.perf_counter()
        runs[name] = Variant(config, host_batch, *VARIANTS[name])
        runs[name].run(1)
        print(f"{name}: compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    load = os.getloadavg()[0]
    times = {k: [] for k in runs}
    order = list(runs)
    for r in range(_REPEATS.value):
        for k in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            time.sleep(0.2)
            times[k].append(runs[k].run(_STEPS.value))
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; {_REPEATS.value} x {_STEPS.value} steps "
          f"per variant, interleaved; batch {config.train.batch_size}")
    base = order[0]
    print(f"| variant | ms / step (median) | {base} / variant (median, range) | blocks faster than {base} "
          f"| loss after warm-up + blocks |\n|---|---|---|---|---|")
    for k, t in times.items():
        ratios = [b / x for b, x in zip(times[base], t)]
        print(f"| {k} | {statistics.median(t) * 1e3:.0f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) | {sum(r > 1 for r in ratios)} of {len(ratios)} "
              f"| {float(runs[k].metrics['loss']):.5f} |")
    print("machine:", describe_machine())


if __name__ == "__main__":
    cli.run(main)
