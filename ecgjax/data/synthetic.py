"""The embedded default data: a synthetic multi-patient 12-lead cohort with patient-level labels.

Each beat is a sum of Gaussian waves (P, Q, R, S, ST, T) in the 3-D vectorcardiogram (VCG), each
wave with its own 3-D direction; the VCG is projected to the 8 independent leads with the Dower
matrix and limb leads III, aVR, aVL, aVF are derived exactly, so inter-lead relations hold as in
a real ECG. A patient keeps one morphology (wave amplitudes, widths, directions, heart axis, QT),
heart-rate range and noise level across records, so identity is learnable; records differ in
heart rate, electrode placement, noise and beat timing.

Conditions (patient-level, multi-label, ~10-25% prevalence, rising with age) vary in severity
and overlap normal variation on purpose, so that probes are neither at chance nor trivially
perfect (see benchmarks/synthetic_baseline.py for a handcrafted-feature baseline):
  wide_qrs      QRS widened 1.05-1.65x, half with a terminal R' (RBBB-like RSR' in V1).
  st_elevation  ST segment lifted 0.04-0.25 mV towards an anterior, inferior or lateral territory.
  t_inversion   T vector shrunk to reversed (normal T ranges from tall to flat).
  high_voltage  R amplitude 1.3-2.1x (LVH-like); body size and sex also scale voltage.
  afib          irregular RR drawn iid, no P waves, 4-9 Hz fibrillatory waves.
"""
from __future__ import annotations

import numpy as np

from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.record import ECGRecord
from ecgjax.data.vcg import DOWER_8, rotation_matrix, twelve_from_independent

CONDITIONS: tuple[str, ...] = ("wide_qrs", "st_elevation", "t_inversion", "high_voltage", "afib")
# The default cohort size, wherever a cohort is made without one (ingest's --input, configs).
DEFAULT_NUM_PATIENTS = 400

