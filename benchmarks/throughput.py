"""Pretraining step throughput for any config / grid cell, on CPU or GPU; with --with_loader, the
whole input path against the step alone, in the same run.

    python benchmarks/throughput.py --config=configs/hybrid.py:patch=60,depth=8,width=1024,batch=256 \
        --config.train.bf16=True --steps=20
    python benchmarks/throughput.py --config=configs/hybrid.py:patch=125,depth=4,width=256,batch=128,store=STORE \
        --with_loader --workers=0,2 --steps=30

Step alone: forward, backward and optimizer of the whole method, device augmentation included, on a
batch already on the device, shaped like the loader's (float16 crops). Reports step time,
segments/s, peak memory and model-FLOPs utilisation (MFU): the FLOPs XLA counts for the compiled
step per second, over the device's peak.

--with_loader adds, in this order: the step without augmentation (what augmenting costs), then for
each --workers count the loop's own body (read + crop batches from the real store with Grain, send
them, augment and step on the device, metrics read back every train.log_every steps), then the step
alone again (the two step-alone runs bracket the end-to-end ones, so drift shows). End-to-end over
step-alone is the share of the device's speed the input path keeps.
"""
from __future__ import annotations

import json
import resource
import time

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from ecgjax import cli
from ecgjax.data import resolve
from ecgjax.errors import UserError
from ecgjax.machine import describe as describe_machine
from ecgjax.train import cost as cost_lib, loop, mesh as mesh_lib, state as state_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement (after warm-up steps).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s; 0 looks it up.")
_JSON = flags.DEFINE_string("json", "", "Also append the result as a JSON line to this file.")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Compile and report XLA's memory analysis and FLOPs without running: "
    "sizes a big cell's memory on a machine that cannot run it.")
_WITH_LOADER = flags.DEFINE_bool("with_loader", False, "Also time loader + augmentation + step from the "
                                 "config's store (config.data.store) against the step alone.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Grain worker processes for --with_loader, one run each.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps before each measurement (workers start, caches fill).")
flags.mark_flag_as_required("config")

# Dense peak TFLOP/s per device (bf16 tensor cores; fp32 non-tensor-core in brackets not used).
_GPU_PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0}
_GPU_PEAK_FP32 = {"H100": 67.0, "H200": 67.0, "A100": 19.5, "L4": 30.3, "V100": 15.7}


def peak_tflops(bf16: bool) -> tuple[float, str]:
    """(peak TFLOP/s of all devices, how it was obtained)."""
    if _PEAK_TFLOPS.value:
        return _PEAK_TFLOPS.value * jax.device_count(), "given"
    device = jax.devices()[0]
    if device.platform == "gpu":
        table = _GPU_PEAK_BF16 if bf16 else _GPU_PEAK_FP32
        for key, value in table.items():
            if key in device.device_kind:
                return value * jax.device_count(), f"{key} spec sheet"
        return float("nan"), "unknown GPU"
    return cpu_peak_tflops()


def cpu_peak_tflops() -> tuple[float, str]:
    """cores x clock x FLOP/cycle: 64 fp32 FLOP/cycle with AVX-512 (two 16-wide FMA units), 32 with
    AVX2; the clock from BogoMIPS / 2 (x86 reports twice the TSC rate)."""
    import os

    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    per_cycle = 64 if " avx512f" in info else 32
    bogomips = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("bogomips")]
    ghz = bogomips[0] / 2000 if bogomips else 2.5
    cores = os.cpu_count()
    return (cores * ghz * 1e9 * per_cycle / 1e12,
            f"estimate {cores} cores x {ghz:.2f} GHz x {per_cycle} fp32 FLOP/cycle")


def peak_memory_gib() -> tuple[float, str]:
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS"


def _device(with_load: bool = False) -> str:
    first = jax.devices()[0]
    return first.device_kind if first.platform == "gpu" else describe_machine(with_load=with_load)


def compile_only(config) -> dict:
    c = cost_lib.step_cost(config)
    return {"device": _device(), "compile_only": True, "params_M": c["params"] / 1e6,
            "batch": config.train.batch_size, "tflops_per_step": c["flops"] / 1e12,
            "xla_memory_gib": c["memory_bytes"] / 2**30, "temp_gib": c["temp_bytes"] / 2**30,
            "argument_gib": c["argument_bytes"] / 2**30}


