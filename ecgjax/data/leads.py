"""Lead names: the canonical 12-lead order and mapping of any lead set onto it."""
from __future__ import annotations

import numpy as np

from ecgjax.data.errors import ECGInputError

CANONICAL_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS = CANONICAL_LEADS[:6]
PRECORDIAL_LEADS = CANONICAL_LEADS[6:]

# Spellings found in real corpora (PTB-XL uses upper-case AVR; MIT-BIH calls its modified
# limb lead II "MLII"; some exporters write "D1"/"D2"/"D3").
_ALIASES = {
    "MLII": "II", "MLI": "I", "MLIII": "III",
    "D1": "I", "D2": "II", "D3": "III",
    "LEADI": "I", "LEADII": "II", "LEADIII": "III",
}
_BY_UPPER = {name.upper(): name for name in CANONICAL_LEADS}


def canonical_lead_name(name: str, source: str = "<unknown>") -> str:
    """Maps a lead name as written in a file to its canonical spelling.

    Raises ECGInputError naming `source` for names that are not one of the 12 standard leads.
    """
    key = name.strip().upper().replace(" ", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key in _BY_UPPER:
        return _BY_UPPER[key]
    raise ECGInputError(source, f"unknown lead name {name!r} (expected one of {', '.join(CANONICAL_LEADS)})")


def to_canonical(signal: np.ndarray, lead_names, source: str = "<unknown>"):
    """Places leads in canonical 12-lead order, zero-filling absent leads.

    Args:
      signal: [time, leads] samples, one column per name in `lead_names`.
      lead_names: the names of the columns of `signal`.
    Returns:
      (signal [time, 12] float32, mask [12] bool), mask True where the lead is present.
    """
    signal = np.asarray(signal)
    if signal.ndim != 2 or signal.shape[1] != len(lead_names):
        raise ECGInputError(source, f"signal shape {signal.shape} does not match {len(lead_names)} lead names")
    out = np.zeros((signal.shape[0], len(CANONICAL_LEADS)), np.float32)
    mask = np.zeros(len(CANONICAL_LEADS), bool)
    for column, name in enumerate(lead_names):
        index = CANONICAL_LEADS.index(canonical_lead_name(name, source))
        if mask[index]:
            raise ECGInputError(source, f"lead {name!r} appears twice")
        out[:, index] = signal[:, column]
        mask[index] = True
    return out, mask
