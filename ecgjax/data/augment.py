"""ECG augmentations as pure JAX functions, run on the device inside the jitted pretraining step.

The host loader only reads and crops. The step draws every augmentation parameter from its own RNG
(`state.rng` folded with the step, one key per example), so a resumed run augments exactly like an
uninterrupted one and the host does no per-view work.

Transforms (amplitudes in mV, frequencies in Hz, lengths in samples; each with an optional 'prob'):

    random_crop      a `length`-sample window at a uniform start (prob must be 1: it sets the shape)
    vcg_rotation     12 leads -> VCG (inverse Dower or Kors), rotation about X, Y, Z by uniform angles
                     in [-max_degrees, max_degrees] and a uniform scale, -> 12 leads (Dower); needs
                     the canonical order of ecgjax.data.leads.CANONICAL_LEADS
    amplitude_scale  a log-uniform factor in [min_scale, max_scale] (one per lead if per_lead)
    baseline_wander  num_components sinusoids, frequency U(0.05, max_freq), phase U(0, 2 pi), mixed
                     into each lead with N(0, amplitude^2) weights (drift is correlated across leads)
    powerline        a 50 or 60 Hz (or `freq`) sinusoid of random phase, per-lead amplitude
                     U(0, amplitude) and per-lead phase shift N(0, 0.3^2) rad
    gaussian_noise   white noise of standard deviation `std`: a window of a fixed bank of 2^20
                     normals at a uniform offset and a random sign (fresh normals for 3 x 128
                     views take ~0.3 s on a 2-core CPU, most of a step)
    lead_dropout     each lead zeroed with probability drop_prob, at least min_keep kept
    time_mask        all leads zeroed over one `span`-sample window at a uniform start

They are applied in that canonical order whatever the config order: choose the window, change the
heart (geometry, gain), add the recording's artefacts, hide parts of the signal. Every transform
after the crop is affine in the signal, so the chain of one example reduces to a `Plan`,

    y = (x @ mix + sin(2 pi (t * freqs + phases)) @ weights + noise_std * noise) * lead_gain * time_keep,

drawn per example and applied in one pass; a transform that is not applied contributes its
identity. `build_augmentation(config, fs)` composes the chain from a config (name -> params, a
ConfigDict, or a list of names for the defaults); `transform(name, key, x, ...)` applies one.
"""
from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.data.errors import ECGInputError
from ecgjax.data.vcg import DOWER_12, rotation_matrix, to_vcg_matrix
from ecgjax.errors import UserError

_HIGHEST = jax.lax.Precision.HIGHEST  # GPUs would otherwise mix leads in TF32 / bf16 passes


class Plan(NamedTuple):
    """One example's augmentation after the crop (see the module docstring), C sinusoid components."""

    mix: jax.Array         # [leads, leads] lead mixing (VCG rotation, gains)
    freqs: jax.Array       # [C] cycles per sample
    phases: jax.Array      # [C] cycles
    weights: jax.Array     # [C, leads] mV
    noise_std: jax.Array   # [] mV, signed (the bank's sign flip)
    noise_row: jax.Array   # [] int32, first row of the noise bank window
    lead_gain: jax.Array   # [leads] 0 / 1
    mask_start: jax.Array  # [] int32
    mask_span: jax.Array   # [] int32, 0 = no time mask


# ---------------------------------------------------------------------------- parameter draws
# Each draw(key, *, time, leads, **params) returns the transform's random parameters (and what the
# plan needs from them) for one example of [time, leads] samples.

def _draw_random_crop(key, *, time, leads, length: int):
    del leads
    if length > time:
        raise ECGInputError("random_crop", f"cannot crop {length} samples from a {time}-sample segment")
    return {"start": jax.random.randint(key, (), 0, time - length + 1)}


