"""Lead-field matrices linking the 12-lead ECG and the 3-D vectorcardiogram (VCG, Frank X, Y, Z).

Only 8 of the 12 leads are independent (I, II, V1..V6); III, aVR, aVL and aVF are fixed linear
combinations of I and II (Einthoven / Goldberger). The published matrices act on those 8 leads;
here they are lifted to act on the canonical 12-lead order of `ecgjax.data.leads.CANONICAL_LEADS`,
so `twelve = vcg @ DOWER_12.T` and `vcg = twelve @ INVERSE_DOWER_12.T` (or KORS_12).

Sources: Dower et al. 1980 (Dower matrix); Edenbrandt & Pahlm 1988 (inverse Dower, the
pseudo-inverse of Dower); Kors et al. 1990 (regression matrix, closer to a measured Frank VCG).
"""
from __future__ import annotations

import numpy as np

from ecgjax.data.leads import CANONICAL_LEADS

INDEPENDENT_LEADS: tuple[str, ...] = ("V1", "V2", "V3", "V4", "V5", "V6", "I", "II")

# [8 independent leads, 3 (X, Y, Z)]: VCG -> leads.
DOWER_8 = np.array([
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
], np.float64)

# [3, 8 independent leads]: leads -> VCG.
INVERSE_DOWER_8 = np.array([
    [-0.172, -0.074, 0.122, 0.231, 0.239, 0.194, 0.156, -0.010],
    [0.057, -0.019, -0.106, -0.022, 0.041, 0.048, -0.227, 0.887],
    [-0.229, -0.310, -0.246, -0.063, 0.055, 0.108, 0.022, 0.102],
], np.float64)

KORS_8 = np.array([
    [-0.13, 0.05, -0.01, 0.14, 0.06, 0.54, 0.38, -0.07],
    [0.06, -0.02, -0.05, 0.06, -0.17, 0.13, -0.07, 0.93],
    [-0.43, -0.06, -0.14, -0.20, -0.11, 0.31, 0.11, -0.23],
], np.float64)


def _expansion_matrix() -> np.ndarray:
    """[8, 12]: maps the independent leads (INDEPENDENT_LEADS order) onto all 12 canonical leads."""
    expand = np.zeros((len(INDEPENDENT_LEADS), len(CANONICAL_LEADS)), np.float64)
    col = {name: i for i, name in enumerate(INDEPENDENT_LEADS)}
    for name in INDEPENDENT_LEADS:
        expand[col[name], CANONICAL_LEADS.index(name)] = 1.0
    i, ii = col["I"], col["II"]
    derived = {  # Einthoven's law and Goldberger's augmented leads.
        "III": {ii: 1.0, i: -1.0},
        "aVR": {i: -0.5, ii: -0.5},
        "aVL": {i: 1.0, ii: -0.5},
        "aVF": {ii: 1.0, i: -0.5},
    }
    for name, weights in derived.items():
        for row, weight in weights.items():
            expand[row, CANONICAL_LEADS.index(name)] = weight
    return expand


# [8, 12] independent leads -> canonical 12 leads (exact limb-lead derivation).
EXPAND_TO_12 = _expansion_matrix()
# [8, 12] selects the independent leads out of the canonical order (the pseudo-inverse ignores derived leads).
_SELECT_INDEPENDENT = np.zeros((len(CANONICAL_LEADS), len(INDEPENDENT_LEADS)), np.float64)
for _col, _name in enumerate(INDEPENDENT_LEADS):
    _SELECT_INDEPENDENT[CANONICAL_LEADS.index(_name), _col] = 1.0

# [12, 3]: VCG -> canonical 12 leads.
DOWER_12 = (DOWER_8.T @ EXPAND_TO_12).T
# [3, 12]: canonical 12 leads -> VCG (derived limb leads get zero weight).
INVERSE_DOWER_12 = INVERSE_DOWER_8 @ _SELECT_INDEPENDENT.T
KORS_12 = KORS_8 @ _SELECT_INDEPENDENT.T

_TO_VCG = {"inverse_dower": INVERSE_DOWER_12, "kors": KORS_12}


def to_vcg_matrix(method: str = "inverse_dower") -> np.ndarray:
    """[3, 12] matrix taking canonical 12 leads to (X, Y, Z); method 'inverse_dower' or 'kors'."""
    try:
        return _TO_VCG[method]
    except KeyError:
        raise ValueError(f"unknown VCG method {method!r} (expected one of {sorted(_TO_VCG)})") from None


def twelve_from_independent(eight: np.ndarray) -> np.ndarray:
    """[time, 8] (INDEPENDENT_LEADS order) -> [time, 12] canonical, limb leads derived exactly."""
    return (eight @ EXPAND_TO_12).astype(np.float32)


def twelve_from_vcg(vcg: np.ndarray) -> np.ndarray:
    """[time, 3] VCG -> [time, 12] canonical leads via the Dower matrix."""
    return (vcg @ DOWER_12.T).astype(np.float32)


def vcg_from_twelve(x: np.ndarray, method: str = "inverse_dower") -> np.ndarray:
    """[time, 12] canonical leads -> [time, 3] VCG."""
    return (x @ to_vcg_matrix(method).T).astype(np.float32)


def rotation_matrix(angles_rad, xp=np):
    """[3, 3] rotation about X, then Y, then Z by the three given angles (radians).

    xp: the array module, numpy (host) or jax.numpy (traced inside the training step).
    """
    ax, ay, az = angles_rad[0], angles_rad[1], angles_rad[2]
    cx, sx, cy, sy, cz, sz = xp.cos(ax), xp.sin(ax), xp.cos(ay), xp.sin(ay), xp.cos(az), xp.sin(az)
    zero, one = xp.zeros_like(cx), xp.ones_like(cx)
    rx = xp.stack([xp.stack([one, zero, zero]), xp.stack([zero, cx, -sx]), xp.stack([zero, sx, cx])])
    ry = xp.stack([xp.stack([cy, zero, sy]), xp.stack([zero, one, zero]), xp.stack([-sy, zero, cy])])
    rz = xp.stack([xp.stack([cz, -sz, zero]), xp.stack([sz, cz, zero]), xp.stack([zero, zero, one])])
    return rz @ ry @ rx
