"""ecgjax: self-supervised ECG foundation models in JAX."""
from setuptools import find_packages, setup

setup(
    name="ecgjax",
    version="0.1.0",
    description="Self-supervised ECG foundation models (ViT / ResNet, CL / MAE / HL / CPC) in JAX",
    packages=find_packages(include=["ecgjax", "ecgjax.*"]),
    # The released models (weights, config, card, checksums) travel with the package: `pip install .`
    # carries them, not only an editable install.
    package_data={"ecgjax": ["zoo/registry.json", "zoo/*/*"]},
    python_requires=">=3.10",
    install_requires=[
        # Tested with jax 0.10.2, flax 0.12.8, optax 0.2.8, orbax-checkpoint 0.12.8, grain 0.2.18:
        # these APIs move fast, so the ranges stay within the tested minor versions.
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "grain>=0.2.18,<0.3",
        "numpy>=1.26,<3",
        "ml-collections>=1.0,<2",
        "absl-py>=2.1,<3",
        "wfdb>=4.3,<4.4",  # readers use wfdb's segment reader directly (fast header parsing)
        "soundfile>=0.12,<1",
        "scipy>=1.11,<2",
        "scikit-learn>=1.4,<2",
        "matplotlib>=3.8,<4",
        "pandas>=2.0,<4",
        "h5py>=3.10,<4",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
        # oneDNN (Intel's CPU kernels, as PyTorch uses): Dense and Conv products on AMX tiles where the
        # CPU has them (ecgjax.kernels.onednn); a 39 MB wheel, loaded only on such CPUs.
        "onednn-cpu-gomp>=2023.2,<2027; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.5,<4"],
        # benchmarks/vs_pytorch.py's reference. On Linux the registry's default wheel carries the CUDA
        # libraries (GBs); for a CPU-only host install torch from a CPU build first (benchmarks/RESULTS.md).
        "bench": ["torch>=2.4"],
    },
)
