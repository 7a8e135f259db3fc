"""What a benchmark ran on, in one line, for the figures it prints and records."""
from __future__ import annotations

import os
import platform
import subprocess


def cpu_model() -> str:
    """The CPU's model name (lscpu), or what Python knows of it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(with_load: bool = True) -> str:
    """e.g. 'Intel(R) Xeon(R) Processor, 2 cores, no GPU, load average 1.2' or the GPU's kind."""
    parts = [cpu_model(), f"{os.cpu_count()} cores"]
    try:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        parts.append(f"{len(gpus)} x {gpus[0].device_kind}" if gpus else "no GPU")
    except Exception:  # jax absent or no backend: the CPU line alone still says enough
        parts.append("no GPU")
    if with_load:
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    return ", ".join(parts)
