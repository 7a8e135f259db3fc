"""Numpy augmentations for ECG segments, run per sample inside the Grain loader workers.

Every augmentation is `f(x: [time, leads] float32, rng: np.random.Generator, **params) -> [time', leads]
float32`; none modifies `x` in place, and all randomness comes from `rng` (same seed, same output).
Amplitudes are in mV, frequencies in Hz, lengths in samples. `vcg_rotation` needs the canonical
12-lead order (ecgjax.data.leads.CANONICAL_LEADS); the others work on any lead count.

`build_augmentation(config, fs)` composes them: config maps name -> params (a dict, a ConfigDict or
a list of names for the defaults), each with an optional 'prob' of being applied.
"""
from __future__ import annotations

import numpy as np

from ecgjax.data.errors import ECGInputError
from ecgjax.data.vcg import DOWER_12, rotation_matrix, to_vcg_matrix


def random_crop(x: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """A contiguous [length, leads] window at a uniformly random start."""
    if length > x.shape[0]:
        raise ECGInputError("random_crop", f"cannot crop {length} samples from a {x.shape[0]}-sample segment")
    start = int(rng.integers(0, x.shape[0] - length + 1))
    return x[start:start + length].copy()


def amplitude_scale(x: np.ndarray, rng: np.random.Generator, min_scale: float = 0.8, max_scale: float = 1.25,
                    per_lead: bool = False) -> np.ndarray:
    """Multiplies by a log-uniform factor in [min_scale, max_scale] (one per lead if per_lead)."""
    if not per_lead:
        return x * np.float32(np.exp(rng.uniform(np.log(min_scale), np.log(max_scale))))
    factors = np.exp(rng.uniform(np.log(min_scale), np.log(max_scale), x.shape[1]))
    return x @ np.diag(factors).astype(np.float32)  # BLAS beats broadcasting over 12 columns


_NOISE_BANK_SIZE = 1 << 20
_noise_bank: np.ndarray | None = None


def _gaussian_bank() -> np.ndarray:
    """[2^20] float32 standard normal samples, drawn once per process from a fixed seed."""
    global _noise_bank
    if _noise_bank is None:
        _noise_bank = np.random.default_rng(0x5EED).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    return _noise_bank


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, std: float = 0.02, fresh: bool = False) -> np.ndarray:
    """Adds white Gaussian noise of standard deviation `std` mV.

    Drawing 30k normals costs ~0.2 ms, more than the whole loader budget per segment, so by default
    the noise is a window of a fixed per-process bank of 2^20 normals at a random offset and sign
    (~30x cheaper; windows rarely coincide). fresh=True draws new samples from `rng` instead.
    """
    bank = _gaussian_bank()
    if fresh or x.size > bank.size:
        noise = rng.standard_normal(x.shape, dtype=np.float32)
    else:
        start = int(rng.integers(0, bank.size - x.size + 1))
        noise = bank[start:start + x.size].reshape(x.shape)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out = noise * np.float32(sign * std)
    out += x
    return out


def _sinusoids(num_samples: int, fs: float, freqs: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """[time, len(freqs)] float32 sin(2 pi f t + phase); phase is reduced in float64 first
    (float32 sin of small arguments is ~10x faster than float64 sin of large ones)."""
    # Built as [components, time] so numpy's inner loops run along time, not along 2-3 columns.
    cycles = (np.asarray(freqs, np.float64)[:, None] / fs) * np.arange(num_samples)[None]
    cycles += np.asarray(phases, np.float64)[:, None] / (2 * np.pi)
    cycles -= np.floor(cycles)
    return np.sin(np.float32(2 * np.pi) * cycles.astype(np.float32)).T


def baseline_wander(x: np.ndarray, rng: np.random.Generator, fs: float, amplitude: float = 0.1,
                    max_freq: float = 0.5, num_components: int = 2) -> np.ndarray:
    """Adds low-frequency drift: `num_components` sinusoids below `max_freq` Hz, mixed per lead.

    Each lead gets its own Gaussian weights (std `amplitude` mV) on shared sinusoids, as drift
    from respiration and electrode motion is correlated across leads.
    """
    freqs = rng.uniform(0.05, max_freq, num_components)
    phases = rng.uniform(0.0, 2 * np.pi, num_components)
    waves = _sinusoids(x.shape[0], fs, freqs, phases)  # [time, components]
    weights = rng.normal(0.0, amplitude, (num_components, x.shape[1])).astype(np.float32)
    return x + waves @ weights


def powerline(x: np.ndarray, rng: np.random.Generator, fs: float, amplitude: float = 0.05,
              freq: float | None = None) -> np.ndarray:
    """Adds mains interference: a `freq` Hz sinusoid (50 or 60 at random when None), amplitude per
    lead uniform in [0, amplitude] mV, a random phase (shifted slightly per lead)."""
    if freq is None:
        freq = 50.0 if rng.random() < 0.5 else 60.0
    if freq >= fs / 2:
        raise ECGInputError("powerline", f"{freq} Hz interference is above the Nyquist frequency of fs={fs} Hz")
    phase = rng.uniform(0.0, 2 * np.pi)
    hum = _sinusoids(x.shape[0], fs, np.array([freq, freq]), np.array([phase, phase + np.pi / 2]))  # sin, cos
    # Per-lead amplitude in [0, amplitude] and a small per-lead phase shift, as a [2, leads] mixing.
    gains = rng.uniform(0.0, amplitude, x.shape[1])
    shifts = rng.normal(0.0, 0.3, x.shape[1])
    weights = np.stack([gains * np.cos(shifts), gains * np.sin(shifts)]).astype(np.float32)
    return x + hum @ weights  # BLAS beats broadcasting over 12 columns


def lead_dropout(x: np.ndarray, rng: np.random.Generator, drop_prob: float = 0.2, min_keep: int = 1,
                 return_mask: bool = False):
    """Zeros each lead independently with probability drop_prob, always keeping at least min_keep.

    Returns [time, leads], or ([time, leads], kept [leads] bool) when return_mask.
    """
    num_leads = x.shape[1]
    kept = rng.random(num_leads) >= drop_prob
    if kept.sum() < min_keep:
        kept[rng.choice(num_leads, min_keep, replace=False)] = True
    out = x.copy()
    out[:, ~kept] = 0.0
    return (out, kept) if return_mask else out


def time_mask(x: np.ndarray, rng: np.random.Generator, span: int) -> np.ndarray:
    """Zeros all leads over one random contiguous span of `span` samples."""
    span = min(int(span), x.shape[0])
    start = int(rng.integers(0, x.shape[0] - span + 1))
    out = x.copy()
    out[start:start + span] = 0.0
    return out


def vcg_transform_matrix(rotation_rad, scale: float = 1.0, method: str = "inverse_dower") -> np.ndarray:
    """[12, 12] matrix M so that `x @ M` maps 12 leads to the VCG, rotates and scales it there, and
    projects it back with the Dower matrix."""
    to_vcg = to_vcg_matrix(method)  # [3, 12]
    return (to_vcg.T @ (scale * rotation_matrix(rotation_rad)).T @ DOWER_12.T).astype(np.float32)


def vcg_rotation(x: np.ndarray, rng: np.random.Generator, max_degrees: float = 15.0, min_scale: float = 0.9,
                 max_scale: float = 1.1, method: str = "inverse_dower") -> np.ndarray:
    """Physiological augmentation via the vectorcardiogram (paper 002): rotates the heart's dipole.

    [time, 12] canonical leads -> 3-D VCG (inverse Dower or Kors) -> rotation about each axis by a
    uniform angle in [-max_degrees, max_degrees] and a uniform scale -> back to 12 leads (Dower).
    Only the 3-D part of the signal survives (the projection has rank 3).
    """
    if x.shape[1] != DOWER_12.shape[0]:
        raise ECGInputError("vcg_rotation", f"needs the 12 canonical leads, got {x.shape[1]}")
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, 3))
    scale = rng.uniform(min_scale, max_scale)
    return x @ vcg_transform_matrix(angles, scale, method)


