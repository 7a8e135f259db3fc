"""Weighted sums of named loss parts (003 eq. 3) with every part kept for logging.

003 eq. 3: L_HYBRID = L_RECON + L_CONT_Patient + L_CONT_Sample (all weights 1). CL is the
patient + sample sum and GL the reconstruction term alone (Appendix C tables 1-3 log exactly
these columns: total, patient, sample, reconstruction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

# The parts of ecgjax.objectives; a pretraining method passes its own `terms` instead.
LOSS_PARTS = ("patient", "sample", "reconstruction", "cpc", "interlead", "intersegment")


def hybrid_loss(
    parts: Mapping[str, jax.Array], weights: Mapping[str, float] | None = None,
    names: Sequence[str] = LOSS_PARTS,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """total = sum_name weights.get(name, 1) * parts[name].

    Args:
      parts: scalar losses keyed by names from `names` (any subset).
      weights: optional per-part weights; missing names weigh 1 (003 eq. 3).
      names: the part names allowed (a misspelled part is an error, not a silent extra term).
    Returns (total, parts) with parts as unweighted float32 scalars, for logging.
    """
    weights = dict(weights or {})
    unknown = (set(parts) | set(weights)) - set(names)
    if unknown:
        raise ValueError(f"unknown loss parts {sorted(unknown)}; expected names from {tuple(names)}")
    if not parts:
        raise ValueError("no loss parts given")
    parts = {name: jnp.asarray(value, jnp.float32) for name, value in parts.items()}
    total = sum(weights.get(name, 1.0) * value for name, value in parts.items())
    return total, parts