def _draw_vcg_rotation(key, *, time, leads, max_degrees: float = 15.0, min_scale: float = 0.9,
                       max_scale: float = 1.1, method: str = "inverse_dower"):
    del time
    if leads != DOWER_12.shape[0]:
        raise ECGInputError("vcg_rotation", f"needs the 12 canonical leads, got {leads}")
    k_angle, k_scale = jax.random.split(key)
    angles = jnp.deg2rad(jax.random.uniform(k_angle, (3,), minval=-max_degrees, maxval=max_degrees))
    scale = jax.random.uniform(k_scale, (), minval=min_scale, maxval=max_scale)
    return {"angles": angles, "scale": scale, "mix": vcg_transform_matrix(angles, scale, method)}


def _draw_amplitude_scale(key, *, time, leads, min_scale: float = 0.8, max_scale: float = 1.25,
                          per_lead: bool = False):
    del time
    log_factor = jax.random.uniform(key, (leads,) if per_lead else (), minval=np.log(min_scale),
                                    maxval=np.log(max_scale))
    return {"factor": jnp.broadcast_to(jnp.exp(log_factor), (leads,))}


def _draw_baseline_wander(key, *, time, leads, fs: float, amplitude: float = 0.1, max_freq: float = 0.5,
                          num_components: int = 2):
    del time
    k_freq, k_phase, k_weight = jax.random.split(key, 3)
    freqs_hz = jax.random.uniform(k_freq, (num_components,), minval=0.05, maxval=max_freq)
    return {"freqs_hz": freqs_hz, "freqs": freqs_hz / fs,
            "phases": jax.random.uniform(k_phase, (num_components,)),
            "weights": amplitude * jax.random.normal(k_weight, (num_components, leads))}


def _draw_powerline(key, *, time, leads, fs: float, amplitude: float = 0.05, freq: float | None = None):
    del time
    k_mains, k_phase, k_gain, k_shift = jax.random.split(key, 4)
    freq_hz = (jnp.where(jax.random.bernoulli(k_mains), 50.0, 60.0) if freq is None
               else jnp.asarray(freq, jnp.float32))
    phase = jax.random.uniform(k_phase, ())
    gains = jax.random.uniform(k_gain, (leads,), maxval=amplitude)
    shifts = 0.3 * jax.random.normal(k_shift, (leads,))
    # gain * sin(theta + shift) = gain cos(shift) sin(theta) + gain sin(shift) cos(theta).
    return {"freq_hz": freq_hz, "gains": gains, "shifts": shifts,
            "freqs": jnp.stack([freq_hz, freq_hz]) / fs, "phases": jnp.stack([phase, phase + 0.25]),
            "weights": jnp.stack([gains * jnp.cos(shifts), gains * jnp.sin(shifts)])}


def _draw_gaussian_noise(key, *, time, leads, std: float = 0.02):
    k_sign, k_row = jax.random.split(key)
    rows = noise_bank(time, leads).shape[0]
    return {"noise_std": jnp.where(jax.random.bernoulli(k_sign), std, -std),
            "noise_row": jax.random.randint(k_row, (), 0, rows - time + 1)}


def _draw_lead_dropout(key, *, time, leads, drop_prob: float = 0.2, min_keep: int = 1):
    del time
    k_drop, k_keep = jax.random.split(key)
    kept = jax.random.uniform(k_drop, (leads,)) >= drop_prob
    # Too few kept: also keep a uniformly random subset of min_keep leads.
    forced = jnp.argsort(jnp.argsort(jax.random.uniform(k_keep, (leads,)))) < min_keep
    kept = jnp.where(kept.sum() < min_keep, kept | forced, kept)
    return {"kept": kept}


def _draw_time_mask(key, *, time, leads, span: int):
    del leads
    span = min(int(span), time)
    return {"mask_start": jax.random.randint(key, (), 0, time - span + 1), "mask_span": jnp.int32(span)}


# Canonical order (see the module docstring); config order does not change it.
DRAWS = {
    "random_crop": _draw_random_crop,
    "vcg_rotation": _draw_vcg_rotation,
    "amplitude_scale": _draw_amplitude_scale,
    "baseline_wander": _draw_baseline_wander,
    "powerline": _draw_powerline,
    "gaussian_noise": _draw_gaussian_noise,
    "lead_dropout": _draw_lead_dropout,
    "time_mask": _draw_time_mask,
}
AUGMENTATIONS = tuple(DRAWS)
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