# Canonical application order: choose the window, then change the heart (geometry, gain), then add
# the recording artefacts, then hide parts of the signal. Config order does not change it.
AUGMENTATIONS = {
    "random_crop": random_crop,
    "vcg_rotation": vcg_rotation,
    "amplitude_scale": amplitude_scale,
    "baseline_wander": baseline_wander,
    "powerline": powerline,
    "gaussian_noise": gaussian_noise,
    "lead_dropout": lead_dropout,
    "time_mask": time_mask,
}
_NEEDS_FS = {"baseline_wander", "powerline"}
# Params given in seconds (key + '_s') are converted to samples with fs.
_SAMPLE_PARAMS = {"random_crop": "length", "time_mask": "span"}

DEFAULT_AUGMENTATION = {
    "vcg_rotation": {"prob": 0.8, "max_degrees": 15.0},
    "amplitude_scale": {"prob": 0.8},
    "baseline_wander": {"prob": 0.5},
    "powerline": {"prob": 0.2},
    "gaussian_noise": {"prob": 0.5},
    "lead_dropout": {"prob": 0.2},
    "time_mask": {"prob": 0.3, "span_s": 0.5},
}


class AugmentationChain:
    """callable(x [time, leads], rng) -> [time', leads]: applies each step with its probability.

    Picklable (a plain object holding module-level functions), so Grain workers can carry it.
    """

    def __init__(self, steps):
        self.steps = tuple(steps)  # (name, prob, params)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, np.float32)
        for name, prob, params in self.steps:
            if prob >= 1.0 or rng.random() < prob:
                x = AUGMENTATIONS[name](x, rng, **params)
        return x

    def __repr__(self):
        return f"AugmentationChain({[(name, prob, params) for name, prob, params in self.steps]})"


def build_augmentation(config=None, fs: float = 250.0) -> AugmentationChain:
    """Composes augmentations from a config.

    Args:
      config: None (DEFAULT_AUGMENTATION), a list of names (each with its defaults, prob 1), or a
        mapping name -> params; params may hold 'prob' (default 1.0), any keyword of the function,
        and 'length_s' / 'span_s' (seconds) instead of 'length' / 'span' (samples).
      fs: sampling rate of the segments, for the frequency- and time-based params.
    """
    if config is None:
        config = DEFAULT_AUGMENTATION
    if isinstance(config, (list, tuple)):
        config = {name: {} for name in config}
    config = {name: dict(params or {}) for name, params in dict(config).items()}
    unknown = sorted(set(config) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentations {unknown} (known: {list(AUGMENTATIONS)})")
    steps = []
    for name in AUGMENTATIONS:
        if name not in config:
            continue
        params = config[name]
        prob = float(params.pop("prob", 1.0))
        sample_key = _SAMPLE_PARAMS.get(name)
        if sample_key and f"{sample_key}_s" in params:
            params[sample_key] = int(round(params.pop(f"{sample_key}_s") * fs))
        if name in _NEEDS_FS:
            params["fs"] = fs
        steps.append((name, prob, params))
    return AugmentationChain(steps)