# Nominal waves: (name, centre relative to the R peak in s, width sigma in s, amplitude mV, direction X,Y,Z).
# Directions follow the Frank convention (X left, Y inferior, Z posterior): QRS points left, inferior
# and posterior (deep S in V1, tall R in V5-V6); the septal Q points right and anterior.
_WAVES = (
    ("P", -0.165, 0.022, 0.15, (0.55, 0.8, 0.15)),
    ("Q", -0.028, 0.008, 0.15, (-0.5, 0.1, -0.75)),
    ("R", 0.0, 0.0105, 1.3, (0.75, 0.5, 0.35)),
    ("S", 0.028, 0.009, 0.45, (-0.45, -0.4, 0.65)),
    ("R_prime", 0.05, 0.01, 0.0, (-0.45, 0.0, -0.85)),  # only in RBBB-like wide QRS
    ("ST", 0.13, 0.05, 0.0, (0.0, 0.0, -1.0)),  # ST offset; direction set per patient
    ("T1", 0.25, 0.055, 0.22, (0.7, 0.55, -0.35)),  # T is asymmetric: a broad rise ...
    ("T2", 0.31, 0.035, 0.2, (0.7, 0.55, -0.35)),  # ... and a steeper fall.
)
_WAVE = {name: i for i, (name, *_rest) in enumerate(_WAVES)}
_CENTRES = np.array([w[1] for w in _WAVES])
_WIDTHS = np.array([w[2] for w in _WAVES])
_AMPLITUDES = np.array([w[3] for w in _WAVES])
_DIRECTIONS = np.array([w[4] for w in _WAVES], np.float64)
_DIRECTIONS /= np.linalg.norm(_DIRECTIONS, axis=1, keepdims=True)
_QRS = [_WAVE[n] for n in ("Q", "R", "S", "R_prime")]
_T = [_WAVE["T1"], _WAVE["T2"]]
_ST_TERRITORIES = np.array([(0.0, 0.0, -1.0), (0.0, 1.0, 0.0), (0.9, 0.0, -0.45)])  # anterior, inferior, lateral
_ATRIAL_DIRECTION = np.array([-0.3, 0.4, -0.85])  # f-waves are largest in V1
_BEAT_WINDOW_S = (-0.3, 0.75)  # template span around the R peak


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _sample_patient(rng: np.random.Generator) -> dict:
    """Draws one patient's stable traits: demographics, conditions with severities, morphology, noise."""
    age = int(rng.integers(18, 91))
    sex = "M" if rng.random() < 0.5 else "F"
    # Prevalence ~15% at age 55, ~5% at 18, ~33% at 90.
    p = 1.0 / (1.0 + np.exp(-(-1.75 + 0.03 * (age - 55))))
    has = {c: bool(rng.random() < p) for c in CONDITIONS}

    n = len(_WAVES)
    amplitudes = _AMPLITUDES * rng.lognormal(0.0, 0.3, n)
    widths = _WIDTHS * rng.lognormal(0.0, 0.1, n)
    centres = _CENTRES + rng.normal(0.0, 0.006, n)
    directions = _unit(_DIRECTIONS + rng.normal(0.0, 0.25, (n, 3)))
    centres[_WAVE["P"]] -= rng.uniform(0.0, 0.04)  # PR interval 120-200 ms
    centres[_T] *= rng.lognormal(0.0, 0.07)  # individual QT

    qrs_widening = rng.lognormal(0.0, 0.1)
    if has["wide_qrs"]:
        qrs_widening *= rng.uniform(1.05, 1.65)
        if rng.random() < 0.5:
            amplitudes[_WAVE["R_prime"]] = rng.uniform(0.2, 0.7)
    widths[_QRS] *= qrs_widening
    centres[_QRS] *= qrs_widening

    # ST: small early-repolarisation offsets in everyone, a real elevation in the condition.
    st_direction = _unit(rng.normal(0.0, 1.0, 3))
    st_amplitude = abs(rng.normal(0.0, 0.03))
    if has["st_elevation"]:
        st_direction = _unit(_ST_TERRITORIES[rng.integers(len(_ST_TERRITORIES))] + rng.normal(0, 0.2, 3))
        st_amplitude = rng.uniform(0.04, 0.25)
    directions[_WAVE["ST"]] = st_direction
    amplitudes[_WAVE["ST"]] = st_amplitude

    # T: from tall (1) through flat (0) to reversed (-1).
    t_factor = rng.uniform(-0.2, 1.0) if not has["t_inversion"] else rng.uniform(-1.0, 0.3)
    amplitudes[_T] *= t_factor

    if has["high_voltage"]:
        amplitudes[[_WAVE["R"], _WAVE["S"]]] *= rng.uniform(1.3, 2.1)

    afib = has["afib"]
    if afib:
        amplitudes[_WAVE["P"]] = 0.0
    # Heart axis and torso: a rigid rotation of the whole dipole and a body-size gain.
    axis = rotation_matrix(rng.normal(0.0, np.deg2rad(12.0), 3))
    gain = rng.lognormal(0.0, 0.2) * (0.85 if sex == "F" else 1.0)
    return dict(
        age=age, sex=sex, has=has,
        centres=centres, widths=widths, vectors=(amplitudes[:, None] * directions) @ axis.T, gain=gain,
        heart_rate=rng.uniform(85.0, 110.0) if afib else np.clip(rng.normal(68.0, 10.0), 45.0, 100.0),
        rr_cv=rng.uniform(0.1, 0.3) if afib else rng.uniform(0.01, 0.05),
        ectopy=0.0 if afib else (rng.uniform(0.03, 0.12) if rng.random() < 0.15 else 0.0),
        fib_amplitude=rng.uniform(0.01, 0.07) if afib else 0.0,
        noise_std=rng.lognormal(np.log(0.015), 0.6),
        wander_amplitude=rng.lognormal(np.log(0.08), 0.6),
        mains_hz=50.0 if rng.random() < 0.5 else 60.0,
    )


def _beat_times(rng, patient, heart_rate, duration_s) -> np.ndarray:
    """[beats] R-peak times in s covering [-window, duration + window]."""
    mean_rr = 60.0 / heart_rate
    count = int(np.ceil((duration_s + 2.0) / (0.5 * mean_rr))) + 2
    if patient["has"]["afib"]:  # ventricular response: iid, no memory
        rr = mean_rr * rng.lognormal(0.0, patient["rr_cv"], count)
    else:  # sinus with respiratory arrhythmia, beat jitter and occasional premature beats
        k = np.arange(count)
        resp = 0.04 * np.sin(2 * np.pi * k * mean_rr * rng.uniform(0.2, 0.33) + rng.uniform(0, 2 * np.pi))
        rr = mean_rr * (1.0 + resp + rng.normal(0.0, patient["rr_cv"], count))
        premature = rng.random(count) < patient["ectopy"]
        rr = np.where(premature, 0.7 * rr, rr)
        rr = np.where(np.roll(premature, 1), 1.3 * rr, rr)  # compensatory pause
    rr = np.maximum(rr, 0.3)
    times = rng.uniform(-1.0, -0.3) + np.cumsum(rr)
    return times[times < duration_s + 0.4]