def vcg_transform_matrix(rotation_rad, scale=1.0, method: str = "inverse_dower") -> jax.Array:
    """[12, 12] matrix M so that `x @ M` maps 12 leads to the VCG, rotates and scales it there, and
    projects it back with the Dower matrix."""
    to_vcg = jnp.asarray(to_vcg_matrix(method), jnp.float32)  # [3, 12]
    rotation = scale * rotation_matrix(jnp.asarray(rotation_rad, jnp.float32), xp=jnp)
    return jnp.matmul(jnp.matmul(to_vcg.T, rotation.T, precision=_HIGHEST),
                      jnp.asarray(DOWER_12.T, jnp.float32), precision=_HIGHEST)


@functools.lru_cache(maxsize=8)
def noise_bank(time: int, leads: int) -> np.ndarray:
    """[rows, leads] float32 standard normals from a fixed seed: 2^20 of them, or 4 windows of
    `time` rows if that is more. A constant of the compiled step (4 MB at 12 leads)."""
    rows = max((1 << 20) // leads, 4 * time)
    return np.random.default_rng(0x5EED).standard_normal((rows, leads), dtype=np.float32)


def sin_cycles(u: jax.Array) -> jax.Array:
    """sin(2 pi u) for u in cycles, in float32.

    XLA's CPU sin costs ~30x a polynomial here. Reduced to r in [-1/4, 1/4] cycle by periodicity and
    sin(pi - a) = sin(a), then Taylor to degree 11 in a = 2 pi r: truncation error <= (pi/2)^13 / 13!
    = 6e-8, below float32 rounding.
    """
    r = u - jnp.round(u)
    r = jnp.where(jnp.abs(r) > 0.25, jnp.sign(r) * 0.5 - r, r)
    a = np.float32(2 * np.pi) * r
    a2 = a * a
    poly = 1.0 + a2 * (-1 / 6 + a2 * (1 / 120 + a2 * (-1 / 5040 + a2 * (1 / 362880 + a2 * (-1 / 39916800)))))
    return a * poly


# ---------------------------------------------------------------------------- the chain

class Augmentation:
    """The configured chain: `aug(key, x [batch, time, leads]) -> [batch, time', leads]`, one
    independent draw per example (vmapped over keys split from `key`); time' = the crop's length
    when random_crop is on, else time. Pure and jit-traceable; an empty chain is the identity.

    steps: (name, prob, params) in canonical order, params resolved (samples, fs filled in).
    """

    def __init__(self, steps):
        self.steps = tuple(steps)
        self._crop = next((s for s in self.steps if s[0] == "random_crop"), None)
        self._affine = tuple(s for s in self.steps if s[0] != "random_crop")
        self._names = {name for name, _, _ in self._affine}

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __repr__(self):
        return f"Augmentation({list(self.steps)})"

    def _components(self) -> int:
        count = 0
        for name, _, params in self._affine:
            if name == "baseline_wander":
                count += int(params.get("num_components", 2))
            elif name == "powerline":
                count += 2  # sin and cos of the mains
        return count

    def draws(self, key, time: int, leads: int) -> list[tuple[str, jax.Array, dict]]:
        """(name, applied [] bool, drawn parameters) of every step after the crop, for one
        example of [time, leads] samples."""
        out = []
        for (name, prob, params), step_key in zip(self._affine, jax.random.split(key, len(self._affine))):
            k_apply, k_draw = jax.random.split(step_key)
            on = jnp.bool_(True) if prob >= 1.0 else jax.random.uniform(k_apply, ()) < prob
            out.append((name, on, DRAWS[name](k_draw, time=time, leads=leads, **params)))
        return out

    def draw_plan(self, key, time: int, leads: int) -> Plan:
        """One example's plan for a [time, leads] signal (after the crop)."""
        c = self._components()
        plan = Plan(mix=jnp.eye(leads, dtype=jnp.float32), freqs=jnp.zeros((c,)), phases=jnp.zeros((c,)),
                    weights=jnp.zeros((c, leads)), noise_std=jnp.float32(0.0), noise_row=jnp.int32(0),
                    lead_gain=jnp.ones((leads,)), mask_start=jnp.int32(0), mask_span=jnp.int32(0))
        slot = 0
        for name, on, drawn in self.draws(key, time, leads):
            plan, slot = _fold(plan, name, drawn, on, slot)
        return plan

    def one(self, key, x: jax.Array) -> jax.Array:
        """One example: x [time, leads] -> [time', leads]."""
        crop_key, key = jax.random.split(key)
        if self._crop is not None:
            length = self._crop[2]["length"]
            start = _draw_random_crop(crop_key, time=x.shape[0], leads=x.shape[1], length=length)["start"]
            x = jax.lax.dynamic_slice_in_dim(x, start, length, axis=0)
        if not self._affine:
            return x
        return self.render(self.draw_plan(key, *x.shape), x)

    def render(self, plan: Plan, x: jax.Array) -> jax.Array:
        """Applies a plan to x [time, leads]; parts no configured transform uses are skipped.

        The per-example parameters reach the per-sample work only through two small dots, whose
        operands XLA materialises; otherwise it fuses the draws into the per-sample loops and
        re-evaluates them for every sample (4-6x slower on a 2-core CPU). One dot turns the time axis into
        phases and time-mask offsets, [time, 2] x [2, C + 2]; the other mixes leads and sinusoids
        into the output with the lead gains folded in, [time, leads + C] x [leads + C, leads].
        """
        time, leads = x.shape
        names = self._names
        c = plan.freqs.shape[0]
        t = jnp.arange(time, dtype=jnp.float32)
        # [time, 2] x [2, C + 2]: t * freq + phase (cycles), and t - start, t - end of the time mask
        # (exact: integers below 2^24). float32 phase error <= ulp(freq * time) ~ 1e-4 cycle at 60 Hz
        # over 10 s at 250 Hz.
        start = plan.mask_start.astype(jnp.float32)
        offsets = jnp.stack([jnp.concatenate([plan.freqs, jnp.ones((2,))]),
                             jnp.concatenate([plan.phases, jnp.stack([-start, -start - plan.mask_span])])])
        timeline = jnp.matmul(jnp.stack([t, jnp.ones_like(t)], axis=1), offsets, precision=_HIGHEST)
        columns, rows = [], []
        if names & {"vcg_rotation", "amplitude_scale", "lead_dropout"}:
            columns.append(x)
            rows.append(plan.mix * plan.lead_gain)
        if c:
            columns.append(sin_cycles(timeline[:, :c]))  # [time, C]
            rows.append(plan.weights * plan.lead_gain)
        y = x
        if columns:
            mixed = jnp.matmul(jnp.concatenate(columns, axis=1), jnp.concatenate(rows, axis=0),
                               precision=_HIGHEST)
            y = mixed if columns[0] is x else x + mixed
        if "gaussian_noise" in names:  # elementwise: as a third dot block it ran ~1.4x slower
            bank = jnp.asarray(noise_bank(time, leads))
            noise = jax.lax.dynamic_slice_in_dim(bank, plan.noise_row, time, axis=0)
            y = y + (plan.noise_std * plan.lead_gain) * noise
        if "time_mask" in names:
            masked = (timeline[:, c] >= 0) & (timeline[:, c + 1] < 0)
            y = jnp.where(masked[:, None], 0.0, y)
        return y

    def __call__(self, key, x: jax.Array) -> jax.Array:
        if not self.steps:
            return x
        return jax.vmap(self.one)(jax.random.split(key, x.shape[0]), x)


def _fold(plan: Plan, name: str, drawn: dict, on, slot: int) -> tuple[Plan, int]:
    """The plan after transform `name` (applied where `on`). Valid in canonical order only: mixes
    come before additions, additions before gains, so each can be folded in where it lands."""
    def where(new, old):
        return jnp.where(on, new, old)

    if name == "vcg_rotation":
        mix = jnp.matmul(plan.mix, drawn["mix"], precision=_HIGHEST)
        return plan._replace(mix=where(mix, plan.mix)), slot
    if name == "amplitude_scale":
        return plan._replace(mix=where(plan.mix * drawn["factor"][None, :], plan.mix)), slot
    if name in ("baseline_wander", "powerline"):
        k = drawn["freqs"].shape[0]
        return plan._replace(
            freqs=plan.freqs.at[slot:slot + k].set(drawn["freqs"]),
            phases=plan.phases.at[slot:slot + k].set(drawn["phases"]),
            weights=plan.weights.at[slot:slot + k].set(where(drawn["weights"], 0.0))), slot + k
    if name == "gaussian_noise":
        return plan._replace(noise_std=where(drawn["noise_std"], 0.0), noise_row=drawn["noise_row"]), slot
    if name == "lead_dropout":
        return plan._replace(lead_gain=where(plan.lead_gain * drawn["kept"], plan.lead_gain)), slot
    if name == "time_mask":
        return plan._replace(mask_start=drawn["mask_start"], mask_span=where(drawn["mask_span"], 0)), slot
    raise AssertionError(name)


def _resolve_params(name: str, params: dict, fs: float) -> dict:
    """Seconds -> samples, fs filled in, and every keyword checked against the transform's."""
    params = dict(params)
    sample_key = _SAMPLE_PARAMS.get(name)
    if sample_key and f"{sample_key}_s" in params:
        params[sample_key] = int(round(params.pop(f"{sample_key}_s") * fs))
    if name in _NEEDS_FS:
        params["fs"] = float(fs)
    known = [p for p in inspect.signature(DRAWS[name]).parameters if p not in ("key", "time", "leads")]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UserError(f"augmentation {name!r} has no parameter {unknown} (known: prob, {', '.join(known)})")
    missing = [p for p, v in inspect.signature(DRAWS[name]).parameters.items()
               if v.default is inspect.Parameter.empty and p not in ("key", "time", "leads") and p not in params]
    if missing:
        raise UserError(f"augmentation {name!r} needs {missing}" +
                        (f" (or {missing[0]}_s in seconds)" if sample_key in missing else ""))
    if name == "powerline":
        mains = [params["freq"]] if params.get("freq") is not None else [50.0, 60.0]
        if max(mains) >= fs / 2:
            raise ECGInputError("powerline", f"{max(mains):g} Hz interference is above the Nyquist "
                                             f"frequency of fs={fs:g} Hz")
    return params


def build_augmentation(config=None, fs: float = 250.0) -> Augmentation:
    """Composes the chain from a config.

    Args:
      config: None (DEFAULT_AUGMENTATION), a list of names (each with its defaults, prob 1), or a
        mapping name -> params; params may hold 'prob' (default 1.0), any keyword of the transform,
        and 'length_s' / 'span_s' (seconds) instead of 'length' / 'span' (samples). An empty
        mapping is no augmentation.
      fs: sampling rate of the segments, for the frequency- and time-based params.
    """
    if config is None:
        config = DEFAULT_AUGMENTATION
    if isinstance(config, (list, tuple)):
        config = {name: {} for name in config}
    config = {name: dict(params or {}) for name, params in dict(config).items()}
    unknown = sorted(set(config) - set(DRAWS))
    if unknown:
        raise UserError(f"unknown augmentations {unknown} (known: {list(DRAWS)})")
    steps = []
    for name in DRAWS:
        if name not in config:
            continue
        params = config[name]
        prob = float(params.pop("prob", 1.0))
        if name == "random_crop" and prob < 1.0:
            raise UserError(f"random_crop prob={prob}: the crop sets the segment length, so it must always apply (prob 1)")
        steps.append((name, prob, _resolve_params(name, params, fs)))
    return Augmentation(steps)


def transform(name: str, key, x: jax.Array, *, fs: float = 250.0, **params) -> jax.Array:
    """One transform, always applied, to one example x [time, leads] (for tests and notebooks)."""
    return build_augmentation({name: params}, fs=fs).one(key, x)
