"""Pretraining step throughput for any config / grid cell, on CPU or GPU.

    python benchmarks/throughput.py --config=configs/hybrid.py:patch=60,depth=8,width=1024,batch=256 \
        --config.train.bf16=True --steps=20

Reports step time, segments/s, peak memory and model-FLOPs utilisation (MFU): the FLOPs XLA
counts for the compiled step (forward, backward and optimizer) per second, over the device's peak.
Batches are generated on the device, so the figure is the step alone (the loader has its own
benchmark, benchmarks/loader.py).
"""
from __future__ import annotations

import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from ecgjax.machine import describe as describe_machine
from ecgjax.train import loop, state as state_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s; 0 looks it up.")
_JSON = flags.DEFINE_string("json", "", "Also append the result as a JSON line to this file.")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Compile and report XLA's memory analysis and FLOPs without running: "
    "sizes a big cell's memory on a machine that cannot run it.")
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


def random_batch(config, batch_size: int) -> dict:
    rng = np.random.default_rng(0)
    batch = {k: np.asarray(v) for k, v in state_lib.example_batch(config, batch_size).items()}
    for key, value in batch.items():
        if value.dtype == np.float32:
            batch[key] = rng.normal(size=value.shape).astype(np.float32)
    batch["patient"] = np.arange(batch_size, dtype=np.int32)
    if "segment" in batch:
        batch["lead_mask"] = np.ones((batch_size, 12), np.float32)
    return batch


def peak_memory_gib() -> tuple[float, str]:
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS"


def measure(config, steps: int) -> dict:
    trainer = loop.Trainer(config)
    state = trainer.new_state()
    batch = jax.tree.map(jnp.asarray, random_batch(config, config.train.batch_size))
    from ecgjax.train import mesh as mesh_lib
    sharded = mesh_lib.shard_batch(batch, trainer.mesh)
    compiled = trainer.train_step.lower(state, sharded).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    if _COMPILE_ONLY.value:
        memory = compiled.memory_analysis()
        total = sum(getattr(memory, f, 0) for f in (
            "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")) - getattr(memory, "alias_size_in_bytes", 0)
        return {"device": describe_machine(with_load=False), "compile_only": True,
                "params_M": state_lib.count_params(state.params) / 1e6, "batch": config.train.batch_size,
                "tflops_per_step": flops / 1e12, "xla_memory_gib": total / 2**30,
                "temp_gib": memory.temp_size_in_bytes / 2**30,
                "argument_gib": memory.argument_size_in_bytes / 2**30}
    state, metrics = compiled(state, sharded)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, sharded)
    jax.block_until_ready(metrics)
    step_time = (time.perf_counter() - start) / steps
    peak, peak_source = peak_tflops(config.train.bf16)
    memory, memory_source = peak_memory_gib()
    enc = config.model.encoder
    return {
        "device": jax.devices()[0].device_kind if jax.devices()[0].platform == "gpu" else describe_machine(with_load=False),
        "method": config.objective.method, "encoder": enc.name,
        "cell": f"p{enc.patch}-d{enc.depth}-w{enc.width}" if enc.name == "vit1d" else f"c{enc.chan_start}",
        "batch": config.train.batch_size, "bf16": bool(config.train.bf16),
        "params_M": state_lib.count_params(state.params) / 1e6,
        "step_ms": step_time * 1e3, "segments_per_s": config.train.batch_size / step_time,
        "tflops_per_step": flops / 1e12, "achieved_tflops": flops / step_time / 1e12,
        "mfu": flops / step_time / 1e12 / peak, "peak_tflops": peak, "peak_source": peak_source,
        "peak_memory_gib": memory, "memory_source": memory_source, "loss": float(metrics["loss"]),
    }


def main(argv):
    del argv
    result = measure(_CONFIG.value, _STEPS.value)
    print(json.dumps(result, indent=1))
    if result.get("compile_only"):
        return
    print(f"| {result['device']} | {result['method']} | {result['encoder']} {result['cell']} | "
          f"{result['batch']} | {'bf16' if result['bf16'] else 'fp32'} | {result['params_M']:.1f} | "
          f"{result['step_ms']:.1f} | {result['segments_per_s']:.0f} | {result['mfu'] * 100:.1f}% | "
          f"{result['peak_memory_gib']:.2f} |")
    if _JSON.value:
        with open(_JSON.value, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    app.run(main)