def _render_record(rng, patient, fs, duration_s) -> tuple[np.ndarray, float]:
    """Renders one record: ([time, 12] float32 mV, heart rate in bpm)."""
    num_samples = int(round(duration_s * fs))
    heart_rate = patient["heart_rate"] * rng.lognormal(0.0, 0.08)
    rr_ratio = 60.0 / heart_rate  # s; repolarisation scales with RR^(1/3) (Fridericia)
    centres = patient["centres"].copy()
    centres[_T] *= rr_ratio ** (1.0 / 3.0)

    # One beat template in VCG space: [window, 3].
    t_rel = np.arange(int(_BEAT_WINDOW_S[0] * fs), int(_BEAT_WINDOW_S[1] * fs)) / fs
    bumps = np.exp(-0.5 * ((t_rel[:, None] - centres[None]) / patient["widths"][None]) ** 2)
    placement = rotation_matrix(rng.normal(0.0, np.deg2rad(3.0), 3))  # electrode placement
    template = bumps @ (patient["vectors"] @ placement.T)

    # Place beats with a small per-beat amplitude modulation (respiration).
    times = _beat_times(rng, patient, heart_rate, duration_s)
    weights = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.33) * times + rng.uniform(0, 2 * np.pi))
    index = np.round(times * fs).astype(int)[:, None] + np.round(t_rel * fs).astype(int)[None]
    valid = (index >= 0) & (index < num_samples)
    values = (weights[:, None, None] * template[None])[valid]  # [n, 3]
    flat = index[valid]
    vcg = np.stack([np.bincount(flat, values[:, c], minlength=num_samples) for c in range(3)], axis=1)

    t = np.arange(num_samples) / fs
    if patient["fib_amplitude"] > 0:  # fibrillatory waves: a few drifting 4-9 Hz components
        freqs = rng.uniform(4.0, 9.0, 3)
        f_wave = np.sin(2 * np.pi * freqs[None] * t[:, None] + rng.uniform(0, 2 * np.pi, 3)).sum(1)
        vcg += (patient["fib_amplitude"] / np.sqrt(1.5)) * f_wave[:, None] * _ATRIAL_DIRECTION[None]

    gain = patient["gain"] * rng.lognormal(0.0, 0.05)
    eight = gain * (vcg @ DOWER_8.T)
    # Noise on the independent leads, so limb-lead identities survive it.
    eight += rng.normal(0.0, patient["noise_std"] * rng.lognormal(0.0, 0.3), eight.shape)
    wander_f = rng.uniform(0.05, 0.4, 2)
    wander = np.sin(2 * np.pi * wander_f[None] * t[:, None] + rng.uniform(0, 2 * np.pi, 2))  # [time, 2]
    eight += wander @ rng.normal(0.0, patient["wander_amplitude"], (2, 8))
    if rng.random() < 0.2:
        mains = np.sin(2 * np.pi * patient["mains_hz"] * t + rng.uniform(0, 2 * np.pi))
        eight += mains[:, None] * rng.uniform(0.005, 0.04, 8)[None]
    return twelve_from_independent(eight), float(heart_rate)


def patient_id(patient_index: int) -> str:
    return f"syn{patient_index:05d}"


def generate_patient_records(patient_index: int, records_per_patient: int = 4, fs: float = 250.0,
                             duration_s: float = 10.0, seed: int = 0) -> list[ECGRecord]:
    """All records of one synthetic patient.

    Deterministic in (seed, patient_index) and independent of the other patients, so a cohort
    can be generated in pieces or in parallel and still be identical.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, patient_index]))
    patient = _sample_patient(rng)
    conditions = [c for c in CONDITIONS if patient["has"][c]]
    labels = {c: int(patient["has"][c]) for c in CONDITIONS}
    pid = patient_id(patient_index)
    records = []
    for k in range(records_per_patient):
        signal, heart_rate = _render_record(rng, patient, fs, duration_s)
        record_id = f"{pid}_{k:02d}"
        records.append(ECGRecord(
            signal=signal, fs=float(fs), lead_names=CANONICAL_LEADS, record_id=record_id, patient_id=pid,
            source="synthetic", path=f"synthetic:seed={seed}/{record_id}",
            metadata=dict(conditions=conditions or ["normal"], normal=int(not conditions), **labels,
                          age=patient["age"], sex=patient["sex"], heart_rate=round(heart_rate, 1)),
        ))
    return records


def generate_cohort(num_patients: int = DEFAULT_NUM_PATIENTS, records_per_patient: int = 4, fs: float = 250.0,
                    duration_s: float = 10.0, seed: int = 0) -> list[ECGRecord]:
    """A synthetic cohort: num_patients * records_per_patient records of [duration_s * fs, 12] mV.

    Metadata per record: 'conditions' (list, ['normal'] when none), one 0/1 int per name in
    CONDITIONS plus 'normal', 'age' (int), 'sex' ('M'/'F'), 'heart_rate' (bpm).
    """
    return [record for index in range(num_patients)
            for record in generate_patient_records(index, records_per_patient, fs, duration_s, seed)]