class StepBench:
    """One config's compiled step, its state and a device-resident batch shaped like the loader's."""

    def __init__(self, config):
        self.config = config
        self.trainer = loop.Trainer(config)
        self.state = self.trainer.new_state()
        host = cost_lib.random_host_batch(config, config.train.batch_size)
        self.batch = mesh_lib.shard_batch(host, self.trainer.mesh)
        self.compiled = self.trainer.train_step.lower(self.state, self.batch).compile()
        self.flops = cost_lib.compiled_cost(self.compiled)["flops"]
        self.metrics = None

    def step_alone(self, steps: int, warmup: int) -> float:
        """Seconds per step on the resident batch."""
        for _ in range(warmup):
            self.state, self.metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(self.metrics)
        start = time.perf_counter()
        for _ in range(steps):
            self.state, self.metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(self.metrics)
        return (time.perf_counter() - start) / steps

    def end_to_end(self, store, num_workers: int, steps: int, warmup: int) -> float:
        """Seconds per step of the pretraining loop's body fed by the loader (see the docstring)."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.data.num_workers = num_workers
        batches = iter(loop.make_dataset(config, store))
        log_every = config.train.log_every
        pending = []
        for _ in range(warmup):
            self.state, self.metrics = self.trainer.step(self.state, next(batches))
        jax.block_until_ready(self.metrics)
        start = time.perf_counter()
        for i in range(1, steps + 1):
            self.state, self.metrics = self.trainer.step(self.state, next(batches))
            pending.append(self.metrics)
            if i % log_every == 0:  # the loop reads metrics back at log steps only
                jax.device_get(pending)
                pending = []
        jax.block_until_ready(self.metrics)
        seconds = (time.perf_counter() - start) / steps
        del batches  # stops Grain's workers before the next run starts its own
        return seconds


def measure(config, steps: int) -> dict:
    bench = StepBench(config)
    step_time = bench.step_alone(steps, warmup=1)
    peak, peak_source = peak_tflops(config.train.bf16)
    memory, memory_source = peak_memory_gib()
    enc = config.model.encoder
    return {
        "device": _device(), "method": config.objective.method, "encoder": enc.name,
        "cell": f"p{enc.patch}-d{enc.depth}-w{enc.width}" if enc.name == "vit1d" else f"c{enc.chan_start}",
        "batch": config.train.batch_size, "bf16": bool(config.train.bf16),
        "params_M": state_lib.count_params(bench.state.params) / 1e6,
        "step_ms": step_time * 1e3, "segments_per_s": config.train.batch_size / step_time,
        "tflops_per_step": bench.flops / 1e12, "achieved_tflops": bench.flops / step_time / 1e12,
        "mfu": bench.flops / step_time / 1e12 / peak, "peak_tflops": peak, "peak_source": peak_source,
        "peak_memory_gib": memory, "memory_source": memory_source, "loss": float(bench.metrics["loss"]),
    }


def measure_with_loader(config, steps: int, workers: list[int], warmup: int) -> dict:
    if not config.data.store:
        raise UserError("--with_loader times the loader on a real store: pass --config.data.store=STORE "
                        "(or store=STORE in the config arg), an ingested store (python -m ecgjax.data.ingest)")
    store = resolve.open_store(config.data)
    plain = ml_collections.ConfigDict(config.to_dict())
    plain.data.augmentation = ml_collections.ConfigDict()
    without = StepBench(plain)
    no_aug = without.step_alone(steps, warmup)
    no_aug_flops = without.flops
    del without
    bench = StepBench(config)
    before = bench.step_alone(steps, warmup)
    e2e = {w: bench.end_to_end(store, w, steps, warmup) for w in workers}
    after = bench.step_alone(steps, warmup)
    step = (before + after) / 2
    b = config.train.batch_size
    enc = config.model.encoder
    result = {
        "device": _device(with_load=True), "method": config.objective.method,
        "cell": f"p{enc.patch}-d{enc.depth}-w{enc.width}" if enc.name == "vit1d" else f"c{enc.chan_start}",
        "batch": b, "bf16": bool(config.train.bf16), "store": str(store.path), "steps": steps,
        "step_alone_segments_per_s": b / step, "step_alone_spread": abs(before - after) / step,
        "step_without_augmentation_segments_per_s": b / no_aug,
        "augmentation_time_share": 1 - no_aug / step,
        "augmentation_flops_share": 1 - no_aug_flops / bench.flops,
        "end_to_end": {str(w): {"segments_per_s": b / t, "of_step_alone": step / t,
                                "of_step_without_augmentation": no_aug / t} for w, t in e2e.items()},
    }
    return result


def main(argv):
    del argv
    config = _CONFIG.value
    print("machine:", describe_machine())
    if _COMPILE_ONLY.value:
        print(json.dumps(compile_only(config), indent=1))
        return
    if _WITH_LOADER.value:
        result = measure_with_loader(config, _STEPS.value, [int(w) for w in _WORKERS.value], _WARMUP.value)
        print(json.dumps(result, indent=1))
        for w, r in result["end_to_end"].items():
            print(f"| {result['device']} | {result['method']} {result['cell']} b{result['batch']} | workers {w} | "
                  f"{r['segments_per_s']:.0f} | {result['step_alone_segments_per_s']:.0f} | "
                  f"{r['of_step_alone']:.1%} | {result['step_without_augmentation_segments_per_s']:.0f} | "
                  f"{result['augmentation_flops_share']:.2%} |")
    else:
        result = measure(config, _STEPS.value)
        print(json.dumps(result, indent=1))
        print(f"| {result['device']} | {result['method']} | {result['encoder']} {result['cell']} | "
              f"{result['batch']} | {'bf16' if result['bf16'] else 'fp32'} | {result['params_M']:.1f} | "
              f"{result['step_ms']:.1f} | {result['segments_per_s']:.0f} | {result['mfu'] * 100:.1f}% | "
              f"{result['peak_memory_gib']:.2f} |")
    if _JSON.value:
        with open(_JSON.value, "a") as f:
            f.write(json.dumps(result) + "\n")
    print("machine:", describe_machine())


if __name__ == "__main__":
    cli.run(main)
